"""Attention with dropout for CPU training, straight from packed Q/K/V projections.

On the CPU, training with attention dropout takes the explicit computation (SDPA would use its
unfused math path). Written with stock operations it pays for the packed layout: every head
view of the (B, L, 3·H·D) projection is copied into (B·H, L, D) for the batched products, the
key once more transposed, and backward joins the query, key and value gradients with a stack
(a `cat` of three tensors, ~35 ms a 12in1-base step). This autograd function takes the packed
projections themselves (without their biases, which it adds) and in backward writes dQ, dK and
dV straight into one packed gradient per projection. One call serves every attention of a
block that reads the same projections (both directions of co-attention), so each packed
gradient is written once.

Two implementations sit behind the one function.
- The C kernel `kernels/packed_attention.c`, where it is built with AVX-512 (`cpu_kernels`;
  contiguous projections, float32 biases, (B, 1, 1, S) masks). Each thread takes whole
  (batch, head) pairs and runs the pair's gathers, products, mask, softmax and dropout in
  thread-local scratch that stays in cache, writing contexts and gradients straight into their
  packed places: no head-major copies, no batched products over operands larger than the L2
  cache, one pass over the scores per direction. It saves the projections, the probabilities
  and each problem's dropout seed; backward gathers the pair's operands again, draws the same
  dropout lanes and sums the bias gradients as it writes the packed ones. On a 12in1-base
  float32 step attention takes ~48 ms forward and ~82 ms backward this way, against ~86 and
  ~112 ms on PyTorch's path. It also serves bfloat16 CPU autocast training: the projections
  (autocast's bf16 GEMM outputs) are widened exactly, attention is computed in float32, and
  contexts and packed gradients are rounded to bf16 as they are written (the bias gradients
  stay float32 sums); bf16 forward + backward runs 1.02–1.07× faster than with autocast's own
  attention.
- PyTorch's path, in float32 only (under autocast it would compute in bf16, no faster than
  autocast's attention, so autocast keeps its own there): it copies each head operand once (the
  query already scaled by 1/√D, which folds the score scaling into that copy), multiplies the
  key in place of its transpose, adds the mask in place, and saves the kept probabilities
  (P∘mask) next to P and the mask for the value gradient.
Every intermediate and gradient is written into storage the attention block keeps from step to
step (`AttentionMemory`, the `reused_memory` rule: a block is written again only when nothing
else refers to it), so a step maps no fresh pages for them.

Numerics are the original's (scores·1/√D + additive mask, softmax, dropout, ·V) up to float
rounding (the scale is applied to Q before the product; the kernel's exp is a polynomial within
1 ulp and its sums run in another order, ~1e-6 from PyTorch's path). Under bf16 autocast the
kernel is more precise than autocast's attention (which rounds the scores and the kept
probabilities to bf16 for its products) and so differs from it at bf16 rounding. Dropout masks
are `twelve.model.dropout.keep_scale`'s on every path, so a seeded run draws the same masks as
the stock path. Backward is once-differentiable.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from twelve.model import cpu_kernels
from twelve.model.dropout import draw_seed, keep_scale, lane_rule
from twelve.model.reused_memory import ReusedStorage


@dataclass(frozen=True)
class PackedProblem:
    """One attention over packed projections: queries from `packed[query_source]` (part 0),
    keys and values from `packed[key_value_source]` (parts 1 and 2)."""

    query_source: int
    key_value_source: int
    mask: Tensor  # (B, 1, 1, S) additive
    dropout: float


def packed_attention_applies(*tensors: Tensor) -> bool:
    """Whether the fused function serves projections of (or computed from) `tensors`: CPU
    training, eager, in float32, or under bfloat16 autocast where the C kernel is built with
    AVX-512 (PyTorch's path would compute in bfloat16 there, with no gain over autocast's)."""
    if not (
        torch.is_grad_enabled()
        and all(t.device.type == "cpu" for t in tensors)
        and any(t.requires_grad for t in tensors)
        and not torch.compiler.is_compiling()
    ):
        return False
    if torch.is_autocast_enabled("cpu"):
        library = _attention_library()
        return (
            torch.get_autocast_dtype("cpu") == torch.bfloat16
            and all(t.dtype in (torch.float32, torch.bfloat16) for t in tensors)
            and library is not None
            and bool(library.twelve_attention_vectorised())
        )
    return all(t.dtype == torch.float32 for t in tensors)


class AttentionMemory:
    """The storage one attention block keeps between steps, one `ReusedStorage` per
    intermediate or gradient (by problem and role)."""

    def __init__(self) -> None:
        self._storages: dict[tuple[int, str], ReusedStorage] = {}

    def take(
        self,
        key: tuple[int, str],
        shape: tuple[int, ...],
        like: Tensor,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A tensor of `shape` (contents undefined) from the storage kept under `key`."""
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = ReusedStorage()
        return storage.take(shape, like, dtype)

    def training_storages(self) -> tuple[ReusedStorage, ...]:
        """Every storage kept so far."""
        return tuple(self._storages.values())


