"""Caption retrieval: 4-way examples with hard negatives, ranking evaluation, the pool itself."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

from twelve.datasets.hard_negatives import (
    HardNegativePool,
    HardNegativePoolError,
    compute_hard_negatives,
    nearest_images,
)
from twelve.datasets.specs import TaskSpec, get_spec
from twelve.datasets.tasks import TaskData, open_ranking_dataset, open_task_dataset
from twelve.datasets.tasks.base import ItemKey, TaskConfigError
from twelve.datasets.tokenizer import BertTokenizer
from twelve.features.store import FeatureStore

worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BertTokenizer:
    return worlds.tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def flickr(
    tmp_path_factory: pytest.TempPathFactory, official_files: ModuleType
) -> tuple[TaskSpec, TaskData]:
    """Flickr30k with 6 training images of 5 captions each, each image's captions distinct."""
    root = tmp_path_factory.mktemp("flickr")
    files = root / "files"
    splits = {"train": (11, 12, 13, 14, 15, 16), "test": (21, 22, 23)}
    official_files.write_karpathy(files, "flickr30k", splits=splits)
    # Give every caption its image's id so that a caption tells which image it came from.
    document = json.loads((files / "dataset_flickr30k.json").read_text())
    for image in document["images"]:
        for k, sentence in enumerate(image["sentences"]):
            sentence["raw"] = f"{image['filename'][:2]} caption {k}"
    official_files.write_json(files / "dataset_flickr30k.json", document)
    rng = np.random.default_rng(0)
    keys = [str(i) for ids in splits.values() for i in ids]
    store = worlds.write_store(
        root / "features", [worlds.region_record(k, rng, num_boxes=4) for k in keys]
    )
    # A hand-made pool: image 11's only hard neighbour is 16, everyone else's is 11.
    ids = [str(i) for i in splits["train"]]
    neighbours = np.array([[i, 5 if i == 0 else 0] for i in range(6)])
    HardNegativePool(tuple(ids), neighbours).save(root / "pool.npz")
    data = TaskData(root=files, features=store, hard_negatives=root / "pool.npz")
    return get_spec("retrieval_flickr30k"), data


def _image_of(tokenizer: BertTokenizer, ids: torch.Tensor) -> str:
    return tokenizer.decode(ids.tolist()).split()[0]


def test_four_way_example_layout(flickr: tuple, tokenizer: BertTokenizer) -> None:
    spec, data = flickr
    dataset = open_task_dataset(spec, data, "train", tokenizer)
    assert dataset.training
    assert len(dataset) == 30
    batch = dataset.batch([ItemKey(0, 7), ItemKey(6, 8)])  # captions of images 11 and 12
    assert batch.num_rows == 8
    assert batch.batch_size == 2
    assert batch.pairs_per_example == 4
    assert batch.target.tolist() == [0, 0]
    rows = [(batch.image_ids[r], _image_of(tokenizer, batch.input_ids[r])) for r in range(8)]
    for group, image in ((rows[:4], "11"), (rows[4:], "12")):
        positive, random_caption, random_image, hard_caption = group
        assert positive == (image, image)  # caption of image i with image i
        assert random_caption[0] == image
        assert random_caption[1] != image
        assert random_image[0] != image
        assert random_image[1] == image
        assert hard_caption[0] == image
    assert rows[3][1] == "16"  # image 11's hard neighbour
    assert rows[7][1] == "11"
    # The same seed builds the same example; the negatives depend on it.
    again = dataset.batch([ItemKey(0, 7), ItemKey(6, 8)])
    assert torch.equal(again.input_ids, batch.input_ids)
    assert batch.image_ids == again.image_ids


def test_negatives_are_drawn_from_the_seed(flickr: tuple, tokenizer: BertTokenizer) -> None:
    spec, data = flickr
    dataset = open_task_dataset(spec, data, "train", tokenizer)
    drawn = {dataset.example(0, seed).regions[2].image_id for seed in range(40)}
    assert drawn == {"12", "13", "14", "15", "16"}  # any other image, never the positive


def test_validation_uses_random_negatives_without_a_pool(
    flickr: tuple, tokenizer: BertTokenizer
) -> None:
    spec, data = flickr
    dataset = open_task_dataset(
        spec, data.model_copy(update={"hard_negatives": None}), "test", tokenizer
    )
    assert not dataset.training
    assert len(dataset) == 15
    assert dataset.batch([0, 1]).num_rows == 8
    with pytest.raises(TaskConfigError, match="twelve data hard-negatives"):
        open_task_dataset(
            spec,
            data.model_copy(update={"hard_negatives": None}),
            "train",
            tokenizer,
        )


