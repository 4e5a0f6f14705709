"""Referring expressions (RefCOCO, RefCOCO+, RefCOCOg): which region does the sentence refer to.

Original-system.md §3.7: one example per (ref, sentence); the target of every region (global
token included) is its IoU with the referred box (+1-pixel convention). Training appends the
image's ground-truth-box regions after the detections (then cuts to R) and zeroes IoU below 0.5;
evaluation uses detections only and keeps the raw IoU (accuracy: chosen region's IoU > 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twelve.datasets.batch import RegionBatch, model_input_fields, pad_rows
from twelve.datasets.records import RefSentence
from twelve.datasets.regions import ImageRegions, box_iou
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks.base import RegionSource, TaskDataset
from twelve.datasets.tokenizer import BertTokenizer


@dataclass(frozen=True)
class ReferringExample:
    """One expression with its image's regions and their IoU with the referred box."""

    example_id: str
    token_ids: np.ndarray
    regions: ImageRegions
    iou: np.ndarray
    target: np.ndarray


class ReferringDataset(TaskDataset[ReferringExample, RegionBatch]):
    """RefCOCO-family examples with the original's IoU targets.

    Ground-truth-box regions are appended when `regions` has a GT store (the builder gives one
    in training only, as the original merged them on the train split only).
    """

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        records: Sequence[RefSentence],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        training: bool,
    ) -> None:
        super().__init__(spec, split, training=training)
        self.records = list(records)
        self.tokenizer = tokenizer
        self.regions = regions
        self.use_ground_truth = regions.gt_features is not None and (
            spec.gt_boxes == "all" or (spec.gt_boxes == "train" and training)
        )
        regions.check([record.feature_keys[0] for record in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def example(self, index: int, seed: int) -> ReferringExample:
        record = self.records[index]
        key = record.feature_keys[0]
        if self.regions.gt_features is not None:
            regions, _ = self.regions.with_ground_truth(key)
        else:
            regions = self.regions.detected(key)
        iou = box_iou(regions.boxes, np.asarray(record.box, dtype=np.float32))
        target = iou
        if self.training and self.spec.iou_threshold is not None:
            target = np.where(iou < self.spec.iou_threshold, 0.0, iou).astype(np.float32)
        return ReferringExample(
            example_id=str(record.sent_id),
            token_ids=self.tokenizer.encode(record.sentence, self.spec.max_text_length),
            regions=regions,
            iou=iou,
            target=target,
        )

    def collate(self, examples: Sequence[ReferringExample]) -> RegionBatch:
        inputs = model_input_fields(
            [example.token_ids for example in examples], [example.regions for example in examples]
        )
        length = inputs["region_mask"].shape[1]
        return RegionBatch(
            task=self.spec.name,
            **inputs,
            example_ids=tuple(example.example_id for example in examples),
            target=torch.from_numpy(pad_rows([e.target for e in examples], length)),
            iou=torch.from_numpy(pad_rows([e.iou for e in examples], length)),
        )
