"""Dropout with a cheap CPU mask, and dropout fused with the residual addition.

`torch.nn.functional.dropout` on the CPU draws its mask with `bernoulli_`, about 7 ns per
element and single-threaded: at 12-in-1's sizes that is ~10 % of a training step. Here an
element is kept when a uniform 16-bit lane is at least round(p·65536), so the drop probability
is p quantised to 1/65536 (0.1 → 0.1000061) and kept values are scaled by 1/(1 − p_q) — an
unbiased dropout. The lanes are 64-bit words of a counter-based SplitMix64 split in four (word
k is SplitMix64's output function of seed + (k + 1)·γ, `kernels/dropout_lanes.h`): any word can
be computed on its own, so the C kernels draw a mask on every thread (~0.2 ns per element for
a float keep-scale mask on two cores) and the fused residual norm draws its lanes row by row
where it uses them, never storing them. Without the kernels numpy computes the same words
(~1.4 ns per lane, ~2 ns per element of a keep-scale mask; `bernoulli_` takes ~8). One draw
from torch's default CPU generator seeds each mask, so `torch.manual_seed` makes runs
reproducible. The 0/1 mask is written straight into a float tensor and scaled: a mask as
`bool` times a float scalar costs several times more. On other devices and inside
`torch.compile` (whose fused kernels draw their own random numbers) the functions use torch's
dropout.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model import cpu_kernels

_LANES = 65536
# SplitMix64's increment and mixing multipliers (kernels/dropout_lanes.h).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _use_fast_path(x: Tensor) -> bool:
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def draw_seed() -> int:
    """A mask's seed: one draw from torch's default CPU generator."""
    return int(torch.randint(2**63 - 1, (), dtype=torch.int64))


def lane_words(seed: int, count: int) -> Tensor:
    """The first `count` words (int64 bits) of the mask seeded `seed`."""
    library = _library()
    if count == 0:
        return torch.empty(0, dtype=torch.int64)
    if library is not None:
        words = torch.empty(count, dtype=torch.int64)
        library.twelve_dropout_words(seed, words.data_ptr(), count, torch.get_num_threads())
        return words
    with np.errstate(over="ignore"):
        z = np.arange(1, count + 1, dtype=np.uint64) * _GAMMA + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return torch.from_numpy(z.view(np.int64))


def random_lanes(count: int, seed: int | None = None) -> Tensor:
    """`count` uniform int16 lanes (CPU) of the mask seeded `seed` (default: `draw_seed()`)."""
    seed = draw_seed() if seed is None else seed
    return lane_words(seed, (count + 3) // 4).view(torch.int16)[:count]


def lane_rule(p: float) -> tuple[int, float]:
    """(keep_from, scale) for drop probability `p`: an element is kept when its lane is at
    least `keep_from`, and then multiplied by `scale` = 1/(1 − p_q)."""
    threshold = round(p * _LANES)
    return threshold - _LANES // 2, _LANES / (_LANES - threshold)


def keep_scale(like: Tensor, p: float, out: Tensor | None = None) -> Tensor:
    """A (like-shaped, like-dtype) CPU tensor: 1/(1 − p_q) where kept, 0 where dropped
    (written into `out` when given)."""
    keep_from, factor = lane_rule(p)
    seed = draw_seed()
    scale = torch.empty(like.shape, dtype=like.dtype) if out is None else out
    library = _library()
    if library is not None and scale.dtype == torch.float32 and scale.is_contiguous():
        if scale.numel():
            library.twelve_keep_scale(
                seed, keep_from, factor, scale.data_ptr(), scale.numel(), torch.get_num_threads()
            )
        return scale
    torch.ge(random_lanes(like.numel(), seed).view(like.shape), keep_from, out=scale)
    return scale.mul_(factor)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The mask kernels with their signatures, or None (see `cpu_kernels.load`)."""
    library = cpu_kernels.load("dropout_lanes")
    if library is None:
        return None
    pointer, i32, i64, u64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64
    library.twelve_dropout_words.argtypes = [u64, pointer, i64, ctypes.c_int]
    library.twelve_dropout_words.restype = None
    library.twelve_keep_scale.argtypes = [u64, i32, ctypes.c_float, pointer, i64, ctypes.c_int]
    library.twelve_keep_scale.restype = None
    return library


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
