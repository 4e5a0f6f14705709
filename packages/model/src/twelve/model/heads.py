"""Task heads built from their specs, and the pretraining heads (`cls.*`, `linguisic_logit`).

Each task head declares what it reads (`reads = "pooled"` or `"vision"`) so the model computes
only what the requested task needs. Module layouts keep the original parameter names
(`logit_fc.0/2/3`, plain `weight`/`bias`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model.attention import MASK_VALUE
from twelve.model.config import (
    AlignmentHeadSpec,
    AnswerHeadSpec,
    ClassifierHeadSpec,
    HeadSpec,
    PairHeadSpec,
    RegionHeadSpec,
    ViLBERTConfig,
)
from twelve.model.dropout import Dropout
from twelve.model.reused_memory import Linear

HeadReads = Literal["pooled", "vision"]


@dataclass(frozen=True)
class HeadInputs:
    """What a head may read: the fused pooled vector (after dropout) or the visual states."""

    pooled: Tensor | None
    vision_states: Tensor | None
    region_mask: Tensor


def _simple_classifier(in_width: int, hidden: int, out: int, eps: float) -> nn.Sequential:
    """Linear → GeLU → LayerNorm → Linear (the original `SimpleClassifier`, names 0/2/3)."""
    return nn.Sequential(
        Linear(in_width, hidden),
        nn.GELU(),
        nn.LayerNorm(hidden, eps=eps),
        Linear(hidden, out),
    )


class AnswerHead(nn.Module):
    """Answer classifier over the fused pooled vector: (B, P) → (B, answers)."""

    reads: HeadReads = "pooled"

    def __init__(self, spec: AnswerHeadSpec, pooled: int, eps: float) -> None:
        super().__init__()
        self.logit_fc = _simple_classifier(pooled, spec.hidden_size, spec.num_answers, eps)

    def forward(self, inputs: HeadInputs) -> Tensor:
        """Answer logits."""
        assert inputs.pooled is not None
        return self.logit_fc(inputs.pooled)


class PairHead(nn.Module):
    """Two-image classifier: consecutive rows (2B, P) are joined into (B, 2P) (NLVR2)."""

    reads: HeadReads = "pooled"

    def __init__(self, spec: PairHeadSpec, pooled: int, eps: float) -> None:
        super().__init__()
        self.logit_fc = _simple_classifier(2 * pooled, spec.hidden_size, spec.num_classes, eps)

    def forward(self, inputs: HeadInputs) -> Tensor:
        """Pair logits (B, classes) from 2B rows."""
        pooled = inputs.pooled
        assert pooled is not None
        if pooled.shape[0] % 2:
            raise ValueError(
                f"the pair head needs an even number of rows (two images per example), "
                f"got {pooled.shape[0]}"
            )
        return self.logit_fc(pooled.reshape(pooled.shape[0] // 2, 2 * pooled.shape[1]))


class ClassifierHead(Linear):
    """Linear classifier over the fused pooled vector: (B, P) → (B, classes)."""

    reads: HeadReads = "pooled"

    def __init__(self, spec: ClassifierHeadSpec, pooled: int) -> None:
        super().__init__(pooled, spec.num_classes)

    def forward(self, inputs: HeadInputs) -> Tensor:  # type: ignore[override]
        """Class logits."""
        assert inputs.pooled is not None
        return super().forward(inputs.pooled)


class AlignmentHead(Linear):
    """One alignment score per (text, image) row: (B, P) → (B,)."""

    reads: HeadReads = "pooled"

    def __init__(self, pooled: int) -> None:
        super().__init__(pooled, 1)

    def forward(self, inputs: HeadInputs) -> Tensor:  # type: ignore[override]
        """Alignment scores."""
        assert inputs.pooled is not None
        return super().forward(inputs.pooled).squeeze(-1)


class RegionHead(Linear):
    """One score per region from the visual states, −10000 added on padded regions: (B, R)."""

    reads: HeadReads = "vision"

    def __init__(self, vision_width: int) -> None:
        super().__init__(vision_width, 1)

    def forward(self, inputs: HeadInputs) -> Tensor:  # type: ignore[override]
        """Region logits (the original adds the mask in float32)."""
        assert inputs.vision_states is not None
        scores = super().forward(inputs.vision_states).squeeze(-1)
        padding = (1.0 - inputs.region_mask.float()) * MASK_VALUE
        return scores + padding


TaskHead = AnswerHead | PairHead | ClassifierHead | AlignmentHead | RegionHead


def build_head(spec: HeadSpec, config: ViLBERTConfig) -> TaskHead:
    """Instantiate the module for one head spec."""
    pooled, eps = config.pooled_size, config.layer_norm_eps
    if isinstance(spec, AnswerHeadSpec):
        return AnswerHead(spec, pooled, eps)
    if isinstance(spec, PairHeadSpec):
        return PairHead(spec, pooled, eps)
    if isinstance(spec, ClassifierHeadSpec):
        return ClassifierHead(spec, pooled)
    if isinstance(spec, AlignmentHeadSpec):
        return AlignmentHead(pooled)
    if isinstance(spec, RegionHeadSpec):
        return RegionHead(config.vision.hidden_size)
    raise TypeError(f"unknown head spec {spec!r}")


# ----------------------------------------------------------------------- pretraining heads


class PredictionTransform(nn.Module):
    """Linear → GeLU → LayerNorm before a prediction decoder."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, hidden: Tensor) -> Tensor:
        """(…, W) → (…, W)."""
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class MaskedLMHead(nn.Module):
    """Masked-language-model head; its decoder weight is the word-embedding matrix (tied)."""

    def __init__(self, word_embeddings: nn.Embedding, eps: float) -> None:
        super().__init__()
        vocab, width = word_embeddings.weight.shape
        self.bias = nn.Parameter(word_embeddings.weight.new_zeros(vocab))
        self.transform = PredictionTransform(width, eps)
        self.decoder = nn.Linear(width, vocab, bias=False)
        self.decoder.weight = word_embeddings.weight

    def forward(self, text_states: Tensor) -> Tensor:
        """(B, T, W) → (B, T, vocab)."""
        return self.decoder(self.transform(text_states)) + self.bias


class ImagePredictionHead(nn.Module):
    """Region-class prediction head of pretraining (`cls.imagePredictions`)."""

    def __init__(self, width: int, targets: int, eps: float) -> None:
        super().__init__()
        self.transform = PredictionTransform(width, eps)
        self.decoder = nn.Linear(width, targets)

    def forward(self, vision_states: Tensor) -> Tensor:
        """(B, R, W) → (B, R, targets)."""
        return self.decoder(self.transform(vision_states))


class PretrainingHeads(nn.Module):
    """The pretraining heads (`cls`): masked LM, image-text alignment, region classes."""

    def __init__(self, config: ViLBERTConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        self.predictions = MaskedLMHead(word_embeddings, eps)
        self.bi_seq_relationship = nn.Linear(config.pooled_size, 2)
        self.imagePredictions = ImagePredictionHead(
            config.vision.hidden_size, config.image_target_size, eps
        )
        self.dropout = Dropout(config.head_dropout)
