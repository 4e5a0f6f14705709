"""Analytic matrix-multiply FLOP counts of one forward (and backward) pass.

Counts the multiply-adds of every Linear and of attention's two batched products (QKᵀ and PV),
two FLOPs each, for what `MultiTaskViLBERT.forward(inputs, task)` actually computes: the
encoder schedule (skipping, for region heads, the text side of the last co-attention block and
the text layers after it),
the poolers when the head reads them, and that task's head only. Element-wise work (LayerNorm,
GeLU, softmax, dropout) is not counted, as usual for model FLOP figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from twelve.model.config import (
    AlignmentHeadSpec,
    AnswerHeadSpec,
    ClassifierHeadSpec,
    PairHeadSpec,
    RegionHeadSpec,
    ViLBERTConfig,
)


@dataclass(frozen=True)
class FlopCount:
    """Forward and backward FLOPs of one pass over a batch."""

    forward: int
    backward: int

    @property
    def training(self) -> int:
        """Forward + backward."""
        return self.forward + self.backward


def count_flops(
    config: ViLBERTConfig, *, batch: int, text_length: int, regions: int, task: str
) -> FlopCount:
    """FLOPs of `forward(inputs, task)` for (batch, text_length, regions) inputs, and of its
    backward (weight and input gradients of every product, except the input gradient of the
    region-feature and location projections, whose inputs need none)."""
    text, vision, co = config.text, config.vision, config.co_attention
    spec = config.heads[config.head_for(task)]
    reads_pooled = not isinstance(spec, RegionHeadSpec)
    tokens = text_length + (1 if config.task_tokens else 0)
    b = batch

    def linear(rows: int, fan_in: int, fan_out: int) -> int:
        return 2 * rows * fan_in * fan_out

    def attention(queries: int, keys: int, width: int) -> int:
        return 2 * 2 * b * queries * keys * width  # QKᵀ and PV

    def transformer_layer(length: int, width: int, inner: int) -> int:
        rows = b * length
        return (
            linear(rows, width, 3 * width)
            + attention(length, length, width)
            + linear(rows, width, width)
            + linear(rows, width, inner)
            + linear(rows, inner, width)
        )

    text_layer = transformer_layer(tokens, text.hidden_size, text.intermediate_size)
    vision_layer = transformer_layer(regions, vision.hidden_size, vision.intermediate_size)
    co_vision_side = (
        linear(b * regions, vision.hidden_size, 3 * co.hidden_size)
        + linear(b * tokens, text.hidden_size, 3 * co.hidden_size)
        + attention(regions, tokens, co.hidden_size)
        + linear(b * regions, co.hidden_size, vision.hidden_size)
        + linear(b * regions, vision.hidden_size, vision.intermediate_size)
        + linear(b * regions, vision.intermediate_size, vision.hidden_size)
    )
    co_text_side = (
        attention(tokens, regions, co.hidden_size)
        + linear(b * tokens, co.hidden_size, text.hidden_size)
        + linear(b * tokens, text.hidden_size, text.intermediate_size)
        + linear(b * tokens, text.intermediate_size, text.hidden_size)
    )
    last_text_id = co.text_layer_ids[-1] if co.text_layer_ids else 0
    text_layers_run = text.num_layers if reads_pooled else last_text_id
    region_input = linear(b * regions, vision.feature_size, vision.hidden_size) + linear(
        b * regions, 5, vision.hidden_size
    )
    forward = (
        region_input
        + text_layers_run * text_layer
        + vision.num_layers * vision_layer
        + co.num_layers * co_vision_side
        + (co.num_layers - (0 if reads_pooled else 1)) * co_text_side
    )
    pooled = config.pooled_size
    if reads_pooled:
        forward += linear(b, text.hidden_size, pooled) + linear(b, vision.hidden_size, pooled)
    if isinstance(spec, AnswerHeadSpec):
        forward += linear(b, pooled, spec.hidden_size) + linear(
            b, spec.hidden_size, spec.num_answers
        )
    elif isinstance(spec, PairHeadSpec):
        pairs = b // 2
        forward += linear(pairs, 2 * pooled, spec.hidden_size) + linear(
            pairs, spec.hidden_size, spec.num_classes
        )
    elif isinstance(spec, ClassifierHeadSpec):
        forward += linear(b, pooled, spec.num_classes)
    elif isinstance(spec, AlignmentHeadSpec):
        forward += linear(b, pooled, 1)
    else:
        forward += linear(b * regions, vision.hidden_size, 1)
    backward = 2 * forward - region_input
    return FlopCount(forward=forward, backward=backward)
