"""Answer classification (VQA v2, Visual Genome QA, GQA) with the original's soft targets.

VQA: the 10 human answers scored 0/0.3/0.6/0.9/1.0 over the answer vocabulary (bottom-up recipe,
original-system.md §3.3); GQA and VG QA: one answer with score 1.0 (VG answers VQA-normalised).
Records read from the original's `*_target.pkl` already carry labels and scores in the imported
vocabulary's order, and those are used as they are. Test splits without answers give batches
whose `target` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twelve.datasets.answers import AnswerVocabulary, single_answer_target, vqa_target
from twelve.datasets.batch import AnswerBatch, model_input_fields
from twelve.datasets.records import AnswerTarget, GQAQuestion, VGQAPair, VQAQuestion
from twelve.datasets.regions import ImageRegions
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks.base import RegionSource, TaskConfigError, TaskDataset
from twelve.datasets.tokenizer import BertTokenizer

AnswerRecord = VQAQuestion | GQAQuestion | VGQAPair


@dataclass(frozen=True)
class AnswerExample:
    """One question with its image's regions and sparse soft target (None when unanswered)."""

    example_id: str
    image_id: str
    token_ids: np.ndarray
    regions: ImageRegions
    target: AnswerTarget | None


def _example_id(record: AnswerRecord) -> str:
    if isinstance(record, VGQAPair):
        return str(record.qa_id)
    return str(record.question_id)


def _has_answer(record: AnswerRecord) -> bool:
    if record.target is not None:
        return True
    if isinstance(record, VQAQuestion):
        return record.answers is not None
    return record.answer is not None


def answer_target(record: AnswerRecord, vocabulary: AnswerVocabulary) -> AnswerTarget | None:
    """The record's soft target over `vocabulary` (precomputed ones are taken as they are)."""
    if record.target is not None:
        return record.target
    if isinstance(record, VQAQuestion):
        return None if record.answers is None else vqa_target(record.answers, vocabulary)
    if record.answer is None:
        return None
    return single_answer_target(record.answer, vocabulary, normalize=isinstance(record, VGQAPair))


class AnswerDataset(TaskDataset[AnswerExample, AnswerBatch]):
    """Questions about images answered from a fixed vocabulary (VQA-style tasks)."""

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        records: Sequence[AnswerRecord],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        vocabulary: AnswerVocabulary | None,
        training: bool,
    ) -> None:
        super().__init__(spec, split, training=training)
        self.records = list(records)
        answered = [_has_answer(record) for record in self.records]
        self.labelled = all(answered)
        if any(answered) and not self.labelled:
            missing = self.records[answered.index(False)]
            raise TaskConfigError(
                f"{spec.name}/{split}: some questions have answers and some do not (e.g. "
                f"{_example_id(missing)}); a split is either annotated or not"
            )
        if training and not self.labelled:
            raise TaskConfigError(f"{spec.name}/{split}: cannot train on a split without answers")
        needs_vocabulary = self.labelled and any(r.target is None for r in self.records)
        if needs_vocabulary and vocabulary is None:
            raise TaskConfigError(
                f"{spec.name}/{split}: targets need an answer vocabulary; build one with "
                "`twelve data vocab` and pass it as answer_vocab"
            )
        if vocabulary is not None and len(vocabulary) != spec.num_labels:
            raise TaskConfigError(
                f"{spec.name}: the answer vocabulary has {len(vocabulary)} answers but the "
                f"task's head has {spec.num_labels} outputs; use the matching vocabulary or "
                "override num_labels"
            )
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.regions = regions
        regions.check([record.feature_keys[0] for record in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def example(self, index: int, seed: int) -> AnswerExample:
        record = self.records[index]
        key = record.feature_keys[0]
        target = None
        if self.labelled:
            target = answer_target(record, self.vocabulary)  # type: ignore[arg-type]
        return AnswerExample(
            example_id=_example_id(record),
            image_id=key,
            token_ids=self.tokenizer.encode(record.question, self.spec.max_text_length),
            regions=self.regions.detected(key),
            target=target,
        )

    def collate(self, examples: Sequence[AnswerExample]) -> AnswerBatch:
        target = None
        if self.labelled:
            classes = self.spec.num_labels or 0
            dense = np.zeros((len(examples), classes), dtype=np.float32)
            for row, example in enumerate(examples):
                sparse = example.target
                if sparse is not None and sparse.labels:
                    labels = np.asarray(sparse.labels, dtype=np.int64)
                    if labels.max() >= classes:
                        raise TaskConfigError(
                            f"{self.spec.name}: example {example.example_id} has answer label "
                            f"{int(labels.max())} but the head has {classes} outputs"
                        )
                    dense[row, labels] = sparse.scores
            target = torch.from_numpy(dense)
        return AnswerBatch(
            task=self.spec.name,
            **model_input_fields(
                [example.token_ids for example in examples],
                [example.regions for example in examples],
            ),
            example_ids=tuple(example.example_id for example in examples),
            target=target,
            image_ids=tuple(example.image_id for example in examples),
        )
