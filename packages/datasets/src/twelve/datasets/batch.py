"""Typed tensor batches per head kind, and the padding that builds them.

Model inputs carry the names the model's `ViLBERTInputs` uses (contracts.md), so the trainer can
hand `batch.model_inputs()` straight to the model. Text and regions are padded to the longest
example of the batch, not to the task's maximum. Layouts with several (text, image) pairs per
example are flattened here: 4-way retrieval gives 4B rows (positive first in each group of 4),
NLVR2 gives 2B rows (img0, img1 of each example, sentence repeated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch

from twelve.datasets.regions import ImageRegions
from twelve.datasets.tokenizer import PAD_ID

MODEL_INPUT_NAMES = (
    "input_ids",
    "token_type_ids",
    "text_mask",
    "region_features",
    "region_locations",
    "region_mask",
)
"""Field names the model consumes (contracts.md), identical in `twelve.model.ViLBERTInputs`."""


@dataclass(frozen=True, kw_only=True)
class TaskBatch:
    """Model inputs shared by every task; subclasses add targets and what metrics need."""

    task: str
    input_ids: torch.Tensor
    """(rows, T) int64: `[CLS] … [SEP]` then 0-padding, without the task token."""
    token_type_ids: torch.Tensor
    """(rows, T) int64 zeros."""
    text_mask: torch.Tensor
    """(rows, T) int64: 1 = real token."""
    region_features: torch.Tensor
    """(rows, R, D) float32; row 0 of each image is the global token."""
    region_locations: torch.Tensor
    """(rows, R, 5) float32."""
    region_mask: torch.Tensor
    """(rows, R) int64: 1 = real region."""
    example_ids: tuple[str, ...]
    """One id per example (question id, caption index, ref-sentence id, ...), as strings."""

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The six model-input tensors by their contract names."""
        return {name: getattr(self, name) for name in MODEL_INPUT_NAMES}

    @property
    def batch_size(self) -> int:
        """Number of examples (not flattened rows)."""
        return len(self.example_ids)

    @property
    def num_rows(self) -> int:
        """Number of (text, image) rows the model runs on."""
        return int(self.input_ids.shape[0])

    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Self:
        changes = {
            field.name: fn(value)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Self:
        """Move every tensor to a device (pinned batches copy asynchronously with non_blocking)."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Self:
        """Page-lock every tensor, for fast host-to-GPU copies (torchdata's PinMemory calls this)."""
        return self._map_tensors(lambda t: t.pin_memory())


@dataclass(frozen=True, kw_only=True)
class AnswerBatch(TaskBatch):
    """VQA, VG QA, GQA: soft answer targets over the task's answer vocabulary."""

    target: torch.Tensor | None
    """(B, C) float32 soft scores; None on test splits without answers."""
    image_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AlignmentBatch(TaskBatch):
    """4-way retrieval training/validation: B examples flattened to 4B rows, positive first."""

    target: torch.Tensor
    """(B,) int64 index of the positive among each group's pairs (always 0, as the original)."""
    pairs_per_example: int
    image_ids: tuple[str, ...]
    """(4B) image id of every row."""


@dataclass(frozen=True, kw_only=True)
class RankingBatch(TaskBatch):
    """Retrieval evaluation: (caption, image) pairs whose scores fill a captions × images matrix."""

    caption_index: torch.Tensor
    """(B,) int64 row of the score matrix."""
    image_index: torch.Tensor
    """(B,) int64 column of the score matrix."""


@dataclass(frozen=True, kw_only=True)
class RegionBatch(TaskBatch):
    """Referring expressions: a score per region, targets from IoU with the referred box."""

    target: torch.Tensor
    """(B, R) float32: training keeps IoU ≥ threshold (else 0); evaluation the raw IoU."""
    iou: torch.Tensor
    """(B, R) float32 raw IoU of every region with the referred box (accuracy: > 0.5)."""


@dataclass(frozen=True, kw_only=True)
class PointingBatch(TaskBatch):
    """Visual7W and GuessWhat: region scores read at candidate boxes."""

    candidate_index: torch.Tensor
    """(B, K) int64 positions in the region axis of the candidate boxes (padding: 0)."""
    candidate_mask: torch.Tensor
    """(B, K) int64: 1 = real candidate."""
    target: torch.Tensor
    """(B, K) float32 IoU of each candidate with the answer box, < threshold set to 0."""
    answer_index: torch.Tensor
    """(B,) int64 candidate that is the answer (for accuracy and result files)."""


@dataclass(frozen=True, kw_only=True)
class PairBatch(TaskBatch):
    """NLVR2: B examples flattened to 2B rows (img0, img1), the sentence repeated."""

    target: torch.Tensor | None
    """(B, 2) float32 one-hot (False, True), as the original's BCE; None without labels."""
    label: torch.Tensor | None
    """(B,) int64 0/1."""


@dataclass(frozen=True, kw_only=True)
class ClassifierBatch(TaskBatch):
    """SNLI-VE: 3-way classification (contradiction, neutral, entailment)."""

    target: torch.Tensor | None
    """(B, 3) float32 one-hot; None without labels."""
    label: torch.Tensor | None
    """(B,) int64 class index."""


_SHARED_MEMORY: ContextVar[bool] = ContextVar("twelve_batches_in_shared_memory", default=False)


@contextmanager
def batches_in_shared_memory() -> Iterator[None]:
    """Build region features directly in shared memory while inside this block.

    Worker processes hand batches to the trainer through shared memory; allocating the large
    feature tensor there from the start saves copying it when the batch is sent.
    """
    token = _SHARED_MEMORY.set(True)
    try:
        yield
    finally:
        _SHARED_MEMORY.reset(token)


def pad_token_ids(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id sequences at the end with 0 to the longest; returns (input_ids, text_mask)."""
    length = max(len(ids) for ids in sequences)
    input_ids = np.full((len(sequences), length), PAD_ID, dtype=np.int64)
    text_mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = ids
        text_mask[row, : len(ids)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(text_mask)


def pad_regions(
    regions: Sequence[ImageRegions],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-pad region sets to the longest; returns (features, locations, mask)."""
    count = max(item.num_regions for item in regions)
    dim = regions[0].feature_dim
    # Only the padding is zeroed: the features are the bulk of a batch's bytes.
    features_tensor = torch.empty((len(regions), count, dim), dtype=torch.float32)
    if _SHARED_MEMORY.get():
        features_tensor.share_memory_()
    features = features_tensor.numpy()
    locations = np.zeros((len(regions), count, 5), dtype=np.float32)
    mask = np.zeros((len(regions), count), dtype=np.int64)
    for row, item in enumerate(regions):
        if item.feature_dim != dim:
            raise ValueError(
                f"image {item.image_id!r} has {item.feature_dim}-d features, the batch "
                f"{dim}-d; all images of a task must come from one extractor"
            )
        n = item.num_regions
        features[row, :n] = item.features
        features[row, n:] = 0.0
        locations[row, :n] = item.locations
        mask[row, :n] = 1
    return features_tensor, torch.from_numpy(locations), torch.from_numpy(mask)


def pad_rows(rows: Sequence[np.ndarray], length: int, fill: float = 0.0) -> np.ndarray:
    """Stack 1-d arrays padded at the end with `fill` to `length` (targets over regions)."""
    dtype = rows[0].dtype if rows else np.float32
    out = np.full((len(rows), length), fill, dtype=dtype)
    for row, values in enumerate(rows):
        out[row, : len(values)] = values
    return out


def model_input_fields(
    token_ids: Sequence[np.ndarray], regions: Sequence[ImageRegions]
) -> dict[str, torch.Tensor]:
    """The six padded model-input tensors for aligned lists of texts and images (one per row)."""
    if len(token_ids) != len(regions):
        raise ValueError(f"{len(token_ids)} texts but {len(regions)} images in one batch")
    input_ids, text_mask = pad_token_ids(token_ids)
    features, locations, region_mask = pad_regions(regions)
    return {
        "input_ids": input_ids,
        "token_type_ids": torch.zeros_like(input_ids),
        "text_mask": text_mask,
        "region_features": features,
        "region_locations": locations,
        "region_mask": region_mask,
    }
