"""Linear and embedding layers, and GeLU, that reuse their memory from one step to the next.

Eager PyTorch on the CPU allocates every activation and gradient afresh each step, and the C
library hands large freed blocks back to the kernel (all the more with
`THP_MEM_ALLOC_ENABLE=1`, whose 2 MiB-aligned blocks are mapped afresh each time): writing into
fresh pages costs ~0.2–0.4 ms per MB of page faults and kernel zeroing, about as much as the
write itself ten times over. For 12in1-base that is ~1 GB of weight gradients and as much of
linear-layer outputs and input gradients per step: the weight-gradient GEMMs of the 200-row
text stream ran at ~0.6 of the machine's matmul rate (0.85–0.95 into mapped memory) and the
dense word-embedding gradient (94 MB) took ~50 ms instead of ~6 ms.

Here each layer keeps the storage of its output, its input gradient and its weight gradient
(`ReusedStorage`) and writes the next step's values into it — but only when nothing else still
refers to that storage (the graph of the previous step is gone, the parameter's `.grad` was set
to None), so the semantics are those of stock autograd: a tensor a caller kept, or a gradient
that is still accumulating, is never overwritten; a fresh tensor is used then. The weight
gradient handed to autograd is a fresh alias of the storage, which `AccumulateGrad` adopts as
`.grad` without a copy. Values are the products of `torch.nn.functional.linear` and the sums of
`embedding`'s backward (up to float rounding order).

The path is taken for training on the CPU with float32 parameters, in float32 or under CPU
autocast, outside `torch.compile` (whose graphs and allocators manage memory themselves);
everything else uses the stock functions. Under autocast a linear layer computes exactly what
autocast's casts make of `F.linear` — the weight and bias cast to the autocast dtype, the
products and gradients in it, the gradients cast back to the dtypes of the input and the
parameters (bit-identical in the tests' shapes) — with the cast weight, its gradient and the
float32 weight gradient in kept storage too. The bf16 weight-gradient product Gᵀ·X reads a
contiguous Gᵀ that a C kernel writes into the block of the layer's output, free by then
(oneDNN runs the product 1.7–3.3× as fast from it as from G's transposed view; for large
products the summation order, and so the last bit, can differ from autograd's). The backward
is once-differentiable (no double backward through these layers). The kept blocks cost memory
between steps (the weight gradients' among them); `release_training_memory` frees them, and
`MultiTaskViLBERT.eval()` calls it.

Inference under `torch.autocast` casts every weight to bf16 (or fp16) on every call: ~100 ms of
a ~500 ms 12in1-base forward at batch 8 on the CPU. With gradients off (`torch.no_grad`,
`torch.inference_mode`) a linear layer keeps its cast weight and bias (`CastCopies`) and uses
them again while the parameters are unchanged: same storage, same version counter, so an
optimizer step, `load_state_dict` or `.to()` makes a fresh cast. The values are autocast's own
(`weight.to(dtype)`). The copies cost half the fp32 weights' memory (bf16) until
`release_cast_copies` drops them; `MultiTaskViLBERT.train()` calls it.

In float32 training a linear layer can also take over a residual LayerNorm's gradient for the
input they share (`ResidualHandoff`): its input-gradient GEMM adds to that gradient instead of
autograd summing the two afterwards.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model import cpu_kernels

_use_count = getattr(torch._C, "_storage_Use_Count", None)


class ReusedStorage:
    """Memory for one tensor per step: handed out again only while nobody else refers to it.

    Keeps one flat block, grown when a larger tensor is asked for, so changing batch shapes
    reuse it too, and its view for the last shape asked for, so the common call (same shape
    as last step) costs one `detach` (~1 µs; a 12in1-base step makes ~1,200 calls)."""

    def __init__(self) -> None:
        self._block: Tensor | None = None
        self._view: Tensor | None = None  # the block viewed as `_shape`
        self._shape: tuple[int, ...] = ()
        self._storage_address = 0  # the block's StorageImpl, for its use count
        self._free_count = 0  # the use count while only this object refers to the block

    def take(self, shape: Sequence[int], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """A contiguous tensor of `shape` on `like`'s device, of `dtype` (default `like`'s;
        contents undefined): the kept block when it is free and large enough, else a new one
        (kept from then on)."""
        dtype = like.dtype if dtype is None else dtype
        block = self._block
        if (
            block is not None
            and _use_count is not None
            and _use_count(self._storage_address) == self._free_count
            and block.dtype == dtype
            and block.device == like.device
        ):
            if shape == self._shape:
                assert self._view is not None
                return self._view.detach()
            count = math.prod(shape)
            if block.numel() >= count:
                # Replacing the view keeps the use count: one view of ours for another.
                self._view, self._shape = block[:count].view(*shape), tuple(shape)
                return self._view.detach()
        block = torch.empty(math.prod(shape), dtype=dtype, device=like.device)
        view = block.view(*shape)
        if _use_count is not None:
            self._block, self._view, self._shape = block, view, tuple(shape)
            self._storage_address = block.untyped_storage()._cdata
            self._free_count = _use_count(self._storage_address)
        return view.detach()

    def release(self) -> None:
        """Drop the kept block (it is freed once no tensor refers to it)."""
        self._block = self._view = None
        self._shape = ()


class CastCopies:
    """A layer's weight and bias cast to the autocast dtype, kept while the parameters are
    unchanged (inference without gradients)."""

    def __init__(self) -> None:
        self._sources: tuple[Tensor | None, ...] = ()
        self._versions: tuple[int, ...] = ()
        self._copies: tuple[Tensor | None, ...] = ()

    def get(self, dtype: torch.dtype, *params: Tensor | None) -> tuple[Tensor | None, ...]:
        """`params` cast to `dtype`: the kept copies when every parameter is the same storage at
        the same version as when they were made, else fresh casts (kept from then on)."""
        if not self._current(dtype, params):
            # `detach()` aliases the parameter and shares its version counter, and keeps its
            # storage alive, so an address cannot be reused by a different tensor meanwhile.
            self._sources = tuple(None if p is None else p.detach() for p in params)
            self._versions = tuple(0 if p is None else p._version for p in params)
            self._copies = tuple(None if p is None else p.detach().to(dtype) for p in params)
        return self._copies

    def _current(self, dtype: torch.dtype, params: tuple[Tensor | None, ...]) -> bool:
        if len(params) != len(self._sources):
            return False
        for param, source, version, copy in zip(
            params, self._sources, self._versions, self._copies, strict=True
        ):
            if param is None or source is None or copy is None:
                if param is not source:
                    return False
                continue
            if (
                copy.dtype != dtype
                or param.data_ptr() != source.data_ptr()
                or param.shape != source.shape
                or param._version != version
            ):
                return False
        return True

    def release(self) -> None:
        """Drop the copies."""
        self._sources, self._versions, self._copies = (), (), ()


class ResidualHandoff:
    """Hands a residual LayerNorm's gradient for its residual to the linear layer that reads the
    same tensor, which adds its input-gradient product to it in the GEMM (β = 1) instead of
    autograd summing the two gradients in one more pass (~16 ms a 12in1-base float32 step).

    One per residual site and forward call: the linear layer names its input (`source`), the
    norm takes the handoff only for that very tensor, and the norm's backward, which the
    graph runs before the linear layer's, leaves its gradient here for it (`pending`). Either
    side not taking part leaves the stock summation in place."""

    def __init__(self) -> None:
        self.source: Tensor | None = None
        self.pending: Tensor | None = None

    def take_pending(self) -> Tensor | None:
        """The residual gradient left by the norm, once."""
        pending, self.pending = self.pending, None
        return pending


@dataclass
class LinearMemory:
    """What one linear layer keeps between calls: the storage of its output, input gradient
    and weight gradient (training; under autocast also of the cast weight and the cast weight
    gradient), its cast weight and bias (autocast inference)."""

    output: ReusedStorage = field(default_factory=ReusedStorage)
    input_grad: ReusedStorage = field(default_factory=ReusedStorage)
    weight_grad: ReusedStorage = field(default_factory=ReusedStorage)
    cast_weight: ReusedStorage = field(default_factory=ReusedStorage)
    cast_weight_grad: ReusedStorage = field(default_factory=ReusedStorage)
    cast: CastCopies = field(default_factory=CastCopies)

    def training_storages(self) -> tuple[ReusedStorage, ...]:
        """The storages the training path writes."""
        return (
            self.output,
            self.input_grad,
            self.weight_grad,
            self.cast_weight,
            self.cast_weight_grad,
        )


def reuse_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether the reused-memory path serves this call: CPU training (gradients on) with
    float32 weights, eager, in float32 or under CPU autocast."""
    if not (
        weight.requires_grad
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and weight.dtype == torch.float32
        and not torch.compiler.is_compiling()
    ):
        return False
    if torch.is_autocast_enabled("cpu"):
        return x.dtype in (torch.float32, torch.get_autocast_dtype("cpu"))
    return x.dtype == torch.float32


