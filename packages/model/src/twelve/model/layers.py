"""The encoder's building blocks, with the original module names so checkpoints load as they are.

- `TransformerLayer`: a post-LN BERT layer (`attention.self`, `attention.output`,
  `intermediate`, `output`); the text stream (768 wide, FFN 3072) and the visual stream
  (1024 wide, FFN 1024) are both instances.
- `CoAttentionLayer`: the ViLBERT connection layer (`biattention`, `biOutput`, `v_*` and `t_*`
  feed-forward blocks): text attends to regions and regions attend to text, each stream then
  runs its own feed-forward block.
Query, key and value projections are packed into one GEMM (`PackedLinear`); their checkpoint
names stay `query`/`key`/`value` (`query1`…`value2` in co-attention).
"""

from __future__ import annotations

from torch import Tensor, nn

from twelve.model.attention import AttentionImplementation, attend, split_heads
from twelve.model.dropout import Dropout
from twelve.model.packed import PackedLinear, expose_packed_parts
from twelve.model.packed_attention import (
    AttentionMemory,
    PackedProblem,
    attend_packed,
    packed_attention_applies,
)
from twelve.model.residual_norm import ResidualNormMemory, residual_output
from twelve.model.reused_memory import GeluMemory, Linear, ResidualHandoff, gelu


class SelfAttention(nn.Module):
    """Multi-head self-attention (`attention.self`): packed Q/K/V, SDPA or eager."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.implementation: AttentionImplementation = "sdpa"
        self.qkv = PackedLinear(width, width, ("query", "key", "value"))
        self.attention_memory = AttentionMemory()
        expose_packed_parts(self)

    def forward(
        self,
        hidden: Tensor,
        mask: Tensor,
        need_weights: bool = False,
        handoff: ResidualHandoff | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, L, W) states and (B, 1, 1, L) additive mask → (B, L, W) context, probabilities
        (`handoff`: for the residual norm that reads `hidden` too, `ResidualHandoff`)."""
        dropout = self.dropout if self.training else 0.0
        qkv = self.qkv
        if _fused_training(self.implementation, need_weights, dropout, hidden, qkv.weight):
            problem = PackedProblem(0, 0, mask, dropout)
            packed = (qkv(hidden, with_bias=False, handoff=handoff),)
            memory = self.attention_memory
            return attend_packed(packed, (problem,), self.heads, memory, (qkv.bias,))[0], None
        query, key, value = split_heads(qkv(hidden, handoff=handoff), 3, self.heads)
        return attend(
            query,
            key,
            value,
            mask,
            dropout=dropout,
            implementation=self.implementation,
            need_weights=need_weights,
        )


def _fused_training(
    implementation: AttentionImplementation, need_weights: bool, dropout: float, *sources: Tensor
) -> bool:
    """Whether attention runs through `attend_packed`: the default implementation, CPU training
    (float32, or bf16 autocast where the attention kernel serves it) with attention dropout and
    no probabilities asked for (`sources`: the inputs and weights of the projections)."""
    return (
        implementation == "sdpa"
        and not need_weights
        and dropout > 0.0
        and packed_attention_applies(*sources)
    )


