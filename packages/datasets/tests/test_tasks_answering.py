"""VQA, GQA and VG QA datasets: soft targets, test splits without answers, cleaning, errors."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from twelve.datasets.answers import AnswerVocabulary
from twelve.datasets.batch import AnswerBatch
from twelve.datasets.errors import EmptySplitError
from twelve.datasets.regions import MissingImageFeaturesError
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks import TaskData, open_task_dataset
from twelve.datasets.tasks.base import TaskConfigError
from twelve.datasets.tokenizer import BertTokenizer

worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BertTokenizer:
    return worlds.tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, official_files: ModuleType
) -> dict[str, tuple[TaskSpec, TaskData]]:
    root = tmp_path_factory.mktemp("answering")
    return {
        task: worlds.build_world(task, root / task, official_files)
        for task in ("vqa", "gqa", "vg_qa")
    }


def _batch(
    spec: TaskSpec, data: TaskData, split: str, tokenizer: BertTokenizer
) -> tuple[Any, AnswerBatch]:
    dataset = open_task_dataset(spec, data, split, tokenizer)
    return dataset, dataset.batch(list(range(len(dataset))))


def test_vqa_soft_targets(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["vqa"]
    vocabulary = AnswerVocabulary.load(data.answer_vocab)
    dataset, batch = _batch(spec, data, "val2014", tokenizer)
    assert batch.target is not None
    assert batch.target.shape == (len(dataset), spec.num_labels)
    for row, record in enumerate(dataset.records):
        expected = torch.zeros(spec.num_labels)
        for answer in set(record.answers):
            label = vocabulary.label(answer)
            if label is not None:  # raw strings are counted, as the bottom-up recipe did
                count = record.answers.count(answer)
                expected[label] = (0.0, 0.3, 0.6, 0.9, 1.0)[min(count, 4)]
        torch.testing.assert_close(batch.target[row], expected)
    # One hand-checked question: 9 × "no" and 1 × "yes".
    row = next(i for i, r in enumerate(dataset.records) if r.answers.count("no") == 9)
    assert batch.target[row, vocabulary.label("no")] == 1.0
    assert batch.target[row, vocabulary.label("yes")] == pytest.approx(0.3)
    assert batch.example_ids == tuple(str(r.question_id) for r in dataset.records)
    assert batch.image_ids == tuple(str(r.image_id) for r in dataset.records)


def test_vqa_inputs(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["vqa"]
    dataset, batch = _batch(spec, data, "trainval", tokenizer)
    assert dataset.training  # the spec's train split
    assert batch.input_ids[:, 0].eq(tokenizer.cls_id).all()
    lengths = batch.text_mask.sum(1)
    assert int(lengths.max()) == batch.input_ids.shape[1] <= spec.max_text_length
    assert batch.input_ids.gather(1, (lengths - 1)[:, None]).eq(tokenizer.sep_id).all()
    assert batch.region_features.shape == (len(dataset), 11, worlds.FEATURE_DIM)  # 10 + global
    assert batch.region_mask.all()
    torch.testing.assert_close(batch.region_features[:, 0], batch.region_features[:, 1:].mean(1))
    torch.testing.assert_close(
        batch.region_locations[:, 0], torch.tensor([[0, 0, 1, 1, 1.0]]).expand(len(dataset), 5)
    )


def test_test_split_has_no_target(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["vqa"]
    dataset, batch = _batch(spec, data, "test-dev2015", tokenizer)
    assert batch.target is None
    assert len(batch.example_ids) == len(dataset)
    with pytest.raises(TaskConfigError, match="cannot train on a split without answers"):
        open_task_dataset(spec, data, "test2015", tokenizer, training=True)


def test_gqa_single_answer_targets(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["gqa"]
    vocabulary = AnswerVocabulary.load(data.answer_vocab)
    dataset, batch = _batch(spec, data, "testdev", tokenizer)
    for row, record in enumerate(dataset.records):
        assert batch.target[row].sum() == 1.0
        assert batch.target[row, vocabulary.label(record.answer)] == 1.0
        assert batch.example_ids[row] == record.question_id  # strings with leading zeros
    assert batch.example_ids[0].startswith("0")
    assert _batch(spec, data, "challenge", tokenizer)[1].target is None
    assert batch.image_ids[0].startswith("n")  # test images keep their string ids


def test_vg_qa_answers_are_normalised(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["vg_qa"]
    vocabulary = AnswerVocabulary.load(data.answer_vocab)
    dataset, batch = _batch(spec, data, "all", tokenizer)
    row = next(i for i, r in enumerate(dataset.records) if r.answer == "Green.")
    assert batch.target[row, vocabulary.label("green")] == 1.0


def test_original_precomputed_targets_are_used_as_they_are(
    tmp_path: Path,
    official_files: ModuleType,
    tokenizer: BertTokenizer,
    world: dict,
) -> None:
    spec, data = world["vqa"]
    files = tmp_path / "vqa"
    written = official_files.write_vqa(files, annotations=False)
    targets = {
        subtype: [
            {
                "question_id": q["question_id"],
                "image_id": q["image_id"],
                "labels": [1, 2],
                "scores": [0.3, 1.0],
            }
            for q in written[subtype]["questions"]
        ]
        for subtype in ("train2014", "val2014")
    }
    for subtype, rows in targets.items():
        official_files.write_original_targets(files / "cache" / f"{subtype[:-4]}_target.pkl", rows)
    original = data.model_copy(update={"root": files, "answer_vocab": None})
    _, batch = _batch(spec, original, "val2014", tokenizer)
    assert batch.target[:, 1].eq(0.3).all()
    assert batch.target[:, 2].eq(1.0).all()
    assert batch.target.sum() == pytest.approx(1.3 * batch.batch_size)


def test_vocabulary_must_match_the_head(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["vqa"]
    with pytest.raises(TaskConfigError, match="answers but the task's head has 3129 outputs"):
        open_task_dataset(spec.with_overrides({"num_labels": 3129}), data, "val2014", tokenizer)
    with pytest.raises(TaskConfigError, match="twelve data vocab"):
        open_task_dataset(
            spec,
            data.model_copy(update={"answer_vocab": None}),
            "val2014",
            tokenizer,
        )


def test_clean_training_sets_drop_test_images(
    world: dict, tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    spec, data = world["vqa"]
    full = open_task_dataset(spec, data, "trainval", tokenizer)
    images = sorted({r.image_id for r in full.records})
    np.save(tmp_path / "coco_test_ids.npy", np.array(images[:1], dtype=np.int64))
    clean = data.model_copy(update={"exclude_images": tmp_path / "coco_test_ids.npy"})
    cleaned = open_task_dataset(spec, clean, "trainval", tokenizer)
    assert {r.image_id for r in cleaned.records} == set(images[1:])
    # Evaluation splits are not cleaned.
    assert len(open_task_dataset(spec, clean, "minval", tokenizer)) == len(
        open_task_dataset(spec, data, "minval", tokenizer)
    )
    (tmp_path / "all.txt").write_text("\n".join(map(str, images)) + "\n")
    with pytest.raises(EmptySplitError, match="every image was excluded"):
        open_task_dataset(
            spec,
            data.model_copy(update={"exclude_images": tmp_path / "all.txt"}),
            "trainval",
            tokenizer,
        )


def test_missing_image_is_named_with_its_task(
    tmp_path: Path, official_files: ModuleType, tokenizer: BertTokenizer
) -> None:
    spec, data = worlds.build_world("vqa", tmp_path, official_files, missing=("42",))
    with pytest.raises(
        MissingImageFeaturesError, match=r"vqa: image id '42' not in the feature store"
    ):
        open_task_dataset(spec, data, "val2014", tokenizer)


def test_empty_split_is_an_error(
    tmp_path: Path, official_files: ModuleType, tokenizer: BertTokenizer
) -> None:
    spec, data = worlds.build_world("vqa", tmp_path, official_files)
    empty = {"info": {}, "license": {}, "data_subtype": "val2014", "questions": []}
    official_files.write_json(data.root / "v2_OpenEnded_mscoco_val2014_questions.json", empty)
    official_files.write_json(
        data.root / "v2_mscoco_val2014_annotations.json", {**empty, "annotations": []}
    )
    with pytest.raises(EmptySplitError, match="vqa: split 'val2014' has no examples"):
        open_task_dataset(spec, data, "val2014", tokenizer)
