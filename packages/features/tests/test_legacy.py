"""Original vilbert-multi-task LMDB files: refused by default, read on opt-in, converted."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest

from twelve.features.errors import (
    FeatureStoreError,
    MissingImageError,
    UntrustedLegacyStoreError,
)
from twelve.features.legacy import (
    LEGACY_EXTRACTOR,
    LegacyFeatureStore,
    convert_legacy,
    is_legacy_store,
)
from twelve.features.safe_pickle import UnsafePickleError
from twelve.features.store import FeatureSource, FeatureStore, FeatureStoreReader

OriginalItem = Callable[..., dict[str, Any]]
WriteOriginal = Callable[..., None]


def test_refused_without_opt_in(original_lmdb: Path) -> None:
    assert is_legacy_store(original_lmdb)
    with pytest.raises(UntrustedLegacyStoreError, match=r"trust_pickle=True.*convert-legacy"):
        FeatureStore.open(original_lmdb)
    with pytest.raises(UntrustedLegacyStoreError):
        LegacyFeatureStore(original_lmdb, trust_pickle=False)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_read_with_opt_in(
    tmp_path: Path, original_item: OriginalItem, write_original_lmdb: WriteOriginal, protocol: int
) -> None:
    path = tmp_path / "original.lmdb"
    items = [original_item(i) for i in (5, 3, 400)]
    write_original_lmdb(path, items, protocol=protocol)
    store = FeatureStore.open(path, trust_pickle=True)
    assert isinstance(store, LegacyFeatureStore)
    assert isinstance(store, FeatureSource)
    assert store.keys() == ["5", "3", "400"]  # the order of the original key list
    assert len(store) == 3
    assert "3" in store
    assert "keys" not in store
    assert "9" not in store
    for item in items:
        record = store.get(str(item["image_id"]))
        assert (record.image_width, record.image_height) == (640, 480)
        np.testing.assert_array_equal(record.features, item["features"])
        np.testing.assert_allclose(record.boxes, item["boxes"], rtol=1e-6)
        assert record.boxes.dtype == np.float32
    header = store.header
    assert header.extractor == LEGACY_EXTRACTOR
    assert (header.feature_dim, header.dtype, header.image_count) == (16, "float32", 3)
    assert header.max_boxes is None
    assert header.config_sha256 is None


def test_missing_id_and_class_probs(
    tmp_path: Path, original_item: OriginalItem, write_original_lmdb: WriteOriginal
) -> None:
    item = original_item(1)
    item["cls_prob"] = np.full((5, 1601), 1 / 1601, dtype=np.float32)
    item["objects"] = np.zeros(5, dtype=np.int64)  # computed wrongly by the original: ignored
    write_original_lmdb(tmp_path / "o", [item])
    store = LegacyFeatureStore(tmp_path / "o", trust_pickle=True)
    record = store.get("1")
    assert record.class_probs is not None
    assert record.class_probs.shape == (5, 1601)
    assert record.object_ids is None
    with pytest.raises(MissingImageError, match=r"'2' is not in feature store .*o \(1 images\)"):
        store.get("2")
    with pytest.raises(MissingImageError):
        store.get("keys")


def test_code_in_a_record_is_refused_even_with_opt_in(
    tmp_path: Path, original_item: OriginalItem, write_original_lmdb: WriteOriginal
) -> None:
    class RunsCode:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    path = tmp_path / "o"
    write_original_lmdb(path, [original_item(1)])
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.put(b"1", pickle.dumps({"image_w": RunsCode()}))
    env.close()
    with pytest.raises(UnsafePickleError, match=r"system"):
        FeatureStore.open(path, trust_pickle=True).get("1")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_convert_to_a_twelve_store(original_lmdb: Path, tmp_path: Path, dtype: str) -> None:
    destination = tmp_path / "converted"
    header = convert_legacy(original_lmdb, destination, trust_pickle=True, dtype=dtype)  # type: ignore[arg-type]
    assert (header.image_count, header.dtype, header.max_boxes) == (6, dtype, 5)
    assert header.extra["converted_from"] == str(original_lmdb.resolve())
    legacy = LegacyFeatureStore(original_lmdb, trust_pickle=True)
    converted = FeatureStore.open(destination)
    assert isinstance(converted, FeatureStoreReader)
    assert sorted(converted.keys()) == sorted(legacy.keys())
    tolerance = 0 if dtype == "float32" else 5e-3
    for image_id in legacy.keys():  # noqa: SIM118  (a list, not a dict)
        np.testing.assert_allclose(
            converted.get(image_id).features, legacy.get(image_id).features, atol=tolerance
        )
        np.testing.assert_array_equal(converted.get(image_id).boxes, legacy.get(image_id).boxes)
    # Adding to a store this process reads is refused before anything moves.
    with pytest.raises(FeatureStoreError, match="close its readers"):
        convert_legacy(original_lmdb, destination, trust_pickle=True, dtype=dtype)  # type: ignore[arg-type]
    assert destination.exists()
    converted.close()
    # Rerunning converts nothing twice (resumable) and keeps the store whole.
    again = convert_legacy(original_lmdb, destination, trust_pickle=True, dtype=dtype)  # type: ignore[arg-type]
    assert again.image_count == 6


def test_convert_needs_the_opt_in(original_lmdb: Path, tmp_path: Path) -> None:
    with pytest.raises(UntrustedLegacyStoreError):
        convert_legacy(original_lmdb, tmp_path / "c", trust_pickle=False)
    assert not (tmp_path / "c").exists()
    assert not (tmp_path / "c.partial").exists()


def test_a_twelve_store_is_not_legacy(tmp_path: Path, original_lmdb: Path) -> None:
    convert_legacy(original_lmdb, tmp_path / "c", trust_pickle=True)
    assert not is_legacy_store(tmp_path / "c")
    assert not is_legacy_store(tmp_path / "absent")
