"""Typed tensor containers going into and coming out of the model (frozen dataclasses).

Field names are the cross-package contract (contracts.md): the datasets package builds batches
with the same names, so the trainer can pass `ViLBERTInputs(**fields)`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class ViLBERTInputs:
    """One batch of (text, image) rows; retrieval and NLVR2 arrive flattened (4B / 2B rows)."""

    input_ids: Tensor
    """(B, T) int64: [CLS] … [SEP] then 0-padding, without the task token."""
    token_type_ids: Tensor
    """(B, T) int64 segment ids (zeros in 12-in-1)."""
    text_mask: Tensor
    """(B, T) int64: 1 = real token, 0 = padding."""
    region_features: Tensor
    """(B, R, D) float: row 0 is the global image token (mean of the regions)."""
    region_locations: Tensor
    """(B, R, 5) float: [x1/W, y1/H, x2/W, y2/H, area/(W·H)]; global row [0, 0, 1, 1, 1]."""
    region_mask: Tensor
    """(B, R) int64: 1 = real region, 0 = padding."""

    def __post_init__(self) -> None:
        batch, length = _shape(self.input_ids, "input_ids", 2)
        for name in ("token_type_ids", "text_mask"):
            if tuple(getattr(self, name).shape) != (batch, length):
                raise ValueError(
                    f"ViLBERTInputs.{name} has shape {tuple(getattr(self, name).shape)}; "
                    f"expected {(batch, length)} like input_ids"
                )
        rows, regions, _ = _shape(self.region_features, "region_features", 3)
        if rows != batch:
            raise ValueError(
                f"ViLBERTInputs.region_features has {rows} rows but input_ids has {batch}"
            )
        if tuple(self.region_locations.shape) != (batch, regions, 5):
            raise ValueError(
                f"ViLBERTInputs.region_locations has shape {tuple(self.region_locations.shape)}; "
                f"expected {(batch, regions, 5)}"
            )
        if tuple(self.region_mask.shape) != (batch, regions):
            raise ValueError(
                f"ViLBERTInputs.region_mask has shape {tuple(self.region_mask.shape)}; "
                f"expected {(batch, regions)}"
            )

    @property
    def batch_size(self) -> int:
        """Number of rows (flattened pairs count one row each)."""
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> ViLBERTInputs:
        """Move every tensor to `device`."""
        return ViLBERTInputs(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )


def _shape(tensor: Tensor, name: str, dims: int) -> tuple[int, ...]:
    if tensor.dim() != dims:
        raise ValueError(
            f"ViLBERTInputs.{name} must have {dims} dimensions, got shape {tuple(tensor.shape)}"
        )
    return tuple(tensor.shape)


@dataclass(frozen=True)
class AttentionMaps:
    """Attention probabilities per layer, returned only when asked for (eager attention)."""

    text: tuple[Tensor, ...]
    """(B, heads, T+1, T+1) per text layer, in execution order."""
    vision: tuple[Tensor, ...]
    """(B, heads, R, R) per visual layer, in execution order."""
    text_to_vision: tuple[Tensor, ...]
    """(B, heads, T+1, R) per co-attention block: text queries over regions."""
    vision_to_text: tuple[Tensor, ...]
    """(B, heads, R, T+1) per co-attention block: region queries over text."""


@dataclass(frozen=True)
class EncoderOutput:
    """Final states of both streams (None where a caller did not need that stream)."""

    text_states: Tensor | None
    """(B, T+1, text hidden) with the task token at position 1 (T without task tokens)."""
    vision_states: Tensor | None
    """(B, R, vision hidden)."""
    attentions: AttentionMaps | None


@dataclass(frozen=True)
class TaskOutput:
    """What `MultiTaskViLBERT.forward` returns for one task."""

    task: str
    logits: Tensor
    """answer (B, A); alignment (B,); region (B, R) with −10000 added on padding; pair
    (B/2, C); classifier (B, C)."""
    pooled: Tensor | None = None
    """(B, pooled) fused pooled vector before dropout, when requested."""
    text_states: Tensor | None = None
    vision_states: Tensor | None = None
    attentions: AttentionMaps | None = None


@dataclass(frozen=True)
class PretrainingOutput:
    """Outputs of the pretraining heads (`cls.*`): masked-LM, region classes, alignment."""

    masked_lm_logits: Tensor
    """(B, T', vocab)."""
    image_logits: Tensor
    """(B, R, image_target_size)."""
    alignment_logits: Tensor
    """(B, 2): the image-text alignment (next-sentence style) prediction."""
