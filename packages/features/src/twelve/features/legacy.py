"""The original vilbert-multi-task LMDB files: read on explicit opt-in, converted once.

Those files (original-system.md §6.1) hold, per image key ``str(image_id).encode()``, a pickled
dict (``image_id``, ``image_h``, ``image_w``, ``num_boxes``, ``boxes``, ``features`` and
sometimes ``cls_prob``) and, under ``b"keys"``, a pickled list of every image key. Pickle can
run code, so records are loaded through `twelve.features.safe_pickle` (numpy arrays and
builtins only) and only when the caller passes ``trust_pickle=True``. Lookups go straight to
the key; the key list is read only for `keys()` and `len()`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

import lmdb
import numpy as np
from pydantic import ValidationError

from twelve.features._lmdb_env import ENVIRONMENTS
from twelve.features.codec import ArrayInfo, RecordInfo, StorageDtype
from twelve.features.errors import (
    CorruptRecordError,
    FeatureStoreError,
    MissingImageError,
    NotAFeatureStoreError,
    UntrustedLegacyStoreError,
)
from twelve.features.header import StoreHeader
from twelve.features.record import RegionFeatures
from twelve.features.safe_pickle import UnsafePickleError, restricted_loads

LEGACY_EXTRACTOR: Final = "vilbert-multi-task-legacy"
_KEYS_KEY: Final = b"keys"


def is_legacy_store(path: str | Path) -> bool:
    """True when `path` is an LMDB with the original layout (a pickled key list at b"keys")."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        env = ENVIRONMENTS.acquire(path)
    except (lmdb.Error, OSError):
        return False
    try:
        with env.begin(buffers=True) as txn:
            return txn.get(_KEYS_KEY) is not None
    finally:
        ENVIRONMENTS.release(env)


class LegacyFeatureStore:
    """Read-only view of an original vilbert-multi-task LMDB with the twelve reader's API."""

    def __init__(self, path: str | Path, *, trust_pickle: bool) -> None:
        self.path = Path(path)
        if not trust_pickle:
            raise UntrustedLegacyStoreError(
                f"{self.path}: original vilbert-multi-task records are pickles; pass "
                "trust_pickle=True (--trust-pickle) only for files from a source you trust"
            )
        if not is_legacy_store(self.path):
            raise NotAFeatureStoreError(
                f"{self.path} is not an original vilbert-multi-task LMDB (no b'keys' record)"
            )
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._keys: list[str] | None = None
        self._header: StoreHeader | None = None

    def _handle(self) -> lmdb.Environment:
        """This process's LMDB environment, opened on first use (never across a fork)."""
        pid = os.getpid()
        if self._pid != pid:
            self._env, self._pid, self._lock = None, pid, threading.Lock()
        if self._env is None:
            with self._lock:
                if self._env is None:
                    self._env = ENVIRONMENTS.acquire(self.path)
        return self._env

    def _unpickle(self, raw: bytes, what: str) -> object:
        try:
            return restricted_loads(raw, allow_numpy=True, source=f"{self.path} {what}")
        except UnsafePickleError:
            raise
        except Exception as error:
            raise CorruptRecordError(str(self.path), what, f"unreadable pickle ({error})") from None

    def keys(self) -> list[str]:
        """Image ids in the order of the file's pickled key list."""
        if self._keys is None:
            with self._handle().begin() as txn:
                raw = txn.get(_KEYS_KEY)
            keys = self._unpickle(raw, "key list")
            if not isinstance(keys, list):
                raise CorruptRecordError(
                    str(self.path), "keys", f"expected a list, got {type(keys).__name__}"
                )
            self._keys = [_key_text(key, self.path) for key in keys]
        return list(self._keys)

    def __len__(self) -> int:
        if self._keys is None:
            self.keys()
        assert self._keys is not None
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str) or image_id == _KEYS_KEY.decode():
            return False
        with self._handle().begin(buffers=True) as txn:
            return txn.get(image_id.encode("utf-8")) is not None

    def get(self, image_id: str, as_float32: bool = True) -> RegionFeatures:
        """The record of `image_id`, converted from the original pickled dict."""
        if not isinstance(image_id, str):
            raise TypeError(f"{self.path}: image ids are strings, got {image_id!r}")
        raw = None
        if image_id != _KEYS_KEY.decode():
            with self._handle().begin() as txn:
                raw = txn.get(image_id.encode("utf-8"))
        if raw is None:
            raise MissingImageError(str(self.path), image_id, len(self))
        item = self._unpickle(raw, f"record {image_id!r}")
        record = legacy_record(item, image_id, str(self.path))
        if as_float32 and record.features.dtype != np.float32:
            record = record.model_copy(update={"features": record.features.astype(np.float32)})
        return record

    def info(self, image_id: str) -> RecordInfo:
        """Id, image size and array shapes of one record (decodes it: pickles have no index)."""
        record = self.get(image_id, as_float32=False)
        arrays = tuple(
            ArrayInfo(name, value.dtype.str, value.shape)
            for name in ("boxes", "features", "class_probs")
            if (value := getattr(record, name)) is not None
        )
        return RecordInfo(record.image_id, record.image_width, record.image_height, arrays)

    @property
    def header(self) -> StoreHeader:
        """A header describing the file as well as it can be known (no provenance was kept)."""
        if self._header is None:
            keys = self.keys()
            if not keys:
                raise FeatureStoreError(f"{self.path}: the key list is empty")
            first = self.get(keys[0], as_float32=False)
            data_file = self.path / "data.mdb" if self.path.is_dir() else self.path
            self._header = StoreHeader(
                extractor=LEGACY_EXTRACTOR,
                feature_dim=first.feature_dim,
                dtype="float16" if first.features.dtype == np.float16 else "float32",
                max_boxes=None,
                image_count=len(keys),
                created_at=datetime.fromtimestamp(data_file.stat().st_mtime, UTC),
                extra={"source": str(self.path)},
            )
        return self._header

    def close(self) -> None:
        """Release this process's LMDB handle."""
        if self._env is not None and self._pid == os.getpid():
            ENVIRONMENTS.release(self._env)
        self._env, self._pid = None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "keys": self._keys, "header": self._header}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._keys = state["keys"]
        self._header = state["header"]
        self._env, self._pid, self._lock = None, None, threading.Lock()


