"""Linear and embedding layers whose weight gradients reuse their memory from step to step.

Eager PyTorch on the CPU allocates every weight gradient afresh each backward pass and, after
`zero_grad(set_to_none=True)`, gives it back to the C library, which returns large blocks to the
kernel: the next step writes ~1 GB of gradients for 12in1-base into freshly mapped pages, and the
kernel's page faults and zeroing make the weight-gradient GEMMs of the 200-row text stream run
at ~0.6 of the machine's matmul rate (0.85–0.95 into memory already mapped) and the dense
word-embedding gradient (94 MB) cost ~50 ms instead of ~6 ms.

Here each layer keeps its weight gradient's storage (`GradientBuffer`) and writes the next
gradient into it — but only when nothing else still refers to it (the parameter's `.grad` was
set to None, or never held it), so semantics are those of stock autograd: a gradient that is
still accumulating, or that a caller kept, is never overwritten; a fresh tensor is used then.
The gradient handed to autograd is a fresh view of that storage, which `AccumulateGrad` adopts
as `.grad` without a copy. Values are the same products as `torch.nn.functional.linear`'s and
`embedding`'s backward passes (up to float rounding order).

The path is taken for float32 training on the CPU outside autocast and `torch.compile` (whose
graphs and allocators manage memory themselves); everything else uses the stock functions. Its
backward is once-differentiable (no double backward through these layers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

_use_count = getattr(torch._C, "_storage_Use_Count", None)


class GradientBuffer:
    """One reusable weight-gradient storage: handed out only while nobody else refers to it."""

    def __init__(self) -> None:
        self._tensor: Tensor | None = None
        self._free_count = 0

    def take(self, like: Tensor) -> Tensor:
        """A contiguous tensor shaped, typed and placed as `like` to write a gradient into
        (contents undefined): the kept storage when free, else a new one (kept from then on)."""
        tensor = self._tensor
        if (
            tensor is None
            or _use_count is None
            or tensor.shape != like.shape
            or tensor.dtype != like.dtype
            or tensor.device != like.device
            or _use_count(tensor.untyped_storage()._cdata) != self._free_count
        ):
            tensor = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            if _use_count is not None:
                self._tensor = tensor
                self._free_count = _use_count(tensor.untyped_storage()._cdata)
        return tensor

    def release(self) -> None:
        """Drop the kept storage (it is freed once no gradient refers to it)."""
        self._tensor = None


def reuse_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether the reused-gradient path serves this call (float32 CPU training, eager)."""
    return (
        weight.requires_grad
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, buffer: GradientBuffer
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.buffer = buffer
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(rows, weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            target = ctx.buffer.take(weight)
            torch.mm(rows.t(), x.reshape(-1, x.shape[-1]), out=target)
            grad_weight = target.view(target.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, buffer: GradientBuffer) -> Tensor:
    """`F.linear(x, weight, bias)`, with the weight gradient written into `buffer` when the
    reused-gradient path applies."""
    if not reuse_applies(x, weight):
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias, buffer)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state-dict keys) with a reused weight-gradient buffer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.grad_buffer = GradientBuffer()

    def forward(self, x: Tensor) -> Tensor:
        """x·Wᵀ + b."""
        return linear(x, self.weight, self.bias, self.grad_buffer)


class _Embedding(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, ids: Tensor, weight: Tensor, padding_idx: int | None, buffer: GradientBuffer
    ) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.buffer = buffer
        ctx.padding_idx = padding_idx
        ctx.weight = weight.detach()
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (ids,) = ctx.saved_tensors
        target = ctx.buffer.take(ctx.weight)
        target.zero_()
        target.index_add_(0, ids.reshape(-1), grad.reshape(-1, target.shape[1]))
        if ctx.padding_idx is not None:
            target[ctx.padding_idx] = 0.0
        return None, target.view(target.shape), None, None


class Embedding(nn.Embedding):
    """`nn.Embedding` (dense gradient, same state-dict keys) whose gradient storage is reused:
    a step zeroes it in place instead of mapping fresh memory for the whole table."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.grad_buffer = GradientBuffer()

    def forward(self, ids: Tensor) -> Tensor:
        """Rows of the table."""
        if self.max_norm is not None or not reuse_applies(self.weight, self.weight):
            return super().forward(ids)
        return _Embedding.apply(ids, self.weight, self.padding_idx, self.grad_buffer)
