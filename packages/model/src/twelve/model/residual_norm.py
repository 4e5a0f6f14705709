"""LayerNorm(residual + dropout(x)), the post-LN sublayer output, fused for CPU training.

Every ViLBERT sublayer ends this way. Eagerly it is four passes over the activations forward
(the dropout mask as floats, its scaling, the masked sum, the norm) and two backward (the
norm's gradient, the mask), each writing a fresh tensor. The C kernel `kernels/residual_norm.c`
does each direction in one pass per row while the row is in cache, draws the row's dropout
lanes itself (forward, and again backward, from the mask's seed: `kernels/dropout_lanes.h`)
instead of reading a float mask, saves only the sum and the row statistics for
backward, and writes into storage kept from step to step (`ResidualNormMemory`, the
`reused_memory` rule: only when nothing else refers to it). On a 12in1-base vision sublayer
forward + backward takes ~2 ms instead of ~3.9 ms. In float32 training `residual_output` also
hands the kernel the bias of the projection that made x: the kernel adds it and sums its
gradient in the same passes, so the projection runs as a plain GEMM (no bias copied into its
output, no separate pass for the bias gradient).

Numerics: the masks are `twelve.model.dropout`'s (the same draws as the eager path for the same
seed); the sum is exactly the eager one; mean and variance are two-pass float32 sums over a row,
so the output differs from `nn.LayerNorm`'s by float rounding (~1e-6). A bfloat16 `x` (the
projection under CPU autocast) is widened exactly and its gradient rounded to bfloat16 as
autocast's cast back would. Under autocast the vision stream is itself bf16 (its embedding norm
sees bf16 input): then the sum, the output and their gradients are bf16, rounded where the eager
bf16 ops round them, and the weight and bias gradients are float32 sums (ATen's eager bf16
LayerNorm backward rounds those at bf16 resolution). The weight and bias gradients are summed
per thread, then across threads, so a fixed thread count gives the same bits run to run.
Backward is once-differentiable. Used for CPU training (gradients on, eager) when `cpu_kernels`
can build the kernel; everywhere else, and with `TWELVE_CPU_KERNELS=0`, the eager ops run.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from twelve.model import cpu_kernels
from twelve.model.dropout import draw_seed, dropout_add, lane_rule
from twelve.model.reused_memory import Linear, ResidualHandoff, ReusedStorage, linear

_KERNEL = "residual_norm"
_TYPE_PAIRS = {
    (torch.float32, torch.float32),  # float32 training
    (torch.bfloat16, torch.float32),  # autocast: a bf16 projection onto a float32 stream
    (torch.bfloat16, torch.bfloat16),  # autocast: a bf16 stream (after a norm of bf16 input)
}


@dataclass
class ResidualNormMemory:
    """What one fused norm keeps between steps (`reused_memory.ReusedStorage`): the storage
    of its sum, its output and both input gradients."""

    total: ReusedStorage = field(default_factory=ReusedStorage)
    output: ReusedStorage = field(default_factory=ReusedStorage)
    total_grad: ReusedStorage = field(default_factory=ReusedStorage)
    x_grad: ReusedStorage = field(default_factory=ReusedStorage)

    def training_storages(self) -> tuple[ReusedStorage, ...]:
        """The storages the kernel writes."""
        return (self.total, self.output, self.total_grad, self.x_grad)


def residual_layer_norm(
    x: Tensor,
    residual: Tensor,
    norm: nn.LayerNorm,
    p: float,
    training: bool,
    memory: ResidualNormMemory | None = None,
    x_bias: Tensor | None = None,
) -> Tensor:
    """`norm(residual + dropout(x + x_bias, p))` (dropout only when `training`; no `x_bias`:
    none); the fused kernel writes into `memory` when given."""
    library = _library_for(x, residual, norm, x_bias)
    if library is None:
        projected = x if x_bias is None else x + x_bias
        return norm(dropout_add(projected, residual, p, training))
    return _fused(x, x_bias, residual, norm, p, training, memory, library, None)


def _fused(
    x: Tensor,
    x_bias: Tensor | None,
    residual: Tensor,
    norm: nn.LayerNorm,
    p: float,
    training: bool,
    memory: ResidualNormMemory | None,
    library: ctypes.CDLL,
    handoff: ResidualHandoff | None,
) -> Tensor:
    """`residual_layer_norm` by the kernel (the caller checked that it serves the call),
    leaving the residual's gradient in `handoff` when the linear layer that named it there
    reads this very `residual` (float32)."""
    if handoff is not None:
        takes_part = handoff.source is residual and residual.dtype == torch.float32
        handoff.source = None
        if not takes_part:
            handoff = None
    return _ResidualNorm.apply(
        x,
        x_bias,
        residual,
        norm.weight,
        norm.bias,
        p if training else 0.0,
        norm.eps,
        library,
        ResidualNormMemory() if memory is None else memory,
        handoff,
    )


def residual_output(
    hidden: Tensor,
    dense: Linear,
    residual: Tensor,
    norm: nn.LayerNorm,
    p: float,
    training: bool,
    memory: ResidualNormMemory | None = None,
    handoff: ResidualHandoff | None = None,
) -> Tensor:
    """`norm(residual + dropout(dense(hidden), p))`. In float32 training with the fused kernel,
    the kernel adds the dense layer's bias and sums its gradient, so the GEMM neither copies
    the bias into its output nor backward reads the gradient once more for it; and with the
    `handoff` the linear layer reading `residual` got, the residual's gradient goes to that
    layer's input-gradient GEMM (`ResidualHandoff`)."""
    bias = dense.bias
    library = (
        _library()
        if bias is not None
        and hidden.dtype == torch.float32
        and not torch.is_autocast_enabled(hidden.device.type)
        and _kernel_serves(
            torch.float32,
            (*hidden.shape[:-1], dense.out_features),
            (hidden, dense.weight),
            residual,
            norm,
            bias,
        )
        else None
    )
    if library is not None:
        projected = linear(hidden, dense.weight, None, dense.memory)
        return _fused(projected, bias, residual, norm, p, training, memory, library, handoff)
    return residual_layer_norm(dense(hidden), residual, norm, p, training, memory)


