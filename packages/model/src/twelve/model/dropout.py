"""Dropout with a cheap CPU mask, and dropout fused with the residual addition.

`torch.nn.functional.dropout` on the CPU draws its mask with `bernoulli_`, about 7 ns per
element and single-threaded: at 12-in-1's sizes that is ~10 % of a training step. Here the
mask comes from 64-bit random integers split into four 16-bit lanes (`randint`, ~1.4 ns per
element); an element is kept when its lane is at least round(p·65536), so the drop probability
is p quantised to 1/65536 (0.1 → 0.1000061) and kept values are scaled by 1/(1 − p_q) — an
unbiased dropout. The default CPU generator draws the bits, so `torch.manual_seed` makes runs
reproducible. On other devices and inside `torch.compile` (whose fused kernels draw their own
random numbers) the functions use torch's dropout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

_LANES = 65536


def _use_fast_path(x: Tensor) -> bool:
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def keep_scale(like: Tensor, p: float) -> Tensor:
    """A (like-shaped, like-dtype) tensor holding 1/(1 − p_q) where kept and 0 where dropped."""
    threshold = round(p * _LANES)
    count = like.numel()
    words = torch.randint(
        -(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=like.device
    )
    lanes = words.view(torch.int16)[:count].view(like.shape)
    kept = lanes >= threshold - _LANES // 2
    scale = torch.tensor(_LANES / (_LANES - threshold), dtype=like.dtype, device=like.device)
    return torch.mul(kept, scale)


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
