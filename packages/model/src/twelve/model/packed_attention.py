"""Attention with dropout for CPU float32 training, straight from packed Q/K/V projections.

On the CPU, training with attention dropout takes the explicit computation (SDPA would use its
unfused math path). Written with stock operations it pays for the packed layout: every head
view of the (B, L, 3·H·D) projection is copied into (B·H, L, D) for the batched products, the
key once more transposed, and backward joins the query, key and value gradients with a stack
(a `cat` of three tensors, ~35 ms a 12in1-base step). This autograd function takes the packed
projections themselves: it copies each head operand once (the query already scaled by
1/√D, which folds the score scaling into that copy), multiplies the key in place of its
transpose, adds the mask in place, and in backward writes dQ, dK and dV straight into one
packed gradient per projection. One call serves every attention of a block that reads the same
projections (both directions of co-attention), so each packed gradient is written once.

Forward saves the kept probabilities (P∘mask) next to P and the mask, so backward does not
recompute them for the value gradient.

Numerics are the original's (scores·1/√D + additive mask, softmax, dropout, ·V) up to float
rounding (the scale is applied to Q before the product); dropout masks come from
`twelve.model.dropout.keep_scale`, so a seeded run draws the same masks as the stock path.
Backward is once-differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from twelve.model.dropout import keep_scale


@dataclass(frozen=True)
class PackedProblem:
    """One attention over packed projections: queries from `packed[query_source]` (part 0),
    keys and values from `packed[key_value_source]` (parts 1 and 2)."""

    query_source: int
    key_value_source: int
    mask: Tensor  # (B, 1, 1, S) additive
    dropout: float


def packed_attention_applies(*packed: Tensor) -> bool:
    """Whether the fused function serves these projections: float32 CPU training, eager."""
    return (
        torch.is_grad_enabled()
        and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in packed)
        and any(p.requires_grad for p in packed)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def attend_packed(
    packed: tuple[Tensor, ...], problems: tuple[PackedProblem, ...], heads: int
) -> tuple[Tensor, ...]:
    """The (B, Lq, H·D) context of every problem, computed from (B, L, 3·H·D) projections.
    Each part (query, key, value) of a projection may be read by one problem at most."""
    readers = [(p.query_source, 0) for p in problems]
    readers += [(p.key_value_source, part) for p in problems for part in (1, 2)]
    if len(set(readers)) != len(readers):
        raise ValueError("a packed projection part is read by more than one attention")
    return _PackedAttention.apply(problems, heads, *packed)


def _head_major(part: Tensor, heads: int, scale: float | None = None) -> Tensor:
    """(B, L, H·D) strided part (times `scale`) → contiguous (B·H, L, D), in one pass."""
    batch, length, width = part.shape
    head_dim = width // heads
    source = part.reshape(batch, length, heads, head_dim).transpose(1, 2)
    out = torch.empty(batch * heads, length, head_dim, dtype=part.dtype, device=part.device)
    if scale is None:
        out.view(batch, heads, length, head_dim).copy_(source)
    else:
        torch.mul(source, scale, out=out.view(batch, heads, length, head_dim))
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
        ctx: Any, problems: tuple[PackedProblem, ...], heads: int, *packed: Tensor
    ) -> tuple[Tensor, ...]:
        contexts = []
        saved: list[Tensor] = []
        for problem in problems:
            source, memory = packed[problem.query_source], packed[problem.key_value_source]
            batch, queries, width = source.shape[0], source.shape[1], source.shape[2] // 3
            keys = memory.shape[1]
            head_dim = width // heads
            scale = 1.0 / math.sqrt(head_dim)
            query = _head_major(_part(source, 0), heads, scale)
            key = _head_major(_part(memory, 1), heads)
            value = _head_major(_part(memory, 2), heads)
            scores = torch.bmm(query, key.transpose(1, 2))
            scores.view(batch, heads, queries, keys).add_(problem.mask.to(scores.dtype))
            probabilities = torch.softmax(scores, dim=-1)
            if problem.dropout > 0.0:
                keep = keep_scale(probabilities, problem.dropout)
                kept = probabilities * keep
            else:
                keep, kept = torch.ones((), dtype=probabilities.dtype), probabilities
            context = torch.bmm(kept, value)
            contexts.append(
                context.view(batch, heads, queries, head_dim)
                .transpose(1, 2)
                .reshape(batch, queries, width)
            )
            saved += [query, key, value, probabilities, keep, kept]
        ctx.save_for_backward(*saved)
        ctx.problems = problems
        ctx.heads = heads
        ctx.shapes = [(p.shape, p.dtype) for p in packed]
        return tuple(contexts)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_contexts: Tensor | None) -> tuple[Tensor | None, ...]:
        heads = ctx.heads
        grads = [torch.empty(shape, dtype=dtype) for shape, dtype in ctx.shapes]
        written = [[False, False, False] for _ in grads]
        saved = ctx.saved_tensors
        for index, (problem, grad_context) in enumerate(
            zip(ctx.problems, grad_contexts, strict=True)
        ):
            query, key, value, probabilities, keep, kept = saved[6 * index : 6 * index + 6]
            query_grad = grads[problem.query_source]
            memory_grad = grads[problem.key_value_source]
            written[problem.query_source][0] = True
            written[problem.key_value_source][1] = written[problem.key_value_source][2] = True
            if grad_context is None:
                for target, part in ((query_grad, 0), (memory_grad, 1), (memory_grad, 2)):
                    _part(target, part).zero_()
                continue
            scale = 1.0 / math.sqrt(query.shape[-1])
            grad_heads = _head_major(grad_context, heads)
            _into_part(_part(memory_grad, 2), heads, torch.bmm(kept.transpose(1, 2), grad_heads))
            grad_kept = torch.bmm(grad_heads, value.transpose(1, 2)).mul_(keep)
            grad_scores = torch._softmax_backward_data(
                grad_kept, probabilities, -1, probabilities.dtype
            )
            _into_part(_part(query_grad, 0), heads, torch.bmm(grad_scores, key), scale)
            _into_part(_part(memory_grad, 1), heads, torch.bmm(grad_scores.transpose(1, 2), query))
        for grad, parts in zip(grads, written, strict=True):
            for part, done in enumerate(parts):
                if not done:
                    _part(grad, part).zero_()
        needed = ctx.needs_input_grad[2:]
        return (None, None, *(g if need else None for g, need in zip(grads, needed, strict=True)))
