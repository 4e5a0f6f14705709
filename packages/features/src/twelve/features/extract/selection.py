"""Which detected regions become an image's features: the original 12-in-1 selection rule.

For every object class, non-maximum suppression runs over all proposals with that class's
scores; a proposal's confidence is its best score in a class where it survives (and beats
the threshold). Proposals are ranked by that confidence and kept between `min_boxes` and
`max_boxes` of them (original-system.md §7; the original always kept exactly 100).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torchvision.ops import nms


class BoxSelection(BaseModel):
    """How many regions to keep per image and how they compete (the `--min-boxes` … flags)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_boxes: Annotated[int, Field(ge=0)] = 10
    """Keep at least this many (the best ones) even when fewer pass `conf`."""
    max_boxes: Annotated[int, Field(gt=0)] = 100
    """Keep at most this many."""
    conf: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """A class score must exceed this to count (the original's `--confidence_threshold`)."""
    nms: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    """IoU above which a lower-scored box is suppressed within a class."""

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.min_boxes > self.max_boxes:
            raise ValueError(
                f"min_boxes ({self.min_boxes}) must not exceed max_boxes ({self.max_boxes})"
            )
        return self


@dataclass(frozen=True)
class SelectedRegions:
    """The kept proposals, best first, with the class and score each was ranked by."""

    indices: torch.Tensor
    """(K,) int64 rows of the proposals that were kept."""
    object_ids: torch.Tensor
    """(K,) int64 class (column of the background-first probabilities) of each kept row."""
    object_scores: torch.Tensor
    """(K,) float32 that class's probability."""


def best_surviving_scores(
    boxes: torch.Tensor, class_probs: torch.Tensor, *, conf: float, nms_iou: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box's best class score among the classes where it survives per-class NMS.

    `class_probs` is (N, C) with background in column 0 (never considered). Returns
    (scores, classes), both (N,); score 0 and class 0 mark a box that survived nowhere
    above `conf`. Equal to running NMS for every class over all boxes; classes and boxes
    that cannot change the result are skipped (a box below every candidate's score cannot
    suppress a candidate), which keeps 1600 classes cheap.
    """
    n, num_classes = class_probs.shape
    boxes = boxes.float()
    best = torch.zeros(n, dtype=class_probs.dtype, device=class_probs.device)
    best_class = torch.zeros(n, dtype=torch.int64, device=class_probs.device)
    if n == 0:
        return best, best_class
    floor = torch.tensor(conf, dtype=class_probs.dtype, device=class_probs.device)
    for c in range(1, num_classes):
        scores = class_probs[:, c]
        candidate = scores > torch.maximum(best, floor)
        if not bool(candidate.any()):
            continue
        lowest = scores[candidate].min()
        involved = torch.nonzero(scores >= lowest).squeeze(1)
        kept = involved[nms(boxes[involved], scores[involved], nms_iou)]
        improves = kept[candidate[kept]]
        best[improves] = scores[improves]
        best_class[improves] = c
    return best, best_class


def select_regions(
    boxes: torch.Tensor, class_probs: torch.Tensor, selection: BoxSelection
) -> SelectedRegions:
    """Rank proposals by best surviving class score and keep `min_boxes`…`max_boxes` of them.

    Boxes that pass (score above `conf` in some class where they survive NMS) come first,
    best first; if fewer than `min_boxes` pass, the rest are filled with the boxes that
    passed nowhere, by their highest foreground probability.
    """
    scores, classes = best_surviving_scores(
        boxes, class_probs, conf=selection.conf, nms_iou=selection.nms
    )
    passed = torch.nonzero(scores > 0).squeeze(1)
    passed = passed[torch.argsort(scores[passed], descending=True, stable=True)]
    keep = passed[: selection.max_boxes]
    if keep.numel() < selection.min_boxes:
        failed = torch.nonzero(scores <= 0).squeeze(1)
        fg_score, fg_class = class_probs[failed, 1:].max(dim=1)
        order = torch.argsort(fg_score, descending=True, stable=True)
        fill = failed[order[: selection.min_boxes - keep.numel()]]
        scores = scores.clone()
        classes = classes.clone()
        scores[failed] = fg_score
        classes[failed] = fg_class + 1
        keep = torch.cat([keep, fill])
    return SelectedRegions(
        indices=keep,
        object_ids=classes[keep],
        object_scores=scores[keep].float(),
    )
