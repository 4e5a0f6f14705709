"""Image preprocessing as the original extractor did it: channel order, one scale, bilinear resize.

The short side is scaled to `short_side` unless the long side would then exceed `max_size`
(then the long side is scaled to `max_size`); the image is resized bilinearly without
antialiasing (like OpenCV's INTER_LINEAR). Mean subtraction and padding happen in the
detector, which owns its pixel statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

ChannelOrder = Literal["BGR", "RGB"]


@dataclass(frozen=True)
class ResizedImage:
    """A float (3, h, w) image in the detector's channel order and the factor it was scaled by."""

    pixels: torch.Tensor
    scale: float


def resize_scale(height: int, width: int, short_side: int, max_size: int) -> float:
    """The single factor applied to both sides (the original rule, rounding included)."""
    if short_side <= 0 or max_size <= 0:
        raise ValueError(f"short_side ({short_side}) and max_size ({max_size}) must be positive")
    short, long = min(height, width), max(height, width)
    scale = short_side / short
    if round(scale * long) > max_size:
        scale = max_size / long
    return scale


def prepare_image(
    rgb: np.ndarray,
    *,
    short_side: int,
    max_size: int,
    channel_order: ChannelOrder = "BGR",
    device: torch.device | str = "cpu",
) -> ResizedImage:
    """Turn an RGB uint8 (H, W, 3) array into the detector's float (3, h, w) input, 0..255."""
    height, width = rgb.shape[:2]
    scale = resize_scale(height, width, short_side, max_size)
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)
    if channel_order == "BGR":
        pixels = pixels.flip(0)
    pixels = pixels.float()
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size != (height, width):
        pixels = F.interpolate(
            pixels[None], size=size, mode="bilinear", align_corners=False, antialias=False
        )[0]
    return ResizedImage(pixels=pixels.contiguous(), scale=scale)