class ResidualOutput(nn.Module):
    """Linear → dropout → LayerNorm(x + residual): the post-LN sublayer output."""

    def __init__(self, in_width: int, out_width: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.dense = Linear(in_width, out_width)
        self.LayerNorm = nn.LayerNorm(out_width, eps=eps)
        self.dropout = Dropout(dropout)
        self.norm_memory = ResidualNormMemory()

    def forward(
        self, hidden: Tensor, residual: Tensor, handoff: ResidualHandoff | None = None
    ) -> Tensor:
        """Project `hidden`, add `residual`, normalize (`handoff`: the one the linear layer
        reading `residual` got, `ResidualHandoff`)."""
        dropout, training = self.dropout.p, self.training
        return residual_output(
            hidden,
            self.dense,
            residual,
            self.LayerNorm,
            dropout,
            training,
            self.norm_memory,
            handoff,
        )


class Intermediate(nn.Module):
    """Feed-forward expansion with exact (erf) GeLU."""

    def __init__(self, width: int, intermediate: int) -> None:
        super().__init__()
        self.dense = Linear(width, intermediate)
        self.gelu_memory = GeluMemory()

    def forward(self, hidden: Tensor, handoff: ResidualHandoff | None = None) -> Tensor:
        """(…, W) → (…, I) (`handoff`: see `ResidualHandoff`)."""
        return gelu(self.dense(hidden, handoff), self.gelu_memory)


class Attention(nn.Module):
    """Self-attention followed by its residual output (`attention`)."""

    def __init__(self, width: int, heads: int, attn_dropout: float, dropout: float, eps: float):
        super().__init__()
        self.self = SelfAttention(width, heads, attn_dropout)
        self.output = ResidualOutput(width, width, dropout, eps)

    def forward(
        self, hidden: Tensor, mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend, project, add and normalize."""
        handoff = ResidualHandoff()
        context, probabilities = self.self(hidden, mask, need_weights, handoff)
        return self.output(context, hidden, handoff), probabilities


class TransformerLayer(nn.Module):
    """One post-LN BERT layer (`BertLayer` / `BertImageLayer`)."""

    def __init__(
        self,
        width: int,
        heads: int,
        intermediate: int,
        attn_dropout: float,
        dropout: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.attention = Attention(width, heads, attn_dropout, dropout, eps)
        self.intermediate = Intermediate(width, intermediate)
        self.output = ResidualOutput(intermediate, width, dropout, eps)

    def forward(
        self, hidden: Tensor, mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """(B, L, W) → (B, L, W) and the attention probabilities when asked for."""
        attended, probabilities = self.attention(hidden, mask, need_weights)
        handoff = ResidualHandoff()
        return self.output(self.intermediate(attended, handoff), attended, handoff), probabilities


class BiAttention(nn.Module):
    """Both co-attention directions (`biattention`): text→regions and regions→text."""

    def __init__(
        self,
        vision_width: int,
        text_width: int,
        width: int,
        heads: int,
        text_queries_dropout: float,
        vision_queries_dropout: float,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.text_queries_dropout = text_queries_dropout
        self.vision_queries_dropout = vision_queries_dropout
        self.implementation: AttentionImplementation = "sdpa"
        self.vision_qkv = PackedLinear(vision_width, width, ("query1", "key1", "value1"))
        self.text_qkv = PackedLinear(text_width, width, ("query2", "key2", "value2"))
        self.attention_memory = AttentionMemory()
        expose_packed_parts(self)

    def forward(
        self,
        vision: Tensor,
        vision_mask: Tensor,
        text: Tensor,
        text_mask: Tensor,
        need_weights: bool = False,
        need_text: bool = True,
        handoffs: tuple[ResidualHandoff | None, ResidualHandoff | None] = (None, None),
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """Return the region-side context (regions attend to text), the text-side context
        (text attends to regions; None without `need_text`) and, when asked, both
        probability maps (`handoffs`: the vision and text projections', `ResidualHandoff`)."""
        vision_handoff, text_handoff = handoffs
        training = self.training
        text_dropout = self.text_queries_dropout if training else 0.0
        vision_dropout = self.vision_queries_dropout if training else 0.0
        vision_qkv, text_qkv = self.vision_qkv, self.text_qkv
        if _fused_training(
            self.implementation,
            need_weights,
            max(text_dropout, vision_dropout),
            vision,
            vision_qkv.weight,
            text,
            text_qkv.weight,
        ):
            # Text queries first, as the explicit path below (same dropout draws).
            problems = (PackedProblem(1, 0, vision_mask, text_dropout),) if need_text else ()
            problems += (PackedProblem(0, 1, text_mask, vision_dropout),)
            contexts = attend_packed(
                (
                    vision_qkv(vision, with_bias=False, handoff=vision_handoff),
                    text_qkv(text, with_bias=False, handoff=text_handoff),
                ),
                problems,
                self.heads,
                self.attention_memory,
                (vision_qkv.bias, text_qkv.bias),
            )
            return contexts[-1], contexts[0] if need_text else None, None, None
        vision_projected = vision_qkv(vision, handoff=vision_handoff)
        text_projected = text_qkv(text, handoff=text_handoff)
        v_query, v_key, v_value = split_heads(vision_projected, 3, self.heads)
        t_query, t_key, t_value = split_heads(text_projected, 3, self.heads)
        text_context: Tensor | None = None
        text_to_vision: Tensor | None = None
        if need_text:
            text_context, text_to_vision = attend(
                t_query,
                v_key,
                v_value,
                vision_mask,
                dropout=text_dropout,
                implementation=self.implementation,
                need_weights=need_weights,
            )
        vision_context, vision_to_text = attend(
            v_query,
            t_key,
            t_value,
            text_mask,
            dropout=vision_dropout,
            implementation=self.implementation,
            need_weights=need_weights,
        )
        return vision_context, text_context, text_to_vision, vision_to_text


class BiOutput(nn.Module):
    """Residual outputs of both co-attention directions (`biOutput`).

    `q_dense1`/`q_dense2` are the original's dead projections: present (frozen) so original
    checkpoints load strictly and the parameter count matches, never used in the computation.
    """

    def __init__(
        self,
        width: int,
        vision_width: int,
        text_width: int,
        vision_dropout: float,
        text_dropout: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.dense1 = Linear(width, vision_width)
        self.dropout1 = Dropout(vision_dropout)
        self.LayerNorm1 = nn.LayerNorm(vision_width, eps=eps)
        self.q_dense1 = nn.Linear(width, vision_width)
        self.dense2 = Linear(width, text_width)
        self.dropout2 = Dropout(text_dropout)
        self.LayerNorm2 = nn.LayerNorm(text_width, eps=eps)
        self.q_dense2 = nn.Linear(width, text_width)
        for dead in (self.q_dense1, self.q_dense2):
            dead.requires_grad_(False)
        self.norm_memory1 = ResidualNormMemory()
        self.norm_memory2 = ResidualNormMemory()

    def forward(
        self,
        vision_context: Tensor,
        vision: Tensor,
        text_context: Tensor | None,
        text: Tensor,
        handoffs: tuple[ResidualHandoff | None, ResidualHandoff | None] = (None, None),
    ) -> tuple[Tensor, Tensor | None]:
        """Project each context back to its stream's width, add the residual, normalize
        (`handoffs`: those the vision and text projections got, `ResidualHandoff`)."""
        training = self.training
        vision_out = residual_output(
            vision_context,
            self.dense1,
            vision,
            self.LayerNorm1,
            self.dropout1.p,
            training,
            self.norm_memory1,
            handoffs[0],
        )
        if text_context is None:
            return vision_out, None
        text_out = residual_output(
            text_context,
            self.dense2,
            text,
            self.LayerNorm2,
            self.dropout2.p,
            training,
            self.norm_memory2,
            handoffs[1],
        )
        return vision_out, text_out


class CoAttentionLayer(nn.Module):
    """One ViLBERT connection layer (`BertConnectionLayer`)."""

    def __init__(
        self,
        *,
        width: int,
        heads: int,
        vision_width: int,
        vision_intermediate: int,
        vision_attn_dropout: float,
        vision_dropout: float,
        text_width: int,
        text_intermediate: int,
        text_attn_dropout: float,
        text_dropout: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.biattention = BiAttention(
            vision_width,
            text_width,
            width,
            heads,
            text_queries_dropout=vision_attn_dropout,
            vision_queries_dropout=text_attn_dropout,
        )
        self.biOutput = BiOutput(width, vision_width, text_width, vision_dropout, text_dropout, eps)
        self.v_intermediate = Intermediate(vision_width, vision_intermediate)
        self.v_output = ResidualOutput(vision_intermediate, vision_width, vision_dropout, eps)
        self.t_intermediate = Intermediate(text_width, text_intermediate)
        self.t_output = ResidualOutput(text_intermediate, text_width, text_dropout, eps)

    def forward(
        self,
        vision: Tensor,
        vision_mask: Tensor,
        text: Tensor,
        text_mask: Tensor,
        need_weights: bool = False,
        need_text: bool = True,
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """Exchange information between the streams; returns new (vision, text) states and the
        text→regions and regions→text probabilities when asked for. Without `need_text` the
        text side (its attention, output and feed-forward block) is skipped: None."""
        streams = (ResidualHandoff(), ResidualHandoff())
        vision_context, text_context, text_to_vision, vision_to_text = self.biattention(
            vision, vision_mask, text, text_mask, need_weights, need_text, streams
        )
        vision_att, text_att = self.biOutput(vision_context, vision, text_context, text, streams)
        vision_ffn, text_ffn = ResidualHandoff(), ResidualHandoff()
        vision_out = self.v_output(
            self.v_intermediate(vision_att, vision_ffn), vision_att, vision_ffn
        )
        text_out = (
            self.t_output(self.t_intermediate(text_att, text_ffn), text_att, text_ffn)
            if text_att is not None
            else None
        )
        return vision_out, text_out, text_to_vision, vision_to_text