def attend_packed(
    packed: tuple[Tensor, ...],
    problems: tuple[PackedProblem, ...],
    heads: int,
    memory: AttentionMemory | None = None,
    biases: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, ...]:
    """The (B, Lq, H·D) context of every problem, computed from (B, L, 3·H·D) projections,
    writing into `memory` when given. Each part (query, key, value) of a projection may be
    read by one problem at most. With `biases` (one (3·H·D,) bias per projection) the
    projections come without their bias: it is added as each head operand is copied out, and
    its gradient is the sum of the packed gradient."""
    readers = [(p.query_source, 0) for p in problems]
    readers += [(p.key_value_source, part) for p in problems for part in (1, 2)]
    if len(set(readers)) != len(readers):
        raise ValueError("a packed projection part is read by more than one attention")
    memory = AttentionMemory() if memory is None else memory
    if biases is not None and len(biases) != len(packed):
        raise ValueError(f"{len(biases)} biases for {len(packed)} packed projections")
    return _PackedAttention.apply(problems, heads, memory, len(packed), *packed, *(biases or ()))


def _head_major(
    part: Tensor,
    heads: int,
    out: Tensor,
    scale: float | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """(B, L, H·D) strided part (plus `bias`, times `scale`) → `out`, contiguous (B·H, L, D),
    in one pass."""
    batch, length, width = part.shape
    head_dim = width // heads
    source = part.reshape(batch, length, heads, head_dim).transpose(1, 2)
    target = out.view(batch, heads, length, head_dim)
    if bias is not None:
        by_head = bias.view(1, heads, 1, head_dim)
        if scale is None:
            torch.add(source, by_head, out=target)
        else:  # (x + b)·s as b·s + s·x
            torch.add(by_head * scale, source, alpha=scale, out=target)
    elif scale is None:
        target.copy_(source)
    else:
        torch.mul(source, scale, out=target)
    return out


def _part(tensor: Tensor, index: int) -> Tensor:
    """Part `index` (0 query, 1 key, 2 value) of a (B, L, 3·W) packed tensor: a (B, L, W) view."""
    width = tensor.shape[-1] // 3
    return tensor[..., index * width : (index + 1) * width]


def _into_part(target: Tensor, heads: int, values: Tensor, scale: float | None = None) -> None:
    """Write (B·H, L, D) `values` (times `scale`) into a (B, L, H·D) strided part."""
    batch, length, width = target.shape
    view = target.view(batch, length, heads, width // heads).transpose(1, 2)
    source = values.view(batch, heads, length, width // heads)
    if scale is None:
        view.copy_(source)
    else:
        torch.mul(source, scale, out=view)


class _PackedAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        problems: tuple[PackedProblem, ...],
        heads: int,
        memory: AttentionMemory,
        count: int,
        *packed_and_biases: Tensor,
    ) -> tuple[Tensor, ...]:
        take = memory.take
        packed = packed_and_biases[:count]
        biases: tuple[Tensor | None, ...] = packed_and_biases[count:] or (None,) * count
        ctx.problems = problems
        ctx.heads = heads
        ctx.memory = memory
        ctx.shapes = [(p.shape, p.dtype) for p in packed]
        library = _kernel_for(packed, biases, problems, heads)
        ctx.kernel = library
        if library is not None:
            return _kernel_forward(ctx, library, problems, heads, memory, packed, biases)
        contexts = []
        saved: list[Tensor] = []
        for index, problem in enumerate(problems):
            source, keyed = packed[problem.query_source], packed[problem.key_value_source]
            batch, queries, width = source.shape[0], source.shape[1], source.shape[2] // 3
            keys = keyed.shape[1]
            head_dim = width // heads
            scale = 1.0 / math.sqrt(head_dim)
            query_shape = (batch * heads, queries, head_dim)
            key_shape = (batch * heads, keys, head_dim)
            score_shape = (batch * heads, queries, keys)
            query_bias = biases[problem.query_source]
            keyed_bias = biases[problem.key_value_source]
            query = _head_major(
                _part(source, 0),
                heads,
                take((index, "query"), query_shape, source),
                scale,
                None if query_bias is None else _part(query_bias, 0),
            )
            key = _head_major(
                _part(keyed, 1),
                heads,
                take((index, "key"), key_shape, source),
                bias=None if keyed_bias is None else _part(keyed_bias, 1),
            )
            value = _head_major(
                _part(keyed, 2),
                heads,
                take((index, "value"), key_shape, source),
                bias=None if keyed_bias is None else _part(keyed_bias, 2),
            )
            scores = take((index, "scores"), score_shape, source)
            torch.bmm(query, key.transpose(1, 2), out=scores)
            scores.view(batch, heads, queries, keys).add_(problem.mask.to(scores.dtype))
            probabilities = take((index, "probabilities"), score_shape, source)
            torch.ops.aten._softmax.out(scores, -1, False, out=probabilities)
            if problem.dropout > 0.0:
                keep = keep_scale(
                    probabilities, problem.dropout, take((index, "keep"), score_shape, source)
                )
                kept = torch.mul(
                    probabilities, keep, out=take((index, "kept"), score_shape, source)
                )
            else:
                keep, kept = torch.ones((), dtype=probabilities.dtype), probabilities
            context = take((index, "context"), query_shape, source)
            torch.bmm(kept, value, out=context)
            merged = take((index, "merged"), (batch, queries, width), source)
            _into_part(merged, heads, context)
            contexts.append(merged)
            saved += [query, key, value, probabilities, keep, kept]
        ctx.save_for_backward(*saved)
        return tuple(contexts)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_contexts: Tensor | None) -> tuple[Tensor | None, ...]:
        heads = ctx.heads
        take = ctx.memory.take
        saved = ctx.saved_tensors
        like = saved[0]
        if ctx.kernel is not None:
            ctx.packed_and_biases = saved[: ctx.saved_inputs]
            ctx.probabilities = saved[ctx.saved_inputs :]
        grads = [
            take((i, "packed_grad"), tuple(shape), like, dtype)
            for i, (shape, dtype) in enumerate(ctx.shapes)
        ]
        written = [[False, False, False] for _ in grads]
        # The kernel sums the bias gradients as it writes the packed ones.
        bias_sums = (
            [torch.empty(shape[-1], dtype=torch.float32) for shape, _ in ctx.shapes]
            if ctx.kernel is not None and ctx.has_biases
            else []
        )
        for index, (problem, grad_context) in enumerate(
            zip(ctx.problems, grad_contexts, strict=True)
        ):
            query_grad = grads[problem.query_source]
            memory_grad = grads[problem.key_value_source]
            written[problem.query_source][0] = True
            written[problem.key_value_source][1] = written[problem.key_value_source][2] = True
            if grad_context is None:
                for target, part in ((query_grad, 0), (memory_grad, 1), (memory_grad, 2)):
                    _part(target, part).zero_()
                continue
            if ctx.kernel is not None:
                _kernel_backward(ctx, index, problem, grad_context, grads, bias_sums)
                continue
            query, key, value, probabilities, keep, kept = saved[6 * index : 6 * index + 6]
            scale = 1.0 / math.sqrt(query.shape[-1])
            grad_heads = _head_major(
                grad_context, heads, take((index, "grad_heads"), tuple(query.shape), like)
            )
            product = (index, "product")  # dV, dQ and dK in turn, each copied out at once
            _into_part(
                _part(memory_grad, 2),
                heads,
                torch.bmm(
                    kept.transpose(1, 2),
                    grad_heads,
                    out=take(product, tuple(value.shape), like),
                ),
            )
            grad_kept = take((index, "grad_kept"), tuple(kept.shape), like)
            torch.bmm(grad_heads, value.transpose(1, 2), out=grad_kept).mul_(keep)
            grad_scores = take((index, "grad_scores"), tuple(kept.shape), like)
            torch.ops.aten._softmax_backward_data.out(
                grad_kept, probabilities, -1, probabilities.dtype, grad_input=grad_scores
            )
            _into_part(
                _part(query_grad, 0),
                heads,
                torch.bmm(grad_scores, key, out=take(product, tuple(query.shape), like)),
                scale,
            )
            _into_part(
                _part(memory_grad, 1),
                heads,
                torch.bmm(
                    grad_scores.transpose(1, 2), query, out=take(product, tuple(key.shape), like)
                ),
            )
        for i, (grad, parts) in enumerate(zip(grads, written, strict=True)):
            for part, done in enumerate(parts):
                if not done:
                    _part(grad, part).zero_()
                    if bias_sums:
                        _part(bias_sums[i], part).zero_()
        count = len(grads)
        needed = ctx.needs_input_grad[4 : 4 + count]
        bias_needed = ctx.needs_input_grad[4 + count :]
        bias_grads = [
            (bias_sums[i] if bias_sums else grad.view(-1, grad.shape[-1]).sum(0)) if need else None
            for i, (grad, need) in enumerate(zip(grads, bias_needed, strict=False))
        ]
        return (
            None,
            None,
            None,
            None,
            *(g if need else None for g, need in zip(grads, needed, strict=True)),
            *bias_grads,
        )


_KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # the projections' types the kernel reads


def _kernel_for(
    packed: tuple[Tensor, ...],
    biases: tuple[Tensor | None, ...],
    problems: tuple[PackedProblem, ...],
    heads: int,
) -> ctypes.CDLL | None:
    """The attention kernel when it serves this call (vectorised; contiguous projections, all
    float32 or all bfloat16; contiguous float32 biases; (B, 1, 1, S) masks), else None."""
    library = _attention_library()
    if library is None or not library.twelve_attention_vectorised():
        return None
    if len({p.dtype for p in packed}) != 1 or packed[0].dtype not in _KERNEL_DTYPES:
        return None
    if any(
        not (p.is_contiguous() and p.dim() == 3 and p.shape[-1] % (3 * heads) == 0) for p in packed
    ):
        return None
    if any(b is not None and not (b.is_contiguous() and b.dtype == torch.float32) for b in biases):
        return None
    for problem in problems:
        mask = problem.mask
        keyed = packed[problem.key_value_source]
        if mask.dim() != 4 or mask.shape[1:3] != (1, 1) or mask.shape[-1] != keyed.shape[1]:
            return None
        if mask.shape[0] not in (1, keyed.shape[0]) or mask.device.type != "cpu":
            return None
    return library


def _pointer(tensor: Tensor | None, part: int = 0) -> int | None:
    """The address of part `part` (0 query, 1 key, 2 value) of a packed tensor or bias."""
    if tensor is None:
        return None
    return tensor.data_ptr() + part * (tensor.shape[-1] // 3) * tensor.element_size()


def _projections(
    source: Tensor, keyed: Tensor, query_bias: Tensor | None, keyed_bias: Tensor | None
) -> tuple[int | None, ...]:
    """The kernel's first eight arguments: the query part of `source`, the key and value parts
    of `keyed` (with their row strides) and the matching parts of their biases."""
    return (
        _pointer(source, 0),
        source.stride(1),
        _pointer(keyed, 1),
        _pointer(keyed, 2),
        keyed.stride(1),
        _pointer(query_bias, 0),
        _pointer(keyed_bias, 1),
        _pointer(keyed_bias, 2),
    )


def _dropout_rule(problem: PackedProblem) -> tuple[int, int, int, float]:
    """(on, seed, keep_from, factor) of a problem's attention dropout: the lanes and rule of
    `twelve.model.dropout.keep_scale`, one seed drawn per call as it draws."""
    if problem.dropout <= 0.0:
        return 0, 0, 0, 1.0
    keep_from, factor = lane_rule(problem.dropout)
    return 1, draw_seed(), keep_from, factor


def _kernel_forward(
    ctx: Any,
    library: ctypes.CDLL,
    problems: tuple[PackedProblem, ...],
    heads: int,
    memory: AttentionMemory,
    packed: tuple[Tensor, ...],
    biases: tuple[Tensor | None, ...],
) -> tuple[Tensor, ...]:
    """Every problem's context by the C kernel; saves the inputs, the probabilities and the
    dropout rules for `_kernel_backward`."""
    contexts, probabilities, rules = [], [], []
    threads = torch.get_num_threads()
    for index, problem in enumerate(problems):
        source, keyed = packed[problem.query_source], packed[problem.key_value_source]
        query_bias, keyed_bias = biases[problem.query_source], biases[problem.key_value_source]
        batch, queries, keys = source.shape[0], source.shape[1], keyed.shape[1]
        width = source.shape[2] // 3
        head_dim = width // heads
        mask = problem.mask.to(torch.float32).expand(batch, 1, 1, keys).reshape(batch, keys)
        mask = mask.contiguous()
        rule = _dropout_rule(problem)
        shape = (batch * heads, queries, keys)
        kept = memory.take((index, "probabilities"), shape, source, torch.float32)
        context = memory.take((index, "merged"), (batch, queries, width), source)
        status = library.twelve_attention_forward(
            *_projections(source, keyed, query_bias, keyed_bias),
            mask.data_ptr(),
            *rule,
            kept.data_ptr(),
            context.data_ptr(),
            batch,
            heads,
            queries,
            keys,
            head_dim,
            1.0 / math.sqrt(head_dim),
            source.dtype == torch.bfloat16,
            threads,
        )
        _checked(status, "forward")
        contexts.append(context)
        probabilities.append(kept)
        rules.append(rule)
    inputs = [*packed, *(b for b in biases if b is not None)]
    ctx.saved_inputs = len(inputs)
    ctx.has_biases = biases[0] is not None
    ctx.rules = rules
    ctx.save_for_backward(*inputs, *probabilities)
    return tuple(contexts)


def _kernel_backward(
    ctx: Any,
    index: int,
    problem: PackedProblem,
    grad_context: Tensor,
    grads: list[Tensor],
    bias_sums: list[Tensor],
) -> None:
    """Problem `index`'s query, key and value gradients by the C kernel, into `grads`, and
    with biases their column sums (the bias gradients) into `bias_sums`."""
    count = len(grads)
    packed = ctx.packed_and_biases[:count]
    biases = ctx.packed_and_biases[count:] if ctx.has_biases else (None,) * count
    source, keyed = packed[problem.query_source], packed[problem.key_value_source]
    query_bias, keyed_bias = biases[problem.query_source], biases[problem.key_value_source]
    query_grad, keyed_grad = grads[problem.query_source], grads[problem.key_value_source]
    batch, queries, keys = source.shape[0], source.shape[1], keyed.shape[1]
    head_dim = source.shape[2] // 3 // ctx.heads
    grad_context = grad_context.to(source.dtype).contiguous()
    bias_targets: tuple[int | None, ...] = (None, None, None)
    if bias_sums:
        query_sums, keyed_sums = (
            bias_sums[problem.query_source],
            bias_sums[problem.key_value_source],
        )
        bias_targets = (_pointer(query_sums, 0), _pointer(keyed_sums, 1), _pointer(keyed_sums, 2))
    status = ctx.kernel.twelve_attention_backward(
        *_projections(source, keyed, query_bias, keyed_bias),
        *ctx.rules[index],
        ctx.probabilities[index].data_ptr(),
        grad_context.data_ptr(),
        grad_context.stride(1),
        _pointer(query_grad, 0),
        query_grad.stride(1),
        _pointer(keyed_grad, 1),
        _pointer(keyed_grad, 2),
        keyed_grad.stride(1),
        *bias_targets,
        batch,
        ctx.heads,
        queries,
        keys,
        head_dim,
        1.0 / math.sqrt(head_dim),
        source.dtype == torch.bfloat16,
        torch.get_num_threads(),
    )
    _checked(status, "backward")


def _checked(status: int, direction: str) -> None:
    if status != 0:
        raise MemoryError(
            f"the attention kernel could not allocate its scratch memory ({direction})"
        )


@functools.cache
def _attention_library() -> ctypes.CDLL | None:
    """The attention kernel with its signatures, or None (see `cpu_kernels.load`)."""
    library = cpu_kernels.load("packed_attention")
    return None if library is None else with_signatures(library)


def with_signatures(library: ctypes.CDLL) -> ctypes.CDLL:
    """`library` (a build of `kernels/packed_attention.c`) with its functions' ctypes
    signatures set."""
    pointer, i32, i64, u64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64
    flag, single = ctypes.c_int, ctypes.c_float
    rule = [flag, u64, i32, single]
    # batch, heads, queries, keys, head width, scale, bfloat16 or not, threads
    sizes = [i64, i64, i64, i64, i64, single, flag, flag]
    projections = [pointer, i64, pointer, pointer, i64, pointer, pointer, pointer]
    # (forward) the mask, the dropout rule, the probabilities and the context
    library.twelve_attention_forward.argtypes = [
        *projections,
        pointer,
        *rule,
        pointer,
        pointer,
        *sizes,
    ]
    library.twelve_attention_forward.restype = ctypes.c_int
    # (backward) the dropout rule, the probabilities, the context gradient and its row stride,
    # the packed query, key and value gradients with their row strides, the three bias sums
    gradients = [pointer, i64, pointer, pointer, i64]
    library.twelve_attention_backward.argtypes = [
        *projections,
        *rule,
        pointer,
        pointer,
        i64,
        *gradients,
        pointer,
        pointer,
        pointer,
        *sizes,
    ]
    library.twelve_attention_backward.restype = ctypes.c_int
    library.twelve_attention_vectorised.argtypes = []
    library.twelve_attention_vectorised.restype = ctypes.c_int
    return library
