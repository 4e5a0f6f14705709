"""Pointing (Visual7W, GuessWhat?!): choose the answer box among candidate ground-truth boxes.

Original-system.md §3.8–3.9. Regions are the detections followed by the image's ground-truth-box
features (in every split), cut to R. The ground-truth rows are in ascending object-id order, so a
candidate's region index is (number of detected rows) + (its position in the image's sorted
object ids). Candidates are ordered by ascending id, as the original sorted them. The target of
a candidate is the IoU of its region box with the answer box, zeroed below 0.5; the answer is
the argmax of that target (the original's accuracy compares argmaxes).

The original read vision logits at `101 + position`, assuming exactly 100 detections + global;
here the index counts the detected rows actually present, which is the same for 100 detections
and stays right for any other count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twelve.datasets.batch import PointingBatch, model_input_fields, pad_rows
from twelve.datasets.errors import DatasetError
from twelve.datasets.records import Box, GuessWhatGame, PointingQA
from twelve.datasets.regions import ImageRegions, box_iou
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks.base import RegionSource, TaskDataset
from twelve.datasets.tokenizer import BertTokenizer


@dataclass(frozen=True)
class PointingItem:
    """A pointing question reduced to what the dataset needs, whatever its source format."""

    example_id: str
    image_key: str
    text: str
    candidate_positions: tuple[int, ...]
    """Row of each candidate among the image's ground-truth regions (sorted object ids)."""
    answer_box: Box


@dataclass(frozen=True)
class PointingExample:
    """One pointing question with its regions and candidates."""

    example_id: str
    token_ids: np.ndarray
    regions: ImageRegions
    candidate_index: np.ndarray
    target: np.ndarray


def visual7w_items(records: Sequence[PointingQA]) -> list[PointingItem]:
    """Visual7W QA pairs with candidates in ascending box-id order."""
    items = []
    for record in records:
        order = sorted(zip(record.candidate_box_ids, record.candidate_positions, strict=True))
        items.append(
            PointingItem(
                example_id=str(record.qa_id),
                image_key=record.feature_keys[0],
                text=record.question,
                candidate_positions=tuple(position for _, position in order),
                answer_box=record.answer_box,
            )
        )
    return items


def guesswhat_text(game: GuessWhatGame) -> str:
    """The whole dialogue as the original flattened it: "start {q} answer {a} stop " per turn."""
    return "".join(f"start {turn.question} answer {turn.answer} stop " for turn in game.turns)


def guesswhat_items(
    games: Sequence[GuessWhatGame], object_order: Mapping[str, Sequence[int]]
) -> list[PointingItem]:
    """GuessWhat games with candidates = the game's objects by ascending id.

    `object_order[image_key]` lists the object ids of the image's ground-truth regions in row
    order (every object of every game on that image, ascending; `parsers.annotated_images`).
    """
    items = []
    for game in games:
        key = game.feature_keys[0]
        rows = object_order.get(key)
        if rows is None:
            raise DatasetError(
                f"guesswhat: image {key!r} of game {game.game_id} has no object list"
            )
        row_of = {object_id: row for row, object_id in enumerate(rows)}
        positions = []
        for obj in sorted(game.objects, key=lambda obj: obj.object_id):
            if obj.object_id not in row_of:
                raise DatasetError(
                    f"guesswhat: object {obj.object_id} of game {game.game_id} is not in the "
                    f"object list of image {key!r}"
                )
            positions.append(row_of[obj.object_id])
        items.append(
            PointingItem(
                example_id=str(game.game_id),
                image_key=key,
                text=guesswhat_text(game),
                candidate_positions=tuple(positions),
                answer_box=game.target_box,
            )
        )
    return items


class PointingDataset(TaskDataset[PointingExample, PointingBatch]):
    """Candidate-box pointing with the original's IoU targets at the candidates."""

    def __init__(
        self,
        spec: TaskSpec,
        split: str,
        items: Sequence[PointingItem],
        *,
        tokenizer: BertTokenizer,
        regions: RegionSource,
        training: bool,
    ) -> None:
        super().__init__(spec, split, training=training)
        if regions.gt_features is None:
            raise DatasetError(
                f"{spec.name}: pointing needs the ground-truth-box feature store (gt_features)"
            )
        self.items = list(items)
        self.tokenizer = tokenizer
        self.regions = regions
        regions.check([item.image_key for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, seed: int) -> PointingExample:
        item = self.items[index]
        regions, detected = self.regions.with_ground_truth(item.image_key)
        candidate_index = detected + np.asarray(item.candidate_positions, dtype=np.int64)
        if candidate_index.max() >= regions.num_regions:
            raise DatasetError(
                f"{self.spec.name}: example {item.example_id} points at region "
                f"{int(candidate_index.max())} but image {item.image_key!r} has "
                f"{regions.num_regions} regions (R = {self.spec.max_regions}, {detected} "
                "detected); the ground-truth store lacks boxes or R is too small"
            )
        iou = box_iou(regions.boxes[candidate_index], np.asarray(item.answer_box, np.float32))
        threshold = self.spec.iou_threshold or 0.0
        target = np.where(iou < threshold, 0.0, iou).astype(np.float32)
        return PointingExample(
            example_id=item.example_id,
            token_ids=self.tokenizer.encode(item.text, self.spec.max_text_length),
            regions=regions,
            candidate_index=candidate_index,
            target=target,
        )

    def collate(self, examples: Sequence[PointingExample]) -> PointingBatch:
        count = max(len(example.candidate_index) for example in examples)
        index = pad_rows([example.candidate_index for example in examples], count, fill=0)
        mask = pad_rows(
            [np.ones(len(example.candidate_index), dtype=np.int64) for example in examples], count
        )
        target = pad_rows([example.target for example in examples], count)
        return PointingBatch(
            task=self.spec.name,
            **model_input_fields(
                [example.token_ids for example in examples],
                [example.regions for example in examples],
            ),
            example_ids=tuple(example.example_id for example in examples),
            candidate_index=torch.from_numpy(index),
            candidate_mask=torch.from_numpy(mask),
            target=torch.from_numpy(target),
            answer_index=torch.tensor(
                [int(np.argmax(example.target)) for example in examples], dtype=torch.int64
            ),
        )
