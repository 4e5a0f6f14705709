"""The two-stream ViLBERT encoder (`bert.*` in checkpoints): embeddings, layers, poolers.

The encoder schedule follows the original `BertEncoder.forward` for any lists of co-attention
positions: before co-attention block k, run the text layers up to `text_layer_ids[k]` and the
visual layers up to `vision_layer_ids[k]` (exclusive); after the last block, run the rest.
With the 12-in-1 lists: T0…T5 → C0 → (T6, V0) → C1 → … → C5 → V5 → T11.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model.attention import AttentionImplementation, additive_mask
from twelve.model.config import ViLBERTConfig
from twelve.model.dropout import Dropout
from twelve.model.inputs import AttentionMaps, EncoderOutput, ViLBERTInputs
from twelve.model.layers import BiAttention, CoAttentionLayer, SelfAttention, TransformerLayer
from twelve.model.reused_memory import Embedding, Linear

EmbeddingT = TypeVar("EmbeddingT", bound=nn.Embedding)


def _table(
    kind: type[EmbeddingT], rows: int, width: int, padding_idx: int | None = None
) -> EmbeddingT:
    """An embedding table left uninitialised: `MultiTaskViLBERT.reset_parameters` initialises
    it. (Torch's own init would run on the meta device too, where it imports `torch._dynamo`:
    seconds added to `twelve model info`.)"""
    return kind(rows, width, padding_idx=padding_idx, _weight=torch.empty(rows, width))


class TextEmbeddings(nn.Module):
    """Word + position + segment embeddings; the task token goes right after [CLS] (no
    position or segment embedding of its own); then LayerNorm and dropout."""

    def __init__(self, config: ViLBERTConfig) -> None:
        super().__init__()
        text = config.text
        self.word_embeddings = _table(Embedding, text.vocab_size, text.hidden_size, padding_idx=0)
        self.position_embeddings = _table(
            nn.Embedding, text.max_position_embeddings, text.hidden_size
        )
        self.token_type_embeddings = _table(nn.Embedding, text.type_vocab_size, text.hidden_size)
        self.LayerNorm = nn.LayerNorm(text.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(text.hidden_dropout)
        self.task_embeddings: nn.Embedding | None = (
            _table(nn.Embedding, config.task_token_table_size, text.hidden_size)
            if config.task_tokens
            else None
        )

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor, task_token_ids: Tensor | None
    ) -> Tensor:
        """(B, T) ids → (B, T+1, W) with a task token, else (B, T, W)."""
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text length {length} exceeds max_position_embeddings "
                f"{self.position_embeddings.num_embeddings}"
            )
        positions = torch.arange(length, device=input_ids.device)
        embedded = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        if task_token_ids is not None:
            assert self.task_embeddings is not None
            task = self.task_embeddings(task_token_ids).to(embedded.dtype)
            embedded = torch.cat([embedded[:, :1], task, embedded[:, 1:]], dim=1)
        return self.dropout(self.LayerNorm(embedded))


class ImageEmbeddings(nn.Module):
    """Region feature projection + 5-d location projection, LayerNorm, dropout."""

    def __init__(self, config: ViLBERTConfig) -> None:
        super().__init__()
        vision = config.vision
        self.image_embeddings = Linear(vision.feature_size, vision.hidden_size)
        self.image_location_embeddings = Linear(5, vision.hidden_size)
        self.LayerNorm = nn.LayerNorm(vision.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(vision.embedding_dropout)

    def forward(self, features: Tensor, locations: Tensor) -> Tensor:
        """(B, R, D) features and (B, R, 5) locations → (B, R, W)."""
        embedded = self.image_embeddings(features) + self.image_location_embeddings(locations)
        return self.dropout(self.LayerNorm(embedded))


class Encoder(nn.Module):
    """Text layers (`layer`), visual layers (`v_layer`) and co-attention blocks (`c_layer`)."""

    def __init__(self, config: ViLBERTConfig) -> None:
        super().__init__()
        text, vision, co = config.text, config.vision, config.co_attention
        eps = config.layer_norm_eps
        self.layer = nn.ModuleList(
            TransformerLayer(
                text.hidden_size,
                text.num_heads,
                text.intermediate_size,
                text.attention_dropout,
                text.hidden_dropout,
                eps,
            )
            for _ in range(text.num_layers)
        )
        self.v_layer = nn.ModuleList(
            TransformerLayer(
                vision.hidden_size,
                vision.num_heads,
                vision.intermediate_size,
                vision.attention_dropout,
                vision.hidden_dropout,
                eps,
            )
            for _ in range(vision.num_layers)
        )
        self.c_layer = nn.ModuleList(
            CoAttentionLayer(
                width=co.hidden_size,
                heads=co.num_heads,
                vision_width=vision.hidden_size,
                vision_intermediate=vision.intermediate_size,
                vision_attn_dropout=vision.attention_dropout,
                vision_dropout=vision.hidden_dropout,
                text_width=text.hidden_size,
                text_intermediate=text.intermediate_size,
                text_attn_dropout=text.attention_dropout,
                text_dropout=text.hidden_dropout,
                eps=eps,
            )
            for _ in range(co.num_layers)
        )
        self.schedule = list(zip(co.vision_layer_ids, co.text_layer_ids, strict=True))

    def forward(
        self,
        text: Tensor,
        text_mask: Tensor,
        vision: Tensor,
        vision_mask: Tensor,
        *,
        need_text: bool = True,
        need_vision: bool = True,
        need_weights: bool = False,
    ) -> EncoderOutput:
        """Run the schedule; the text side of the last co-attention block and the layers after
        it run only for the streams a caller needs (`need_text`, `need_vision`)."""
        maps: dict[str, list[Tensor]] = {"t": [], "v": [], "tv": [], "vt": []}

        def keep(kind: str, probabilities: Tensor | None) -> None:
            if probabilities is not None:
                maps[kind].append(probabilities)

        v_start = t_start = 0
        last = len(self.c_layer) - 1
        for count, (block, (v_end, t_end)) in enumerate(
            zip(self.c_layer, self.schedule, strict=True)
        ):
            for index in range(t_start, t_end):
                text, probabilities = self.layer[index](text, text_mask, need_weights)
                keep("t", probabilities)
            for index in range(v_start, v_end):
                vision, probabilities = self.v_layer[index](vision, vision_mask, need_weights)
                keep("v", probabilities)
            # The text side of the last block only feeds text outputs.
            block_text = need_text or count < last
            vision, new_text, text_to_vision, vision_to_text = block(
                vision, vision_mask, text, text_mask, need_weights, block_text
            )
            if new_text is not None:
                text = new_text
            keep("tv", text_to_vision)
            keep("vt", vision_to_text)
            v_start, t_start = v_end, t_end
        if need_vision:
            for index in range(v_start, len(self.v_layer)):
                vision, probabilities = self.v_layer[index](vision, vision_mask, need_weights)
                keep("v", probabilities)
        if need_text:
            for index in range(t_start, len(self.layer)):
                text, probabilities = self.layer[index](text, text_mask, need_weights)
                keep("t", probabilities)
        attentions = (
            AttentionMaps(
                text=tuple(maps["t"]),
                vision=tuple(maps["v"]),
                text_to_vision=tuple(maps["tv"]),
                vision_to_text=tuple(maps["vt"]),
            )
            if need_weights
            else None
        )
        return EncoderOutput(
            text_states=text if need_text else None,
            vision_states=vision if need_vision else None,
            attentions=attentions,
        )


class Pooler(nn.Module):
    """First position → Linear → ReLU (`t_pooler` on [CLS], `v_pooler` on the global region)."""

    def __init__(self, width: int, pooled: int) -> None:
        super().__init__()
        self.dense = Linear(width, pooled)

    def forward(self, states: Tensor) -> Tensor:
        """(B, L, W) → (B, pooled)."""
        return F.relu(self.dense(states[:, 0]))


class ViLBERTEncoder(nn.Module):
    """Embeddings, the co-attention encoder and both poolers (`bert.*` in checkpoints)."""

    def __init__(self, config: ViLBERTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.v_embeddings = ImageEmbeddings(config)
        self.encoder = Encoder(config)
        self.t_pooler = Pooler(config.text.hidden_size, config.pooled_size)
        self.v_pooler = Pooler(config.vision.hidden_size, config.pooled_size)

    def set_attention_implementation(self, implementation: AttentionImplementation) -> None:
        """Choose SDPA (default, fast) or the eager computation for every attention block."""
        if implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"attention implementation must be 'sdpa' or 'eager', got {implementation!r}"
            )
        for module in self.modules():
            if isinstance(module, SelfAttention | BiAttention):
                module.implementation = implementation

    def forward(
        self,
        inputs: ViLBERTInputs,
        task_token_ids: Tensor | None,
        *,
        need_text: bool = True,
        need_vision: bool = True,
        need_weights: bool = False,
    ) -> EncoderOutput:
        """Embed both streams and run the encoder; `task_token_ids` (B, 1) or None."""
        text = self.embeddings(inputs.input_ids, inputs.token_type_ids, task_token_ids)
        text_mask = inputs.text_mask
        if task_token_ids is not None:
            # As the original: a column of ones is prepended (the [CLS] column is always 1).
            text_mask = torch.cat([torch.ones_like(text_mask[:, :1]), text_mask], dim=1)
        vision = self.v_embeddings(inputs.region_features, inputs.region_locations)
        mask_dtype = self.embeddings.LayerNorm.weight.dtype
        return self.encoder(
            text,
            additive_mask(text_mask, mask_dtype),
            vision,
            additive_mask(inputs.region_mask, mask_dtype),
            need_text=need_text,
            need_vision=need_vision,
            need_weights=need_weights,
        )

    def pool(self, text_states: Tensor, vision_states: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled text ([CLS]) and vision (global region) vectors, each (B, pooled)."""
        return self.t_pooler(text_states), self.v_pooler(vision_states)
