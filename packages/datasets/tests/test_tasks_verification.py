"""NLVR2 image pairs flattened to 2B rows; SNLI-VE 3-way one-hot targets."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from twelve.datasets.parsers import read_split
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks import TaskData, open_task_dataset
from twelve.datasets.tokenizer import BertTokenizer
from twelve.features.store import FeatureStore

worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BertTokenizer:
    return worlds.tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, official_files: ModuleType
) -> dict[str, tuple[TaskSpec, TaskData]]:
    root = tmp_path_factory.mktemp("verification")
    return {
        task: worlds.build_world(task, root / task, official_files) for task in ("nlvr2", "snli_ve")
    }


def test_nlvr2_pairs_are_flattened(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["nlvr2"]
    dataset = open_task_dataset(spec, data, "dev", tokenizer)
    records = read_split("nlvr2", data.root, "dev")
    batch = dataset.batch(list(range(len(dataset))))
    b = len(records)
    assert batch.batch_size == b
    assert batch.num_rows == 2 * b
    features = FeatureStore.open(data.features)
    for i, record in enumerate(records):
        left, right = 2 * i, 2 * i + 1
        assert torch.equal(batch.input_ids[left], batch.input_ids[right])  # sentence repeated
        for row, key in (
            (left, f"{record.identifier.rsplit('-', 1)[0]}-img0"),
            (right, record.right_image_id),
        ):
            stored = torch.from_numpy(features.get(key).features)
            torch.testing.assert_close(batch.region_features[row, 1:11], stored)
            torch.testing.assert_close(batch.region_features[row, 0], stored.mean(0))
        expected = [0.0, 1.0] if record.label else [1.0, 0.0]
        assert batch.target[i].tolist() == expected
        assert int(batch.label[i]) == int(record.label)
    assert batch.example_ids == tuple(r.identifier for r in records)


def test_snli_ve_labels(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["snli_ve"]
    dataset = open_task_dataset(spec, data, "train", tokenizer)
    records = read_split("snli_ve", data.root, "train")
    batch = dataset.batch(list(range(len(dataset))))
    order = {"contradiction": 0, "neutral": 1, "entailment": 2}
    assert batch.label.tolist() == [order[r.gold_label] for r in records]
    assert torch.equal(batch.target, torch.nn.functional.one_hot(batch.label, 3).float())
    first = tokenizer.decode(batch.input_ids[0].tolist())
    assert first == records[0].hypothesis.lower()  # the hypothesis only, no premise
    assert batch.num_rows == len(records)


def test_snli_ve_without_gold_label_trains_as_zeros(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["snli_ve"]
    dataset = open_task_dataset(spec, data, "dev", tokenizer)
    example = dataset.example(0, 0)
    unlabeled = type(example)(example.example_id, example.token_ids, example.regions, None)
    batch = dataset.collate([unlabeled, example])
    assert batch.target[0].tolist() == [0.0, 0.0, 0.0]
    assert int(batch.label[0]) == -1
    assert batch.target[1].sum() == 1.0