class _Linear(torch.autograd.Function):
    """`F.linear` computed in `dtype`: float32, or autocast's dtype with autocast's casts (the
    weight and bias cast to it; gradients computed in it and cast back to the dtypes of the
    input and the parameters)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        memory: LinearMemory,
        dtype: torch.dtype,
        handoff: ResidualHandoff | None,
    ) -> Tensor:
        ctx.memory = memory
        ctx.handoff = handoff
        ctx.has_bias = bias is not None
        ctx.input_dtype = x.dtype
        ctx.weight_dtype = weight.dtype
        if weight.dtype != dtype:
            cast = memory.cast_weight.take(weight.shape, weight, dtype)
            weight = cast.copy_(weight)
            bias = None if bias is None else bias.to(dtype)
        x = x.to(dtype)
        ctx.save_for_backward(x, weight)
        out = memory.output.take((*x.shape[:-1], weight.shape[0]), x)
        rows = x.reshape(-1, x.shape[-1])
        if bias is None:
            torch.mm(rows, weight.t(), out=out.view(-1, weight.shape[0]))
        else:
            torch.addmm(bias, rows, weight.t(), out=out.view(-1, weight.shape[0]))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # both in the compute dtype
        memory: LinearMemory = ctx.memory
        rows = grad.reshape(-1, grad.shape[-1]).to(x.dtype)
        cast_input = ctx.input_dtype != x.dtype
        cast_weight = ctx.weight_dtype != x.dtype
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            handoff: ResidualHandoff | None = ctx.handoff
            residual = None if handoff is None else handoff.take_pending()
            if residual is not None:
                # The norm's gradient of this very input (float32, contiguous, x's shape: the
                # norm takes part only then): add the product to it.
                grad_x = residual
                rows_x = grad_x.view(-1, x.shape[-1])
                torch.addmm(rows_x, rows, weight, out=rows_x)
            else:
                grad_x = memory.input_grad.take(x.shape, x)
                torch.mm(rows, weight, out=grad_x.view(-1, x.shape[-1]))
                if cast_input:
                    grad_x = grad_x.to(ctx.input_dtype)
        bias_needed = ctx.has_bias and ctx.needs_input_grad[2]
        column_sums = None
        if ctx.needs_input_grad[1]:
            storage = memory.cast_weight_grad if cast_weight else memory.weight_grad
            grad_weight = storage.take(weight.shape, weight)
            # The output's block is free by now (its readers have run their backward).
            rows_t, column_sums = transposed(rows, memory.output, column_sums=bias_needed)
            torch.mm(rows_t, x.reshape(-1, x.shape[-1]), out=grad_weight)
            if cast_weight:
                grad_weight = widen_into(
                    memory.weight_grad.take(weight.shape, weight, ctx.weight_dtype), grad_weight
                )
        if bias_needed:
            # Rounded to the gradient's dtype first, as `rows.sum(0)` is.
            summed = rows.sum(0) if column_sums is None else column_sums.to(rows.dtype)
            grad_bias = summed.to(ctx.weight_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None


def transposed(
    rows: Tensor, storage: ReusedStorage, column_sums: bool = False
) -> tuple[Tensor, Tensor | None]:
    """`rows.t()` for a weight-gradient product: for a 16-bit matrix a contiguous copy in
    `storage` by the transpose kernel when it is built (oneDNN's bfloat16 product Gᵀ·X runs
    1.7–3.3× as fast from it, the copy included), else the transposed view. With
    `column_sums`, also the float32 sums of a bfloat16 matrix's columns (the bias gradient)
    from the same pass, or None when the kernel did not run."""
    library = _transpose_library()
    if (
        library is None
        or rows.dtype not in (torch.bfloat16, torch.float16)
        or rows.dim() != 2
        or rows.stride(1) != 1
        or rows.stride(0) < rows.shape[1]
        or rows.device.type != "cpu"
    ):
        return rows.t(), None
    count, width = rows.shape
    target = storage.take((width, count), rows)
    sums = None
    if column_sums and rows.dtype == torch.bfloat16:
        sums = torch.empty(width, dtype=torch.float32)
    library.twelve_transpose16(
        rows.data_ptr(),
        target.data_ptr(),
        None if sums is None else sums.data_ptr(),
        count,
        width,
        rows.stride(0),
        torch.get_num_threads(),
    )
    return target, sums


@functools.cache
def _transpose_library() -> ctypes.CDLL | None:
    """The 16-bit transpose kernel with its signature, or None (see `cpu_kernels.load`)."""
    library = cpu_kernels.load("transpose16")
    if library is not None:
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        library.twelve_transpose16.argtypes = [
            pointer,
            pointer,
            pointer,
            size,
            size,
            size,
            ctypes.c_int,
        ]
        library.twelve_transpose16.restype = None
    return library


def widen_into(target: Tensor, source: Tensor) -> Tensor:
    """`target.copy_(source)` for a bfloat16 `source` and a float32 `target` (a weight
    gradient only the optimizer reads next), by the streaming-store kernel when it is built."""
    library = _widen_library()
    if (
        library is None
        or source.dtype != torch.bfloat16
        or target.dtype != torch.float32
        or target.shape != source.shape
        or not (source.is_contiguous() and target.is_contiguous())
        or source.device.type != "cpu"
        or target.device.type != "cpu"
    ):
        return target.copy_(source)
    library.twelve_widen_bf16(
        source.data_ptr(), target.data_ptr(), target.numel(), torch.get_num_threads()
    )
    return target


@functools.cache
def _widen_library() -> ctypes.CDLL | None:
    """The widening kernel with its signature, or None (see `cpu_kernels.load`)."""
    library = cpu_kernels.load("bf16_widen")
    if library is not None:
        pointer = ctypes.c_void_p
        library.twelve_widen_bf16.argtypes = [pointer, pointer, ctypes.c_int64, ctypes.c_int]
        library.twelve_widen_bf16.restype = None
    return library


def cast_copies_apply(x: Tensor, weight: Tensor) -> bool:
    """Whether the layer uses its kept cast weights: autocast to another dtype, gradients off."""
    device = x.device.type
    return (
        not torch.is_grad_enabled()
        and torch.is_autocast_enabled(device)
        and weight.dtype != torch.get_autocast_dtype(device)
        and weight.dtype.is_floating_point
        and not torch.compiler.is_compiling()
    )


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    memory: LinearMemory,
    handoff: ResidualHandoff | None = None,
) -> Tensor:
    """`F.linear(x, weight, bias)`, writing into `memory` when the reused path applies and
    with the kept cast weights in autocast inference. With a `handoff`, a residual norm that
    reads `x` too may leave its gradient for the input-gradient GEMM to add to (float32
    training only)."""
    if reuse_applies(x, weight):
        autocast = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu") if autocast else weight.dtype
        if handoff is not None and not autocast:
            handoff.source = x
        else:
            handoff = None
        return _Linear.apply(x, weight, bias, memory, dtype, handoff)
    if cast_copies_apply(x, weight):
        weight, bias = memory.cast.get(torch.get_autocast_dtype(x.device.type), weight, bias)
    return F.linear(x, weight, bias)  # type: ignore[arg-type]


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state-dict keys) that reuses its memory across steps
    and its cast weights across autocast inference calls."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.memory = LinearMemory()

    def forward(self, x: Tensor, handoff: ResidualHandoff | None = None) -> Tensor:
        """x·Wᵀ + b (`handoff`: see `linear`)."""
        return linear(x, self.weight, self.bias, self.memory, handoff)


@dataclass
class EmbeddingGradMemory:
    """What an embedding keeps between steps: its gradient's storage and which rows the last
    backward wrote, so the next one zeroes only those — while the storage is the same block,
    untouched since (its version counter, shared by every alias of the block, unchanged)."""

    storage: ReusedStorage = field(default_factory=ReusedStorage)
    written_rows: Tensor | None = None
    written_at: tuple[int, int] = (0, -1)  # (data pointer, version) after the last write

    def training_storages(self) -> tuple[ReusedStorage, ...]:
        """The storage the training path writes."""
        return (self.storage,)

    def zeroed(self, shape: Sequence[int], like: Tensor) -> Tensor:
        """The gradient storage, all zeros."""
        target = self.storage.take(shape, like)
        rows = self.written_rows
        if rows is not None and (target.data_ptr(), target._version) == self.written_at:
            target.index_fill_(0, rows, 0.0)
        else:
            target.zero_()
        return target

    def wrote(self, target: Tensor, rows: Tensor) -> None:
        """Record that `rows` of `target` are the only nonzero ones."""
        self.written_rows = rows.clone()  # the caller may refill its ids tensor
        self.written_at = (target.data_ptr(), target._version)


class _Embedding(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, ids: Tensor, weight: Tensor, padding_idx: int | None, memory: EmbeddingGradMemory
    ) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.memory = memory
        ctx.padding_idx = padding_idx
        ctx.weight = weight.detach()
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (ids,) = ctx.saved_tensors
        memory: EmbeddingGradMemory = ctx.memory
        target = memory.zeroed(ctx.weight.shape, ctx.weight)
        rows = ids.reshape(-1)
        target.index_add_(0, rows, grad.reshape(-1, target.shape[1]).to(target.dtype))
        if ctx.padding_idx is not None:
            target[ctx.padding_idx] = 0.0
        memory.wrote(target, rows)
        return None, target, None, None


@dataclass
class GeluMemory:
    """What one GeLU keeps between steps: the storage of its output and its input gradient."""

    output: ReusedStorage = field(default_factory=ReusedStorage)
    input_grad: ReusedStorage = field(default_factory=ReusedStorage)

    def training_storages(self) -> tuple[ReusedStorage, ...]:
        """The storages the training path writes."""
        return (self.output, self.input_grad)


class _Gelu(torch.autograd.Function):
    """Exact (erf) GeLU by ATen's own kernels, written into kept storage."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, memory: GeluMemory) -> Tensor:
        out = memory.output.take(x.shape, x)
        torch.ops.aten.gelu.out(x, out=out)
        ctx.save_for_backward(x)
        ctx.memory = memory
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        grad_x = ctx.memory.input_grad.take(x.shape, x)
        torch.ops.aten.gelu_backward.grad_input(grad, x, grad_input=grad_x)
        return grad_x, None


