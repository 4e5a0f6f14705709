"""RefCOCO* IoU targets, Visual7W and GuessWhat candidate pointing."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

from twelve.datasets.errors import DatasetError
from twelve.datasets.parsers import annotated_images, read_split
from twelve.datasets.regions import box_iou
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tasks import TaskData, open_task_dataset
from twelve.datasets.tasks.base import TaskConfigError
from twelve.datasets.tasks.pointing import guesswhat_text
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
    root = tmp_path_factory.mktemp("grounding")
    return {
        task: worlds.build_world(task, root / task, official_files)
        for task in ("refcoco", "refcocog", "visual7w", "guesswhat")
    }


def test_refcoco_training_targets(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["refcoco"]
    dataset = open_task_dataset(spec, data, "train", tokenizer)
    assert dataset.training
    batch = dataset.batch(list(range(len(dataset))))
    gt_store = FeatureStore.open(data.gt_features)
    for row, record in enumerate(dataset.records):
        key = str(record.image_id)
        gt = gt_store.get(key)
        # global + 10 detections + the image's 3 ground-truth boxes, all within R = 101
        assert int(batch.region_mask[row].sum()) == 1 + 10 + gt.num_boxes
        boxes = np.concatenate(
            [
                [[0, 0, *worlds.IMAGE_SIZE]],
                FeatureStore.open(data.features).get(key).boxes,
                gt.boxes,
            ]
        )
        iou = box_iou(boxes, np.array(record.box))
        np.testing.assert_allclose(batch.iou[row, : len(iou)].numpy(), iou, rtol=1e-6)
        expected = np.where(iou < 0.5, 0, iou)
        np.testing.assert_allclose(batch.target[row, : len(iou)].numpy(), expected, rtol=1e-6)
        # The referred object's own ground-truth region is a perfect match.
        assert float(batch.target[row].max()) == pytest.approx(1.0)
    assert batch.example_ids == tuple(str(r.sent_id) for r in dataset.records)


def test_refcoco_evaluation_uses_detections_and_raw_iou(
    world: dict, tokenizer: BertTokenizer
) -> None:
    spec, data = world["refcoco"]
    dataset = open_task_dataset(spec, data, "testA", tokenizer)
    batch = dataset.batch(list(range(len(dataset))))
    assert batch.region_mask.sum(1).eq(11).all()  # no ground-truth boxes
    assert torch.equal(batch.target, batch.iou)
    assert batch.iou.lt(0.5).any()
    assert batch.iou.gt(0).any()
    both = open_task_dataset(spec, data, "test", tokenizer)
    assert len(both) == len(dataset) + len(open_task_dataset(spec, data, "testB", tokenizer))


def test_refcoco_truncates_to_r(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["refcocog"]
    dataset = open_task_dataset(spec.with_overrides({"max_regions": 12}), data, "train", tokenizer)
    batch = dataset.batch([0, 1])
    assert batch.region_features.shape[1] == 12
    assert batch.region_mask.all()
    assert batch.target.shape == (2, 12)


def test_visual7w_candidates(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["visual7w"]
    dataset = open_task_dataset(spec, data, "val", tokenizer)
    records = read_split("visual7w", data.root, "val")
    images = annotated_images("visual7w", data.root)
    batch = dataset.batch(list(range(len(dataset))))
    assert batch.candidate_index.shape == batch.candidate_mask.shape == batch.target.shape
    assert batch.candidate_mask.all()
    assert batch.candidate_index.shape[1] == 4
    for row, record in enumerate(records):
        objects = images[record.feature_keys[0]].objects
        ids = [obj.object_id for obj in objects]
        # candidates in ascending box-id order, located after global + 10 detections
        expected_ids = sorted(record.candidate_box_ids)
        expected = [11 + ids.index(box_id) for box_id in expected_ids]
        assert batch.candidate_index[row].tolist() == expected
        assert int(batch.answer_index[row]) == expected_ids.index(record.answer_box_id)
        gt_boxes = np.array([objects[ids.index(b)].box for b in expected_ids])
        iou = box_iou(gt_boxes, np.array(record.answer_box))
        np.testing.assert_allclose(
            batch.target[row].numpy(), np.where(iou < 0.5, 0, iou), rtol=1e-6
        )
        assert batch.example_ids[row] == str(record.qa_id)
        # the candidate's region holds that box's ground-truth features
        gt = FeatureStore.open(data.gt_features).get(record.feature_keys[0])
        for k, index in enumerate(expected):
            position = ids.index(expected_ids[k])
            torch.testing.assert_close(
                batch.region_features[row, index], torch.from_numpy(gt.features[position])
            )


def test_guesswhat_dialogue_and_candidates(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["guesswhat"]
    dataset = open_task_dataset(spec, data, "train", tokenizer)
    games = read_split("guesswhat", data.root, "train")
    assert len(dataset) == len(games)  # every game is kept, whatever its status
    batch = dataset.batch(list(range(len(dataset))))
    images = annotated_images("guesswhat", data.root)
    for row, game in enumerate(games):
        assert (
            guesswhat_text(game)
            == "start is it a person? answer No stop start is it an animal? answer Yes stop "
        )
        ids = [obj.object_id for obj in images[game.feature_keys[0]].objects]
        order = sorted(obj.object_id for obj in game.objects)
        assert batch.candidate_index[row].tolist() == [11 + ids.index(i) for i in order]
        assert int(batch.answer_index[row]) == order.index(game.target_object_id)
        assert float(batch.target[row, batch.answer_index[row]]) == pytest.approx(1.0)
    text = tokenizer.decode(batch.input_ids[0].tolist())
    assert text.startswith("start is it a person")


def test_pointing_pads_candidates_across_a_batch(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["visual7w"]
    dataset = open_task_dataset(spec, data, "test", tokenizer)
    short = dataset.example(0, 0)
    shortened = type(short)(
        short.example_id,
        short.token_ids,
        short.regions,
        short.candidate_index[:2],
        short.target[:2],
    )
    batch = dataset.collate([shortened, dataset.example(1, 0)])
    assert batch.candidate_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch.candidate_index[0, 2:].tolist() == [0, 0]
    assert batch.target[0, 2:].tolist() == [
        0,
        0,
    ]


def test_pointing_errors(world: dict, tokenizer: BertTokenizer) -> None:
    spec, data = world["visual7w"]
    small = open_task_dataset(spec.with_overrides({"max_regions": 12}), data, "val", tokenizer)
    with pytest.raises(
        DatasetError,
        match=r"visual7w: example \d+ points at region \d+ but image 'v7w_5' has 12 regions",
    ):
        small.batch([0])
    with pytest.raises(TaskConfigError, match="pointing needs gt_features"):
        open_task_dataset(spec, data.model_copy(update={"gt_features": None}), "val", tokenizer)
