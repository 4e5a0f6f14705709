"""Shared fixtures: records with every field, stores written from them, original LMDB files."""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
import torch

from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore, FeatureStoreReader

torch.set_num_threads(1)

MakeRecord = Callable[..., RegionFeatures]


@pytest.fixture
def make_record() -> MakeRecord:
    """Build a record with random but valid contents (xyxy boxes inside the image)."""

    def make(
        image_id: str,
        *,
        num_boxes: int = 7,
        feature_dim: int = 32,
        num_classes: int | None = 11,
        seed: int | None = None,
        width: int = 320,
        height: int = 240,
    ) -> RegionFeatures:
        rng = np.random.default_rng(seed if seed is not None else zlib.crc32(image_id.encode()))
        xy = rng.uniform(0, [width / 2, height / 2], size=(num_boxes, 2))
        wh = rng.uniform(1, [width / 2, height / 2], size=(num_boxes, 2))
        fields: dict[str, Any] = {
            "image_id": image_id,
            "image_width": width,
            "image_height": height,
            "boxes": np.concatenate([xy, xy + wh], axis=1).astype(np.float32),
            "features": rng.standard_normal((num_boxes, feature_dim)).astype(np.float32),
        }
        if num_classes is not None:
            probs = rng.random((num_boxes, num_classes)).astype(np.float32)
            probs /= probs.sum(axis=1, keepdims=True)
            fields["class_probs"] = probs
            fields["object_ids"] = probs[:, 1:].argmax(axis=1) + 1
            fields["object_scores"] = probs[:, 1:].max(axis=1)
            fields["attribute_ids"] = rng.integers(0, 400, num_boxes)
            fields["attribute_scores"] = rng.random(num_boxes).astype(np.float32)
        return RegionFeatures(**fields)

    return make


WriteStore = Callable[..., FeatureStoreReader]


@pytest.fixture
def write_store() -> WriteStore:
    """Write `records` to a new store at `path` and open it."""

    def write(
        path: Path, records: Sequence[RegionFeatures], *, dtype: str = "float32", **kwargs: Any
    ) -> FeatureStoreReader:
        kwargs.setdefault("extractor", "test-extractor")
        kwargs.setdefault("feature_dim", records[0].feature_dim)
        with FeatureStore.create(path, dtype=dtype, **kwargs) as writer:
            for record in records:
                writer.put(record)
        reader = FeatureStore.open(path)
        assert isinstance(reader, FeatureStoreReader)
        return reader

    return write


def _original_item(image_id: int, *, num_boxes: int = 5, dim: int = 16) -> dict[str, Any]:
    """One image as the original extraction + convert_to_lmdb pipeline kept it (§6.1)."""
    rng = np.random.default_rng(image_id)
    xy = rng.uniform(0, 100, size=(num_boxes, 2))
    return {
        "image_id": image_id,
        "image_h": 480,
        "image_w": 640,
        "num_boxes": num_boxes,
        "boxes": np.concatenate([xy, xy + 50], axis=1),  # float64, as the original kept it
        "features": rng.standard_normal((num_boxes, dim)).astype(np.float32),
    }


def _write_original_lmdb(path: Path, items: Sequence[dict[str, Any]], protocol: int = 3) -> None:
    """Write an LMDB the way the original convert_to_lmdb did: a pickled dict per image key
    (str(image_id).encode()) and the pickled list of every key under b"keys"."""
    env = lmdb.open(str(path), map_size=1 << 28)
    keys = []
    with env.begin(write=True) as txn:
        for item in items:
            key = str(item["image_id"]).encode()
            keys.append(key)
            txn.put(key, pickle.dumps(item, protocol=protocol))
        txn.put(b"keys", pickle.dumps(keys, protocol=protocol))
    env.close()


@pytest.fixture
def original_lmdb(tmp_path: Path) -> Path:
    """A small original-format LMDB of 6 images (ids 11..16)."""
    path = tmp_path / "original.lmdb"
    _write_original_lmdb(path, [_original_item(i) for i in range(11, 17)])
    return path


@pytest.fixture
def original_item() -> Callable[..., dict[str, Any]]:
    """Build one image dict of the original format."""
    return _original_item


@pytest.fixture
def write_original_lmdb() -> Callable[..., None]:
    """Write items as an original-format LMDB."""
    return _write_original_lmdb
