"""Verification: NLVR2 (a statement about two images) and SNLI-VE (entailment by an image).

NLVR2 (original-system.md §3.10): each image of the pair gets its own global token and regions;
collate flattens B examples to 2B rows (img0, img1 per example) with the sentence repeated; the
target is one-hot over (False, True) for the original's BCE. SNLI-VE (§3.11): only the hypothesis
is encoded; one-hot over (contradiction, neutral, entailment); a "-" gold label trains as all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twelve.datasets.batch import ClassifierBatch, PairBatch, model_input_fields
from twelve.datasets.records import SNLIVE_LABELS, NLVR2Example, SNLIVEExample
from twelve.datasets.regions import ImageRegions
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks.base import RegionSource, TaskDataset
from twelve.datasets.tokenizer import BertTokenizer

NO_LABEL = -1
"""`label` of an example without a gold class (its one-hot target is all zeros)."""


@dataclass(frozen=True)
class VerificationExample:
    """One statement with its image(s) and class (NO_LABEL when none)."""

    example_id: str
    token_ids: np.ndarray
    regions: tuple[ImageRegions, ...]
    label: int | None


def _one_hot(labels: Sequence[int], classes: int) -> torch.Tensor:
    target = torch.zeros(len(labels), classes, dtype=torch.float32)
    for row, label in enumerate(labels):
        if label != NO_LABEL:
            target[row, label] = 1.0
    return target


class NLVR2Dataset(TaskDataset[VerificationExample, PairBatch]):
    """NLVR2 statements over image pairs."""

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        records: Sequence[NLVR2Example],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        training: bool,
    ) -> None:
        super().__init__(spec, split, training=training)
        self.records = list(records)
        self.tokenizer = tokenizer
        self.regions = regions
        self.labelled = all(record.label is not None for record in self.records)
        regions.check([key for record in self.records for key in record.feature_keys])

    def __len__(self) -> int:
        return len(self.records)

    def example(self, index: int, seed: int) -> VerificationExample:
        record = self.records[index]
        return VerificationExample(
            example_id=record.identifier,
            token_ids=self.tokenizer.encode(record.sentence, self.spec.max_text_length),
            regions=tuple(self.regions.detected(key) for key in record.feature_keys),
            label=None if record.label is None else int(record.label),
        )

    def collate(self, examples: Sequence[VerificationExample]) -> PairBatch:
        token_ids = [example.token_ids for example in examples for _ in example.regions]
        regions = [item for example in examples for item in example.regions]
        labels = [NO_LABEL if e.label is None else e.label for e in examples]
        labelled = self.labelled
        return PairBatch(
            task=self.spec.name,
            **model_input_fields(token_ids, regions),
            example_ids=tuple(example.example_id for example in examples),
            target=_one_hot(labels, 2) if labelled else None,
            label=torch.tensor(labels, dtype=torch.int64) if labelled else None,
        )


class SNLIVEDataset(TaskDataset[VerificationExample, ClassifierBatch]):
    """SNLI-VE hypotheses about Flickr30k images."""

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        records: Sequence[SNLIVEExample],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        training: bool,
    ) -> None:
        super().__init__(spec, split, training=training)
        self.records = list(records)
        self.tokenizer = tokenizer
        self.regions = regions
        regions.check([record.feature_keys[0] for record in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def example(self, index: int, seed: int) -> VerificationExample:
        record = self.records[index]
        label = None if record.gold_label is None else SNLIVE_LABELS.index(record.gold_label)
        return VerificationExample(
            example_id=record.pair_id,
            token_ids=self.tokenizer.encode(record.hypothesis, self.spec.max_text_length),
            regions=(self.regions.detected(record.feature_keys[0]),),
            label=label,
        )

    def collate(self, examples: Sequence[VerificationExample]) -> ClassifierBatch:
        labels = [NO_LABEL if e.label is None else e.label for e in examples]
        return ClassifierBatch(
            task=self.spec.name,
            **model_input_fields(
                [example.token_ids for example in examples],
                [example.regions[0] for example in examples],
            ),
            example_ids=tuple(example.example_id for example in examples),
            target=_one_hot(labels, len(SNLIVE_LABELS)),
            label=torch.tensor(labels, dtype=torch.int64),
        )