def fused_applies(
    x: Tensor, residual: Tensor, norm: nn.LayerNorm, x_bias: Tensor | None = None
) -> bool:
    """Whether the C kernel serves this call (CPU training in float32 or bf16 autocast,
    eager; an `x_bias` in float32 only) — given that it builds."""
    return _kernel_serves(x.dtype, x.shape, (x,), residual, norm, x_bias)


def _kernel_serves(
    x_dtype: torch.dtype,
    x_shape: Sequence[int],
    x_sources: tuple[Tensor, ...],
    residual: Tensor,
    norm: nn.LayerNorm,
    x_bias: Tensor | None,
) -> bool:
    """`fused_applies` for an x of `x_dtype` and `x_shape` computed from `x_sources`."""
    weight, bias = norm.weight, norm.bias
    if weight is None or bias is None:
        return False
    tensors = (*x_sources, residual, weight, bias) + (() if x_bias is None else (x_bias,))
    return (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and any(t.requires_grad for t in tensors)
        and all(t.device.type == "cpu" for t in tensors)
        and (x_dtype, residual.dtype) in _TYPE_PAIRS
        and weight.dtype == bias.dtype == torch.float32
        and tuple(x_shape) == tuple(residual.shape)
        and tuple(norm.normalized_shape) == (x_shape[-1],)
        and (
            x_bias is None
            or (x_dtype == x_bias.dtype == torch.float32 and x_bias.shape == (x_shape[-1],))
        )
    )