def _key_text(key: object, path: Path) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8")
    if isinstance(key, str):  # Python 2 pickles of byte strings arrive as str
        return key
    raise CorruptRecordError(str(path), repr(key), "key list entries must be bytes or str")


def legacy_record(item: object, image_id: str, store: str) -> RegionFeatures:
    """Turn one original pickled dict into a `RegionFeatures` (its `objects` field is skipped:
    the original computed it on a wrongly sliced matrix)."""
    if not isinstance(item, dict):
        raise CorruptRecordError(store, image_id, f"expected a dict, got {type(item).__name__}")
    fields = {_key_text(k, Path(store)): v for k, v in item.items()}
    missing = [name for name in ("image_w", "image_h", "boxes", "features") if name not in fields]
    if missing:
        raise CorruptRecordError(store, image_id, f"missing fields {missing}")
    features = np.asarray(fields["features"])
    class_probs = fields.get("cls_prob")
    if class_probs is not None:
        class_probs = np.asarray(class_probs)
        if class_probs.ndim != 2 or class_probs.shape[0] != features.shape[0]:
            class_probs = None  # kept only when it lines up with the stored boxes
    try:
        return RegionFeatures(
            image_id=image_id,
            image_width=int(fields["image_w"]),
            image_height=int(fields["image_h"]),
            boxes=np.asarray(fields["boxes"], dtype=np.float32).reshape(-1, 4),
            features=features,
            class_probs=class_probs,
        )
    except (ValidationError, ValueError, TypeError) as error:
        raise CorruptRecordError(store, image_id, str(error)) from None


def convert_legacy(
    source: str | Path,
    destination: str | Path,
    *,
    trust_pickle: bool,
    dtype: StorageDtype = "float32",
    extractor: str = LEGACY_EXTRACTOR,
    max_boxes: int | None = None,
    on_record: Callable[[str, bool], None] | None = None,
) -> StoreHeader:
    """Write an original LMDB as a twelve store (resumable: reruns skip converted images)."""
    from twelve.features.store import FeatureStore

    legacy = LegacyFeatureStore(source, trust_pickle=trust_pickle)
    try:
        keys = legacy.keys()
        writer = FeatureStore.create(
            destination,
            extractor=extractor,
            feature_dim=legacy.header.feature_dim,
            dtype=dtype,
            max_boxes=max_boxes,
            extra={"converted_from": str(Path(source).resolve())},
        )
        with writer:
            for image_id in keys:
                written = False
                if image_id not in writer:
                    written = writer.put(legacy.get(image_id, as_float32=False))
                if on_record is not None:
                    on_record(image_id, written)
            return writer.close()
    finally:
        legacy.close()
