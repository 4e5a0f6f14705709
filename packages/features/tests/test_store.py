"""The LMDB feature store: round trips, header, errors, resumable writes, worker safety."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pydantic
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from twelve.features.record import RegionFeatures
from twelve.features.store import (
    CorruptRecordError,
    FeatureSource,
    FeatureStore,
    FeatureStoreReader,
    MissingImageError,
    NotAFeatureStoreError,
    StoreHeader,
    StoreMismatchError,
)

MakeRecord = Callable[..., RegionFeatures]
WriteStore = Callable[..., FeatureStoreReader]
SHA = "ab" * 32


def _records(make_record: MakeRecord, n: int, **kwargs: Any) -> list[RegionFeatures]:
    return [make_record(f"{i:05d}", num_boxes=3 + i % 5, **kwargs) for i in range(n)]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore, dtype: str
) -> None:
    records = _records(make_record, 20)
    store = write_store(tmp_path / "s", records, dtype=dtype, batch_size=6)
    assert isinstance(store, FeatureSource)
    assert len(store) == 20
    assert store.keys() == sorted(r.image_id for r in records)
    tolerance = 0 if dtype == "float32" else 2e-3
    for record in records:
        assert record.image_id in store
        got = store.get(record.image_id)
        assert got.features.dtype == np.float32
        np.testing.assert_allclose(got.features, record.features, atol=tolerance, rtol=tolerance)
        np.testing.assert_allclose(got.class_probs, record.class_probs, atol=tolerance)
        np.testing.assert_array_equal(got.boxes, record.boxes)
        np.testing.assert_array_equal(got.object_ids, record.object_ids)
        np.testing.assert_array_equal(got.attribute_scores, record.attribute_scores)
        assert (got.image_width, got.image_height) == (record.image_width, record.image_height)
        assert store.get(record.image_id, as_float32=False).features.dtype == np.dtype(dtype)
    assert "nope" not in store
    assert 12 not in store


def test_header_records_provenance(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    before = datetime.now(UTC)
    store = write_store(
        tmp_path / "s",
        _records(make_record, 4),
        dtype="float16",
        extractor="vg-r101-c4",
        config_sha256=SHA,
        weights_sha256="cd" * 32,
        max_boxes=10,
        extra={"object_classes": '["__background__", "cat"]'},
    )
    header = store.header
    assert header.schema_version == 1
    assert header.extractor == "vg-r101-c4"
    assert (header.config_sha256, header.weights_sha256) == (SHA, "cd" * 32)
    assert (header.feature_dim, header.dtype, header.max_boxes) == (32, "float16", 10)
    assert header.box_convention == "xyxy"
    assert header.image_count == 4
    assert before <= header.created_at <= datetime.now(UTC)
    assert header.class_names() == ["__background__", "cat"]
    assert StoreHeader.model_validate_json(header.model_dump_json()) == header


def test_max_boxes_without_a_limit_is_the_largest_count(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    store = write_store(tmp_path / "s", _records(make_record, 6))
    assert store.header.max_boxes == 7  # 3 + 4


def test_header_fields_are_validated(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="config_sha256"):
        FeatureStore.create(tmp_path / "s", extractor="x", feature_dim=8, config_sha256="abc")
    with pytest.raises(pydantic.ValidationError, match="dtype"):
        FeatureStore.create(tmp_path / "s", extractor="x", feature_dim=8, dtype="bfloat16")  # type: ignore[arg-type]


def test_missing_id_names_store_and_id(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    store = write_store(tmp_path / "s", _records(make_record, 3))
    with pytest.raises(MissingImageError) as info:
        store.get("424242")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'424242'" in message
    assert str(tmp_path / "s") in message
    assert "3 images" in message
    assert not message.startswith('"')  # KeyError's quoting is undone
    with pytest.raises(TypeError, match=r"str\(7\)"):
        store.get(7)  # type: ignore[arg-type]


def _overwrite_record(path: Path, image_id: str, change: Callable[[bytes], bytes]) -> None:
    env = lmdb.open(str(path), max_dbs=2)
    records = env.open_db(b"records")
    with env.begin(write=True, db=records) as txn:
        txn.put(image_id.encode(), change(txn.get(image_id.encode())))
    env.close()


def test_corrupt_record_names_store_and_id(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    path = tmp_path / "s"
    write_store(path, _records(make_record, 3))
    _overwrite_record(path, "00001", lambda value: value[: len(value) // 2])
    store = FeatureStore.open(path)
    with pytest.raises(CorruptRecordError) as info:
        store.get("00001")
    assert info.value.image_id == "00001"
    assert str(path) in str(info.value)
    assert "twelve features verify" in str(info.value)
    store.get("00000")  # the others still read


def test_checksums_catch_changed_values(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    path = tmp_path / "s"
    write_store(path, _records(make_record, 2))
    _overwrite_record(path, "00000", lambda v: v[:-3] + bytes([v[-3] ^ 1]) + v[-2:])
    FeatureStore.open(path).get("00000")
    with pytest.raises(CorruptRecordError, match="crc32"):
        FeatureStore.open(path, check_checksums=True).get("00000")


def test_record_under_the_wrong_key_is_corrupt(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    path = tmp_path / "s"
    write_store(path, _records(make_record, 2))
    env = lmdb.open(str(path), max_dbs=2)
    records = env.open_db(b"records")
    with env.begin(write=True, db=records) as txn:
        txn.put(b"00000", txn.get(b"00001"))
    env.close()
    with pytest.raises(CorruptRecordError, match="holds image '00001'"):
        FeatureStore.open(path).get("00000")


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(NotAFeatureStoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAFeatureStoreError):
        FeatureStore.open(tmp_path / "empty")
    env = lmdb.open(str(tmp_path / "other"))
    with env.begin(write=True) as txn:
        txn.put(b"a", b"b")
    env.close()
    with pytest.raises(NotAFeatureStoreError, match="not a twelve feature store"):
        FeatureStore.open(tmp_path / "other")


def test_store_is_complete_or_absent(tmp_path: Path, make_record: MakeRecord) -> None:
    path = tmp_path / "s"
    writer = FeatureStore.create(path, extractor="x", feature_dim=32, batch_size=2)
    for record in _records(make_record, 5):
        writer.put(record)
    assert not path.exists()
    assert (tmp_path / "s.partial").is_dir()
    with pytest.raises(NotAFeatureStoreError, match=r"unfinished build is at .*s\.partial"):
        FeatureStore.open(path)
    writer.close()
    assert path.is_dir()
    assert not (tmp_path / "s.partial").exists()
    assert sorted(os.listdir(path)) == ["data.mdb"]


def test_interrupted_write_resumes(tmp_path: Path, make_record: MakeRecord) -> None:
    path = tmp_path / "s"
    records = _records(make_record, 30)
    # A real crash: a forked writer exits hard after 17 puts (4 full batches committed).
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_crash_writer, args=(path, records, 17))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 3
    assert not path.exists()

    with FeatureStore.create(path, extractor="x", feature_dim=32, resume=True) as writer:
        assert len(writer) == 16  # batches of 4 were committed, the 17th put was lost
        written = [writer.put(record) for record in records]
    assert written.count(False) == 16
    assert written.count(True) == 14
    store = FeatureStore.open(path)
    assert len(store) == 30
    for record in records:
        np.testing.assert_array_equal(store.get(record.image_id).features, record.features)


def _crash_writer(path: Path, records: list[RegionFeatures], die_after: int) -> None:
    writer = FeatureStore.create(path, extractor="x", feature_dim=32, batch_size=4)
    for count, record in enumerate(records):
        if count == die_after:
            os._exit(3)
        writer.put(record)


def test_exception_keeps_committed_records_for_resume(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    path = tmp_path / "s"
    records = _records(make_record, 10)

    def write_then_fail() -> None:
        with FeatureStore.create(path, extractor="x", feature_dim=32) as writer:
            for record in records[:6]:
                writer.put(record)
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_then_fail()
    assert not path.exists()
    with FeatureStore.create(path, extractor="x", feature_dim=32) as writer:
        assert len(writer) == 6
        assert records[5].image_id in writer
        for record in records:
            writer.put(record)
    assert len(FeatureStore.open(path)) == 10


def test_resume_false_starts_over_but_never_deletes_a_finished_store(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    path = tmp_path / "s"
    records = _records(make_record, 4)
    writer = FeatureStore.create(path, extractor="x", feature_dim=32)
    writer.put(records[0])
    writer.abandon()
    with FeatureStore.create(path, extractor="x", feature_dim=32, resume=False) as writer:
        assert len(writer) == 0
        writer.put(records[1])
    with pytest.raises(FileExistsError, match="resume=True"):
        FeatureStore.create(path, extractor="x", feature_dim=32, resume=False)
    assert FeatureStore.open(path).keys() == [records[1].image_id]


def test_finished_store_can_be_extended(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    path = tmp_path / "s"
    records = _records(make_record, 6)
    first = write_store(path, records[:3], extractor="x")
    created = first.header.created_at
    with FeatureStore.create(path, extractor="x", feature_dim=32) as writer:
        for record in records:
            writer.put(record)
    store = FeatureStore.open(path)
    assert len(store) == 6
    assert store.header.image_count == 6
    assert store.header.created_at == created


def test_mixing_extractors_is_refused(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    path = tmp_path / "s"
    write_store(path, _records(make_record, 2), extractor="x", dtype="float16")
    with pytest.raises(StoreMismatchError, match=r"extractor: store has 'x', requested 'y'"):
        FeatureStore.create(path, extractor="y", feature_dim=32, dtype="float16")
    with pytest.raises(StoreMismatchError, match="dtype"):
        FeatureStore.create(path, extractor="x", feature_dim=32)
    assert path.exists()  # untouched by the refused writers


def test_put_checks_dim_and_box_limit_and_skips_duplicates(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    with FeatureStore.create(tmp_path / "s", extractor="x", feature_dim=32, max_boxes=5) as writer:
        assert writer.put(make_record("a", num_boxes=5))
        assert not writer.put(make_record("a", num_boxes=5))
        with pytest.raises(StoreMismatchError, match="'b' has 16-d features"):
            writer.put(make_record("b", feature_dim=16))
        with pytest.raises(ValueError, match="'c' has 6 boxes"):
            writer.put(make_record("c", num_boxes=6))
    with pytest.raises(Exception, match="closed"):
        writer.put(make_record("d"))


def test_map_grows_as_needed(tmp_path: Path, make_record: MakeRecord) -> None:
    path = tmp_path / "s"
    records = [make_record(f"{i}", num_boxes=50, feature_dim=256) for i in range(40)]  # ~2 MB
    with FeatureStore.create(
        path, extractor="x", feature_dim=256, map_size=64 * 1024, batch_size=7
    ) as writer:
        for record in records:
            writer.put(record)
    store = FeatureStore.open(path)
    assert len(store) == 40
    np.testing.assert_array_equal(store.get("39").features, records[39].features)


class _StoreDataset(Dataset[tuple[int, str, torch.Tensor]]):
    def __init__(self, store: FeatureStoreReader) -> None:
        self.store = store
        self.ids = store.keys()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[int, str, torch.Tensor]:
        record = self.store.get(self.ids[index])
        return os.getpid(), record.image_id, torch.from_numpy(record.features)


def test_dataloader_workers_read_safely(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    records = {r.image_id: r for r in _records(make_record, 24)}
    store = write_store(tmp_path / "s", list(records.values()), dtype="float16")
    store.get("00000")  # the parent has an open environment before the workers start
    loader = DataLoader(
        _StoreDataset(store),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
    )
    seen = {}
    pids = set()
    for pid, image_id, features in loader:
        pids.add(int(pid))
        seen[image_id] = features
    assert os.getpid() not in pids
    assert len(pids) == 2
    assert seen.keys() == records.keys()
    for image_id, features in seen.items():
        np.testing.assert_allclose(features.numpy(), records[image_id].features, atol=2e-3)
    store.get("00001")  # and the parent still reads


def test_spawned_workers_get_the_reader_by_pickle(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    records = _records(make_record, 6)
    store = write_store(tmp_path / "s", records)
    store.get("00000")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map(store.get, [r.image_id for r in records])
    for record, read in zip(records, got, strict=True):
        np.testing.assert_array_equal(read.features, record.features)


def test_reader_pickles_without_its_handle(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    store = write_store(tmp_path / "s", _records(make_record, 3))
    store.get("00000")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.header == store.header
    np.testing.assert_array_equal(copy.get("00002").features, store.get("00002").features)


def test_threads_share_one_reader(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    records = _records(make_record, 40)
    store = write_store(tmp_path / "s", records)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda r: store.get(r.image_id), records * 3))
    for record, read in zip(records * 3, got, strict=True):
        np.testing.assert_array_equal(read.features, record.features)


def test_two_readers_of_one_store_share_its_environment(
    tmp_path: Path, make_record: MakeRecord, write_store: WriteStore
) -> None:
    path = tmp_path / "s"
    records = _records(make_record, 3)
    first = write_store(path, records)
    second = FeatureStore.open(path)
    assert first.get("00000").image_id == second.get("00000").image_id == "00000"
    first.close()
    assert second.get("00001").image_id == "00001"
    second.close()
    np.testing.assert_array_equal(first.get("00002").features, records[2].features)  # reopens
    first.close()
