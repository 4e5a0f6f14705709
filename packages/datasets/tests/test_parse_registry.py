"""The parser registry: every task parses its official files; common error behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelve.datasets.errors import (
    DatasetError,
    EmptySplitError,
    MissingDataError,
    UnknownSplitError,
    UnknownTaskError,
)
from twelve.datasets.parsers import (
    count_examples,
    count_images,
    example_unit,
    read_split,
    splits,
    tasks,
)

TWELVE_TASKS = {
    "vqa",
    "vg_qa",
    "visual7w",
    "retrieval_coco",
    "retrieval_flickr30k",
    "refcoco",
    "refcoco+",
    "refcocog",
    "nlvr2",
    "snli_ve",
    "gqa",
    "guesswhat",
}
ISSUE_SPLITS = {
    "vqa": ("train2014", "val2014", "test-dev2015", "test2015"),
    "retrieval_coco": ("train", "restval", "val", "test"),
    "refcoco": ("train", "val", "testA", "testB"),
    "refcocog": ("train", "val", "test"),
    "gqa": ("train", "val", "testdev", "test", "challenge"),
    "guesswhat": ("train", "valid", "test"),
    "nlvr2": ("train", "dev", "test1"),
    "snli_ve": ("train", "dev", "test"),
    "visual7w": ("train", "val", "test"),
    "conceptual_captions": ("train", "val"),
    "vg_qa": ("all", "train", "val"),
}
UNITS = {
    "vqa": "question",
    "gqa": "question",
    "vg_qa": "QA pair",
    "visual7w": "QA pair",
    "retrieval_coco": "caption",
    "refcoco": "(ref, sentence) pair",
    "guesswhat": "game",
    "nlvr2": "record",
    "snli_ve": "record",
    "conceptual_captions": "row",
}


def test_all_tasks_are_registered() -> None:
    assert set(tasks()) == TWELVE_TASKS | {"conceptual_captions"}


@pytest.mark.parametrize(("task", "expected"), ISSUE_SPLITS.items())
def test_split_names_are_the_datasets_own(task: str, expected: tuple[str, ...]) -> None:
    assert splits(task)[: len(expected)] == expected


@pytest.mark.parametrize(("task", "unit"), UNITS.items())
def test_example_units(task: str, unit: str) -> None:
    assert example_unit(task) == unit


@pytest.mark.parametrize("task", sorted(TWELVE_TASKS | {"conceptual_captions"}))
def test_every_split_of_every_task_parses(tmp_path: Path, official_files, task: str) -> None:
    official_files.write_task(task, tmp_path)
    for split in splits(task):
        if task == "gqa" and split == "trainval":
            continue  # needs more than 3,000 questions; covered in test_parse_gqa
        if task == "vg_qa" and split == "train":
            continue  # needs more than 5,000 pairs; covered in test_parse_vg_qa
        records = read_split(task, tmp_path, split)
        assert count_examples(task, records) > 0
        assert count_images(records) > 0
        for record in records:
            assert all(isinstance(key, str) and key for key in record.feature_keys)


def test_unknown_task_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownTaskError, match="refcoco\\+"):
        read_split("vqa3", tmp_path, "train")


def test_unknown_split_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownSplitError, match="train2014"):
        read_split("vqa", tmp_path, "train")


@pytest.mark.parametrize("task", sorted(TWELVE_TASKS | {"conceptual_captions"}))
def test_missing_files_raise_missing_data_error(tmp_path: Path, task: str) -> None:
    with pytest.raises(MissingDataError) as caught:
        read_split(task, tmp_path, splits(task)[0])
    assert str(tmp_path) in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)


def test_empty_split_is_an_error(tmp_path: Path, official_files) -> None:
    official_files.write_karpathy(tmp_path, "coco", splits={"train": (1, 2)})
    with pytest.raises(EmptySplitError, match="retrieval_coco: split 'test' has no examples"):
        read_split("retrieval_coco", tmp_path, "test")
    (tmp_path / "snli_ve_dev.jsonl").write_text("\n")
    with pytest.raises(EmptySplitError):
        read_split("snli_ve", tmp_path, "dev")


def test_images_without_captions_count_as_empty(tmp_path: Path, official_files) -> None:
    official_files.write_karpathy(tmp_path, "coco", splits={"val": (1,)}, captions_per_image=0)
    with pytest.raises(EmptySplitError):
        read_split("retrieval_coco", tmp_path, "val")


def test_every_error_is_a_dataset_error() -> None:
    for error in (EmptySplitError, MissingDataError, UnknownSplitError, UnknownTaskError):
        assert issubclass(error, DatasetError)
