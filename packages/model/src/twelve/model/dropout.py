"""Dropout with a cheap CPU mask, and dropout fused with the residual addition.

`torch.nn.functional.dropout` on the CPU draws its mask with `bernoulli_`, about 7 ns per
element and single-threaded: at 12-in-1's sizes that is ~10 % of a training step. Here an
element is kept when a uniform 16-bit lane is at least round(p·65536), so the drop probability
is p quantised to 1/65536 (0.1 → 0.1000061) and kept values are scaled by 1/(1 − p_q) — an
unbiased dropout. The lanes are 64-bit words of numpy's SFC64 generator split in four (~0.6 ns
per element; torch's own CPU generator, a serial Mersenne Twister, takes ~1.4 ns even drawing
whole 64-bit words), seeded by one draw from torch's default CPU generator per mask, so
`torch.manual_seed` makes runs reproducible. The 0/1 mask is written straight into a float
tensor and scaled in place: a mask as `bool` times a float scalar costs several times more.
On other devices and inside `torch.compile` (whose fused kernels draw their own random
numbers) the functions use torch's dropout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

_LANES = 65536


def _use_fast_path(x: Tensor) -> bool:
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def random_lanes(count: int) -> Tensor:
    """`count` uniform int16 values (CPU): SFC64 words seeded by torch's default generator."""
    seed = int(torch.randint(2**63 - 1, (), dtype=torch.int64))
    if count == 0:
        return torch.empty(0, dtype=torch.int16)
    words = np.random.SFC64(seed).random_raw((count + 3) // 4)
    return torch.from_numpy(words).view(torch.int16)[:count]


def lane_rule(p: float) -> tuple[int, float]:
    """(keep_from, scale) for drop probability `p`: an element is kept when its lane is at
    least `keep_from`, and then multiplied by `scale` = 1/(1 − p_q)."""
    threshold = round(p * _LANES)
    return threshold - _LANES // 2, _LANES / (_LANES - threshold)


def keep_scale(like: Tensor, p: float, out: Tensor | None = None) -> Tensor:
    """A (like-shaped, like-dtype) CPU tensor: 1/(1 − p_q) where kept, 0 where dropped
    (written into `out` when given)."""
    keep_from, factor = lane_rule(p)
    lanes = random_lanes(like.numel()).view(like.shape)
    scale = torch.empty(like.shape, dtype=like.dtype) if out is None else out
    torch.ge(lanes, keep_from, out=scale)
    return scale.mul_(factor)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class _MaskedScaleAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, residual: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        ctx.residual_dtype = residual.dtype
        return torch.addcmul(residual, x, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, grad.to(ctx.residual_dtype), None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout (identity when not training or p = 0)."""
    if not training or p == 0.0:
        return x
    if not _use_fast_path(x):
        return F.dropout(x, p, True)
    return _MaskedScale.apply(x, keep_scale(x, p))


def dropout_add(x: Tensor, residual: Tensor, p: float, training: bool) -> Tensor:
    """`residual + dropout(x)` in one pass over the data on the CPU."""
    if not training or p == 0.0:
        return x + residual
    if not _use_fast_path(x):
        return F.dropout(x, p, True) + residual
    if x.dtype != residual.dtype:  # autocast: bf16 projection onto an fp32 residual stream
        dtype = torch.promote_types(x.dtype, residual.dtype)
        x, residual = x.to(dtype), residual.to(dtype)
    return _MaskedScaleAdd.apply(x, residual, keep_scale(x, p))


class Dropout(nn.Module):
    """`nn.Dropout` with the cheap CPU mask of this module."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Drop and rescale in training, identity in evaluation."""
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
