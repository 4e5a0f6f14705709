"""Task datasets: from a task spec, its files and a tokenizer to a dataset of typed batches.

`open_task_dataset` is the one way to get a training or validation dataset of any of the twelve
tasks; `open_ranking_dataset` builds the retrieval evaluation over captions × images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twelve.datasets.answers import AnswerVocabulary
from twelve.datasets.hard_negatives import HardNegativePool
from twelve.datasets.parsers import annotated_images, read_split
from twelve.datasets.records import (
    AnyRecord,
    CaptionImage,
    GuessWhatGame,
    NLVR2Example,
    PointingQA,
    RefSentence,
    SNLIVEExample,
)
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks.answering import AnswerDataset
from twelve.datasets.tasks.base import (
    ItemKey,
    RegionSource,
    TaskConfigError,
    TaskData,
    TaskDataset,
    drop_excluded,
    load_image_id_list,
)
from twelve.datasets.tasks.pointing import PointingDataset, guesswhat_items, visual7w_items
from twelve.datasets.tasks.referring import ReferringDataset
from twelve.datasets.tasks.retrieval import RetrievalDataset, RetrievalRankingDataset
from twelve.datasets.tasks.verification import NLVR2Dataset, SNLIVEDataset
from twelve.datasets.tokenizer import BertTokenizer

__all__ = [
    "ItemKey",
    "TaskData",
    "TaskDataset",
    "open_ranking_dataset",
    "open_task_dataset",
    "read_records",
]


def read_records(spec: TaskSpec, root: Path, split: str) -> list[AnyRecord]:
    """Parse a split; `a+b` concatenates splits (e.g. COCO Karpathy `train+restval`)."""
    records: list[AnyRecord] = []
    for part in split.split("+"):
        records.extend(read_split(spec.name, root, part))
    return records


def _clean_key(record: AnyRecord) -> str:
    """The image id the original's test-id lists use (numeric ids, not feature-store keys)."""
    if isinstance(record, NLVR2Example):
        return record.left_image_id
    return str(record.image_id)


def _cleaned(
    spec: TaskSpec, split: str, records: list[Any], data: TaskData, *, training: bool
) -> list[Any]:
    """Drop test images from training data ("clean" sets), where the original did."""
    if data.exclude_images is None or spec.clean_ids is None:
        return records
    if not training and split not in spec.clean_splits:
        return records
    excluded = load_image_id_list(data.exclude_images)
    keys = [_clean_key(record) for record in records]
    return drop_excluded(spec.name, split, records, keys, excluded)


def _region_source(spec: TaskSpec, data: TaskData, *, ground_truth: bool) -> RegionSource:
    gt_store = None
    if ground_truth and data.gt_features is not None:
        gt_store = data.open_features(data.gt_features)
    return RegionSource(spec.name, data.open_features(data.features), spec.max_regions, gt_store)


def open_task_dataset(
    spec: TaskSpec,
    data: TaskData,
    split: str,
    tokenizer: BertTokenizer,
    *,
    training: bool | None = None,
) -> TaskDataset[Any, Any]:
    """The dataset of one task split; `training` defaults to `split == spec.train_split`.

    Training mode decides what the original decided by split: GT-box merging for RefCOCO*,
    thresholded IoU targets, hard negatives for retrieval, and "clean" image removal.
    """
    training = split == spec.train_split if training is None else training
    records = _cleaned(spec, split, read_records(spec, data.root, split), data, training=training)
    kind = type(records[0])
    common: dict[str, Any] = {"tokenizer": tokenizer, "training": training}
    if spec.head == "answer":
        vocabulary = AnswerVocabulary.load(data.answer_vocab) if data.answer_vocab else None
        return AnswerDataset(
            spec,
            split,
            records,
            regions=_region_source(spec, data, ground_truth=False),
            vocabulary=vocabulary,
            **common,
        )
    if kind is CaptionImage:
        pool = None
        if training:
            if data.hard_negatives is None:
                raise TaskConfigError(
                    f"{spec.name}: retrieval training needs hard_negatives; compute them with "
                    "`twelve data hard-negatives`"
                )
            pool = HardNegativePool.load(data.hard_negatives)
        return RetrievalDataset(
            spec,
            split,
            records,
            regions=_region_source(spec, data, ground_truth=False),
            hard_negatives=pool,
            **common,
        )
    if kind is RefSentence:
        merge = spec.gt_boxes == "all" or (spec.gt_boxes == "train" and training)
        return ReferringDataset(
            spec,
            split,
            records,
            regions=_region_source(spec, data, ground_truth=merge),
            **common,
        )
    if kind in (PointingQA, GuessWhatGame):
        if data.gt_features is None:
            raise TaskConfigError(
                f"{spec.name}: pointing needs gt_features, the store of features extracted at "
                "the ground-truth boxes"
            )
        if kind is PointingQA:
            items = visual7w_items(records)
        else:
            images = annotated_images(spec.name, data.root)
            order = {key: [obj.object_id for obj in image.objects] for key, image in images.items()}
            items = guesswhat_items(records, order)
        return PointingDataset(
            spec,
            split,
            items,
            regions=_region_source(spec, data, ground_truth=True),
            **common,
        )
    if kind is NLVR2Example:
        return NLVR2Dataset(
            spec,
            split,
            records,
            regions=_region_source(spec, data, ground_truth=False),
            **common,
        )
    if kind is SNLIVEExample:
        return SNLIVEDataset(
            spec,
            split,
            records,
            regions=_region_source(spec, data, ground_truth=False),
            **common,
        )
    raise TaskConfigError(f"{spec.name}: no task dataset for {kind.__name__} records")


def open_ranking_dataset(
    spec: TaskSpec,
    data: TaskData,
    split: str,
    tokenizer: BertTokenizer,
    *,
    max_images: int | None = 1000,
    captions_per_image: int | None = 5,
) -> RetrievalRankingDataset:
    """Retrieval evaluation: every caption against every image of the first `max_images`."""
    if spec.head != "alignment":
        raise TaskConfigError(f"{spec.name} is not a retrieval task")
    records: Sequence[Any] = read_records(spec, data.root, split)
    return RetrievalRankingDataset(
        spec,
        split,
        records,
        tokenizer=tokenizer,
        regions=_region_source(spec, data, ground_truth=False),
        max_images=max_images,
        captions_per_image=captions_per_image,
    )