def gelu(x: Tensor, memory: GeluMemory) -> Tensor:
    """`F.gelu(x)` (exact), writing into `memory` for CPU training (the same values)."""
    if (
        x.requires_grad
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
    ):
        return _Gelu.apply(x, memory)
    return F.gelu(x)


class Embedding(nn.Embedding):
    """`nn.Embedding` (dense gradient, same state-dict keys) whose gradient storage is reused:
    a step zeroes it in place instead of mapping fresh memory for the whole table."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        _weight: Tensor | None = None,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, _weight=_weight)
        self.grad_memory = EmbeddingGradMemory()

    def forward(self, ids: Tensor) -> Tensor:
        """Rows of the table."""
        if self.max_norm is not None or not reuse_applies(self.weight, self.weight):
            return super().forward(ids)
        return _Embedding.apply(ids, self.weight, self.padding_idx, self.grad_memory)


def release_training_memory(module: nn.Module) -> None:
    """Drop the training blocks every reusing layer in `module` keeps (freed once nothing
    refers to them): each layer attribute that is a `ReusedStorage` or has
    `training_storages()` (linear layers, embeddings, GeLU, fused norms, attention)."""
    for layer in module.modules():
        for value in vars(layer).values():
            if isinstance(value, ReusedStorage):
                value.release()
            elif callable(getattr(value, "training_storages", None)):
                for storage in value.training_storages():
                    storage.release()


def release_cast_copies(module: nn.Module) -> None:
    """Drop the autocast weight copies every linear layer in `module` keeps."""
    for layer in module.modules():
        if isinstance(memory := getattr(layer, "memory", None), LinearMemory):
            memory.cast.release()