def _library_for(
    x: Tensor, residual: Tensor, norm: nn.LayerNorm, x_bias: Tensor | None
) -> ctypes.CDLL | None:
    if not fused_applies(x, residual, norm, x_bias):
        return None
    return _library()


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The kernel library with its function signatures, or None (see `cpu_kernels.load`)."""
    library = cpu_kernels.load(_KERNEL)
    if library is None:
        return None
    pointer, i32, i64, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    u64 = ctypes.c_uint64
    forward = library.twelve_residual_norm_forward
    forward.argtypes = [pointer, pointer, i32, pointer, i32, i32, u64, i32, f32, pointer, pointer]
    forward.argtypes += [f32]
    forward.argtypes += [i64, i64, i32, pointer, pointer, pointer, pointer]
    forward.restype = ctypes.c_int
    backward = library.twelve_residual_norm_backward
    backward.argtypes = [pointer, pointer, i32, pointer, pointer, pointer, i32, u64, i32, f32]
    backward.argtypes += [i64, i64, i32, i32, pointer, pointer, pointer, pointer, pointer]
    backward.restype = ctypes.c_int
    return library


def _checked(status: int, direction: str) -> None:
    if status != 0:
        raise RuntimeError(f"the residual-norm kernel has no {direction} for this type pair")


class _ResidualNorm(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        x_bias: Tensor | None,
        residual: Tensor,
        weight: Tensor,
        bias: Tensor,
        p: float,
        eps: float,
        library: ctypes.CDLL,
        memory: ResidualNormMemory,
        handoff: ResidualHandoff | None,
    ) -> Tensor:
        ctx.handoff = handoff
        x, residual = x.contiguous(), residual.contiguous()
        weight, bias = weight.contiguous(), bias.contiguous()
        stream = residual.dtype  # the sum, the output and their gradients
        cols = x.shape[-1]
        rows = x.numel() // cols if cols else 0
        x_bias = torch.zeros(cols) if x_bias is None else x_bias.contiguous()
        seed = draw_seed() if p > 0.0 else 0
        keep_from, scale = lane_rule(p) if p > 0.0 else (0, 1.0)
        if stream == torch.bfloat16:  # the eager path's keep-scale tensor is bf16 then
            scale = float(torch.tensor(scale, dtype=torch.bfloat16))
        total = memory.total.take(x.shape, residual, stream)
        out = memory.output.take(x.shape, residual, stream)
        mean = torch.empty(rows, dtype=torch.float32)
        rstd = torch.empty(rows, dtype=torch.float32)
        threads = torch.get_num_threads()
        if rows:
            status = library.twelve_residual_norm_forward(
                x.data_ptr(),
                x_bias.data_ptr(),
                int(x.dtype == torch.bfloat16),
                residual.data_ptr(),
                int(stream == torch.bfloat16),
                int(p > 0.0),
                seed,
                keep_from,
                scale,
                weight.data_ptr(),
                bias.data_ptr(),
                eps,
                rows,
                cols,
                threads,
                total.data_ptr(),
                out.data_ptr(),
                mean.data_ptr(),
                rstd.data_ptr(),
            )
            _checked(status, "forward")
        ctx.save_for_backward(total, mean, rstd, weight)
        ctx.rule = (p > 0.0, seed, keep_from, scale)
        ctx.x_dtype = x.dtype
        ctx.library = library
        ctx.memory = memory
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        total, mean, rstd, weight = ctx.saved_tensors
        dropout, seed, keep_from, scale = ctx.rule
        grad = grad.contiguous().to(total.dtype)
        cols = total.shape[-1]
        rows = mean.numel()
        threads = torch.get_num_threads()
        memory: ResidualNormMemory = ctx.memory
        grad_total = memory.total_grad.take(total.shape, total)
        grad_x = memory.x_grad.take(total.shape, total, ctx.x_dtype)
        # Per-thread partial sums of the weight, bias and x_bias gradients.
        partials = torch.zeros(3, threads, cols, dtype=torch.float32)
        if rows:
            status = ctx.library.twelve_residual_norm_backward(
                grad.data_ptr(),
                total.data_ptr(),
                int(total.dtype == torch.bfloat16),
                mean.data_ptr(),
                rstd.data_ptr(),
                weight.data_ptr(),
                int(dropout),
                seed,
                keep_from,
                scale,
                rows,
                cols,
                threads,
                int(ctx.x_dtype == torch.bfloat16),
                grad_total.data_ptr(),
                grad_x.data_ptr(),
                partials[0].data_ptr(),
                partials[1].data_ptr(),
                partials[2].data_ptr(),
            )
            _checked(status, "backward")
        needed = ctx.needs_input_grad
        grad_weight, grad_bias, grad_x_bias = partials.sum(1)
        grad_residual: Tensor | None = grad_total if needed[2] else None
        handoff: ResidualHandoff | None = ctx.handoff
        if handoff is not None and grad_residual is not None:
            # The linear layer reading the same residual runs its backward after this one
            # (its output feeds x) and adds its input gradient to this: nothing to sum here.
            handoff.pending, grad_residual = grad_residual, None
        return (
            grad_x if needed[0] else None,
            grad_x_bias if needed[1] else None,
            grad_residual,
            grad_weight if needed[3] else None,
            grad_bias if needed[4] else None,
            None,
            None,
            None,
            None,
            None,
        )
