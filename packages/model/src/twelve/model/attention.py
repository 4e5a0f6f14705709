"""Multi-head attention with the original's additive-mask numerics: SDPA fast path, eager fallback.

The original adds (1 − mask)·(−10000) to the scaled scores, so a padded key keeps a tiny
weight and a fully padded row becomes a uniform average rather than NaN. Passing that same
float mask to `scaled_dot_product_attention` as `attn_mask` keeps those numerics; the eager
path (matmul, softmax, dropout, matmul) runs only when attention probabilities are requested
or when a model is switched to it — and, on the CPU, for training with attention dropout,
where SDPA would fall back to its unfused math path anyway.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model.dropout import dropout as apply_dropout

AttentionImplementation = Literal["sdpa", "eager"]

MASK_VALUE = -10000.0
"""Additive score for padded positions, as in the original."""


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, S) 1/0 mask → (B, 1, 1, S) additive mask: 0 for real keys, −10000 for padding."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * MASK_VALUE


def split_heads(projected: Tensor, parts: int, heads: int) -> tuple[Tensor, ...]:
    """(B, L, parts·H·D) packed projections → `parts` views of shape (B, H, L, D), no copy."""
    batch, length, width = projected.shape
    head_dim = width // (parts * heads)
    views = projected.view(batch, length, parts, heads, head_dim).unbind(dim=2)
    return tuple(view.transpose(1, 2) for view in views)


def merge_heads(context: Tensor) -> Tensor:
    """(B, H, L, D) → (B, L, H·D); free when the kernel already wrote (B, L, H, D) memory."""
    batch, heads, length, head_dim = context.shape
    return context.transpose(1, 2).reshape(batch, length, heads * head_dim)


def attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor,
    *,
    dropout: float,
    implementation: AttentionImplementation,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention over (B, H, L, D) tensors with an additive (B,1,1,S) mask.

    Returns the (B, L, H·D) context and, with `need_weights`, the (B, H, L, S) probabilities
    (which forces the eager computation).
    """
    mask = mask.to(query.dtype)
    if implementation == "sdpa" and not need_weights and not _cpu_dropout(query, dropout):
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout
        )
        return merge_heads(context), None
    scores = torch.matmul(query, key.transpose(-1, -2))
    scaled = torch.add(mask, scores, alpha=1.0 / math.sqrt(query.shape[-1]))
    probabilities = torch.softmax(scaled, dim=-1)
    kept = apply_dropout(probabilities, dropout, training=dropout > 0.0)
    context = torch.matmul(kept, value)
    return merge_heads(context), probabilities if need_weights else None


def _cpu_dropout(query: Tensor, dropout: float) -> bool:
    """On the CPU, SDPA with dropout falls back to its unfused math path (with a slow mask);
    the explicit computation with the cheap dropout mask is faster there."""
    return dropout > 0.0 and query.device.type == "cpu" and not torch.compiler.is_compiling()