def test_pool_must_cover_the_training_images(
    flickr: tuple, tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    spec, data = flickr
    HardNegativePool(("11", "12"), np.array([[0, 1], [1, 0]])).save(tmp_path / "small.npz")
    with pytest.raises(HardNegativePoolError, match="4 training image"):
        open_task_dataset(
            spec,
            data.model_copy(update={"hard_negatives": tmp_path / "small.npz"}),
            "train",
            tokenizer,
        )


def test_ranking_dataset_scores_every_caption_against_every_image(
    flickr: tuple, tokenizer: BertTokenizer
) -> None:
    spec, data = flickr
    ranking = open_ranking_dataset(
        spec, data, "test", tokenizer, max_images=2, captions_per_image=3
    )
    assert (ranking.num_images, ranking.num_captions, len(ranking)) == (2, 6, 12)
    assert ranking.caption_image_index.tolist() == [0, 0, 0, 1, 1, 1]
    batch = ranking.batch(list(range(12)))
    assert batch.image_index.tolist() == [0] * 6 + [1] * 6  # image-major
    assert batch.caption_index.tolist() == list(range(6)) * 2
    for row in range(12):
        caption = int(batch.caption_index[row])
        expected = tokenizer.encode(ranking.caption_texts[caption], spec.max_text_length)
        assert batch.input_ids[row, : len(expected)].tolist() == expected.tolist()
    assert torch.equal(batch.region_features[0], batch.region_features[5])
    assert not torch.equal(batch.region_features[0], batch.region_features[6])
    full = open_ranking_dataset(spec, data, "test", tokenizer)
    assert (full.num_images, full.num_captions) == (3, 15)


def test_nearest_images_match_brute_force_in_any_chunking() -> None:
    rng = np.random.default_rng(3)
    features = rng.standard_normal((37, 6)).astype(np.float32)
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :10]
    for chunk in (1, 5, 64):
        found = nearest_images(torch.from_numpy(features), 10, chunk_size=chunk)
        np.testing.assert_array_equal(found, expected)
    assert nearest_images(torch.from_numpy(features[:3]), 100).shape == (3, 3)


def test_pool_from_a_store_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    records = [worlds.region_record(str(i), rng, num_boxes=3) for i in range(8)]
    store = FeatureStore.open(worlds.write_store(tmp_path / "store", records))
    pool = compute_hard_negatives("retrieval_coco", store, [str(i) for i in range(8)], pool_size=4)
    means = np.stack([r.features.mean(0) for r in records])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    np.testing.assert_array_equal(pool.neighbours, np.argsort(distances, axis=1)[:, :4])
    assert pool.neighbours[:, 0].tolist() == list(range(8))
    pool.save(tmp_path / "pool.npz")
    loaded = HardNegativePool.load(tmp_path / "pool.npz")
    assert loaded.image_ids == pool.image_ids
    assert loaded.metadata["task"] == "retrieval_coco"
    np.testing.assert_array_equal(loaded.neighbours, pool.neighbours)
    # Dataset indices of neighbours; one absent from the dataset becomes −1.
    rows = loaded.neighbours_for("retrieval_coco", [str(i) for i in range(7)])
    assert rows.shape == (7, 3)
    assert ((rows == -1) == (loaded.neighbours[:7, 1:] == 7)).all()


def test_pool_files_are_checked(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", neighbours=np.zeros((2, 2)))
    with pytest.raises(HardNegativePoolError, match="not a twelve hard-negative pool"):
        HardNegativePool.load(tmp_path / "other.npz")
    np.savez(
        tmp_path / "pickled.npz",
        format=np.array("twelve-hard-negatives/1"),
        image_ids=np.array([{"a": 1}], dtype=object),
    )
    with pytest.raises(HardNegativePoolError, match="unreadable"):
        HardNegativePool.load(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError):
        HardNegativePool.load(tmp_path / "absent.npz")
    with pytest.raises(HardNegativePoolError, match="indices must lie"):
        HardNegativePool(("a", "b"), np.array([[0, 2], [1, 0]]))
