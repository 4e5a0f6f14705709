"""The twelve feature store: one LMDB record per image, a provenance header, no pickle.

A store is a directory holding an LMDB environment with two named databases: ``records``
(utf-8 image id → record bytes, see `twelve.features.codec`) and ``meta`` (the JSON
`StoreHeader` and the build state that makes writing resumable). Writers build under
``<path>.partial`` and rename to ``<path>`` when closed, so a store is complete or absent.
Readers open LMDB lazily, once per process, read-only without locks or read-ahead, and look
records up by key.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Final,
    Literal,
    Protocol,
    Self,
    TypeVar,
    runtime_checkable,
)

import lmdb
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from twelve.features._lmdb_env import ENVIRONMENTS
from twelve.features.codec import (
    RecordFormatError,
    RecordInfo,
    StorageDtype,
    decode_record,
    encode_record,
    read_record_info,
)
from twelve.features.errors import (
    CorruptRecordError,
    FeatureStoreError,
    MissingImageError,
    NotAFeatureStoreError,
    StoreMismatchError,
    UntrustedLegacyStoreError,
)
from twelve.features.header import SCHEMA_VERSION, Sha256, StoreHeader, utc_now
from twelve.features.record import RegionFeatures

if TYPE_CHECKING:
    from twelve.features.legacy import LegacyFeatureStore

__all__ = [
    "CorruptRecordError",
    "FeatureSource",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStoreReader",
    "FeatureStoreWriter",
    "MissingImageError",
    "NotAFeatureStoreError",
    "StoreHeader",
    "StoreMismatchError",
    "StoreSpec",
    "UntrustedLegacyStoreError",
]

PARTIAL_SUFFIX: Final = ".partial"
_RECORDS_DB: Final = b"records"
_META_DB: Final = b"meta"
_HEADER_KEY: Final = b"header"
_BUILD_KEY: Final = b"build"
_MAX_KEY_BYTES: Final = 511  # LMDB's default key size limit
_MIB: Final = 1 << 20


@runtime_checkable
class FeatureSource(Protocol):
    """What datasets need from a store: a twelve store or an opted-in original LMDB file."""

    path: Path

    @property
    def header(self) -> StoreHeader:
        """Provenance and shape of the stored features."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, image_id: object) -> bool: ...

    def keys(self) -> list[str]:
        """All image ids, in key order."""
        ...

    def get(self, image_id: str, as_float32: bool = True) -> RegionFeatures:
        """The record of one image."""
        ...

    def info(self, image_id: str) -> RecordInfo:
        """Id, image size and array shapes of one record, cheaply."""
        ...


class StoreSpec(BaseModel):
    """How the records of a store are made; every writer of one store must agree on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extractor: Annotated[str, Field(min_length=1)]
    config_sha256: Sha256 | None = None
    weights_sha256: Sha256 | None = None
    feature_dim: Annotated[int, Field(gt=0)]
    dtype: Literal["float16", "float32"] = "float32"
    max_boxes: Annotated[int, Field(gt=0)] | None = None
    """Upper limit enforced on writes; None records the largest count written instead."""
    box_convention: Literal["xyxy"] = "xyxy"
    extra: dict[str, str] = Field(default_factory=dict)


class _BuildState(BaseModel):
    """Kept in the store so an interrupted (or finished) build can be continued."""

    spec: StoreSpec
    created_at: AwareDatetime
    max_boxes_seen: int = 0


def _image_key(image_id: object, store: Path) -> bytes:
    if not isinstance(image_id, str):
        raise TypeError(
            f"{store}: image ids are strings, got {type(image_id).__name__} {image_id!r} "
            f"(use str({image_id!r}))"
        )
    key = image_id.encode("utf-8")
    if not key or len(key) > _MAX_KEY_BYTES:
        raise ValueError(f"{store}: image id {image_id!r} must be 1..{_MAX_KEY_BYTES} utf-8 bytes")
    return key


@contextmanager
def _borrowed(path: Path) -> Iterator[lmdb.Environment]:
    """The shared read-only environment of `path`, with errors that say what is wrong."""
    if not path.exists():
        hint = ""
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        if partial.exists():
            hint = f"; an unfinished build is at {partial}: resume it to complete the store"
        raise NotAFeatureStoreError(f"no feature store at {path}{hint}")
    try:
        env = ENVIRONMENTS.acquire(path)
    except (lmdb.Error, OSError) as error:
        raise NotAFeatureStoreError(f"{path} is not an LMDB feature store ({error})") from None
    try:
        yield env
    finally:
        ENVIRONMENTS.release(env)


def _open_twelve_dbs(env: lmdb.Environment, path: Path) -> tuple[Any, Any]:
    try:
        return env.open_db(_RECORDS_DB, create=False), env.open_db(_META_DB, create=False)
    except (lmdb.NotFoundError, lmdb.Error):
        raise NotAFeatureStoreError(
            f"{path} is an LMDB file but not a twelve feature store (no 'records'/'meta' "
            "databases); original vilbert-multi-task files open with trust_pickle=True"
        ) from None


_Model = TypeVar("_Model", bound=BaseModel)


def _read_json_record(
    env: lmdb.Environment, meta: Any, key: bytes, model: type[_Model], path: Path
) -> _Model | None:
    with env.begin(db=meta) as txn:
        raw = txn.get(key)
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise FeatureStoreError(
            f"{path}: the store's {key.decode()} record is invalid (written by a newer or "
            f"broken twelve?):\n{error}"
        ) from None


class FeatureStore:
    """Entry point of the feature store: `create` a store to write, `open` one to read."""

    @staticmethod
    def create(
        path: str | Path,
        *,
        extractor: str,
        feature_dim: int,
        dtype: StorageDtype = "float32",
        max_boxes: int | None = None,
        config_sha256: str | None = None,
        weights_sha256: str | None = None,
        box_convention: Literal["xyxy"] = "xyxy",
        extra: dict[str, str] | None = None,
        resume: bool = True,
        batch_size: int = 64,
        batch_bytes: int = 256 * _MIB,
        map_size: int = 64 * _MIB,
    ) -> FeatureStoreWriter:
        """Start (or continue, with `resume`) writing the store at `path`.

        Records are committed every `batch_size` records or `batch_bytes` bytes; the LMDB map
        starts at `map_size` bytes and doubles whenever it is full.
        """
        spec = StoreSpec(
            extractor=extractor,
            config_sha256=config_sha256,
            weights_sha256=weights_sha256,
            feature_dim=feature_dim,
            dtype=dtype,
            max_boxes=max_boxes,
            box_convention=box_convention,
            extra=extra or {},
        )
        return FeatureStoreWriter(
            Path(path),
            spec,
            resume=resume,
            batch_size=batch_size,
            batch_bytes=batch_bytes,
            map_size=map_size,
        )

    @staticmethod
    def open(
        path: str | Path, *, trust_pickle: bool = False, check_checksums: bool = False
    ) -> FeatureStoreReader | LegacyFeatureStore:
        """Open a store for reading; an original pickled LMDB only with `trust_pickle=True`."""
        from twelve.features.legacy import LegacyFeatureStore, is_legacy_store

        path = Path(path)
        if is_legacy_store(path):
            if not trust_pickle:
                raise UntrustedLegacyStoreError(
                    f"{path} is an original vilbert-multi-task LMDB: its records are pickles, "
                    "which can run code when loaded. If you trust where it came from, open it "
                    "with trust_pickle=True (a restricted unpickler admits only numpy arrays "
                    "and builtins), or convert it once with `twelve features convert-legacy "
                    f"{path} DST --trust-pickle`"
                )
            return LegacyFeatureStore(path, trust_pickle=True)
        return FeatureStoreReader(path, check_checksums=check_checksums)


class FeatureStoreReader:
    """Read-only view of a twelve store; safe to pass to DataLoader workers (fork or spawn)."""

    def __init__(self, path: str | Path, *, check_checksums: bool = False) -> None:
        self.path = Path(path)
        self.check_checksums = check_checksums
        self._env: lmdb.Environment | None = None
        self._records: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        with _borrowed(self.path) as env:
            _, meta = _open_twelve_dbs(env, self.path)
            header = _read_json_record(env, meta, _HEADER_KEY, StoreHeader, self.path)
        if header is None:
            raise NotAFeatureStoreError(f"{self.path}: the store has no header (unfinished?)")
        self._header = header

    @property
    def header(self) -> StoreHeader:
        """Provenance and shape of the stored features."""
        return self._header

    def _handles(self) -> tuple[lmdb.Environment, Any]:
        """The LMDB environment of this process, opened on first use (never across a fork)."""
        pid = os.getpid()
        if self._pid != pid:
            # A forked child must not touch its parent's environment: drop it, open its own.
            self._env, self._records, self._pid = None, None, pid
            self._lock = threading.Lock()
        if self._env is None:
            with self._lock:
                if self._env is None:
                    with _borrowed(self.path) as env:
                        records, _ = _open_twelve_dbs(env, self.path)
                        self._env = ENVIRONMENTS.acquire(self.path)  # held until close()
                    self._records = records
        return self._env, self._records

    def __len__(self) -> int:
        return self._header.image_count

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str):
            return False
        env, records = self._handles()
        with env.begin(db=records, buffers=True) as txn:
            return txn.get(_image_key(image_id, self.path)) is not None

    def keys(self) -> list[str]:
        """All image ids, in key (byte) order; a scan, meant for listing, never for lookups."""
        env, records = self._handles()
        with env.begin(db=records) as txn:
            raw_keys = list(txn.cursor().iternext(keys=True, values=False))
        try:
            return [key.decode("utf-8") for key in raw_keys]
        except UnicodeDecodeError:
            bad = next(k for k in raw_keys if not _is_utf8(k))
            raise CorruptRecordError(str(self.path), repr(bad), "key is not utf-8") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get(self, image_id: str, as_float32: bool = True) -> RegionFeatures:
        """The record of `image_id`; float16 features come back as float32 unless told not to."""
        key = _image_key(image_id, self.path)
        env, records = self._handles()
        with env.begin(db=records, buffers=True) as txn:
            buf = txn.get(key)
            if buf is None:
                raise MissingImageError(str(self.path), image_id, len(self))
            try:
                record = decode_record(buf, as_float32=as_float32, check_crc=self.check_checksums)
            except RecordFormatError as error:
                raise CorruptRecordError(str(self.path), image_id, str(error)) from None
        if record.image_id != image_id:
            raise CorruptRecordError(
                str(self.path), image_id, f"it holds image {record.image_id!r} instead"
            )
        return record

    def info(self, image_id: str) -> RecordInfo:
        """Id, image size and array shapes of one record, without decoding its arrays."""
        key = _image_key(image_id, self.path)
        env, records = self._handles()
        with env.begin(db=records, buffers=True) as txn:
            buf = txn.get(key)
            if buf is None:
                raise MissingImageError(str(self.path), image_id, len(self))
            try:
                return read_record_info(buf)
            except RecordFormatError as error:
                raise CorruptRecordError(str(self.path), image_id, str(error)) from None

    def close(self) -> None:
        """Release this process's LMDB handle (it reopens on the next read)."""
        if self._env is not None and self._pid == os.getpid():
            ENVIRONMENTS.release(self._env)
        self._env, self._records, self._pid = None, None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for spawn-started workers: ship the path, never the LMDB handle.
        return {"path": self.path, "check_checksums": self.check_checksums, "header": self._header}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.check_checksums = state["check_checksums"]
        self._header = state["header"]
        self._env, self._records, self._pid = None, None, None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        h = self._header
        return (
            f"FeatureStoreReader({str(self.path)!r}, images={h.image_count}, "
            f"extractor={h.extractor!r}, dim={h.feature_dim}, dtype={h.dtype})"
        )


def _is_utf8(key: bytes) -> bool:
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class FeatureStoreWriter:
    """Writes records in batched transactions under `<path>.partial`; `close` publishes it.

    Ids already in the store are skipped, so rerunning an interrupted extraction continues
    where it stopped. Leaving the `with` block through an exception keeps the partial build
    (everything put so far is committed) for the next run to resume.
    """

    def __init__(
        self,
        path: Path,
        spec: StoreSpec,
        *,
        resume: bool,
        batch_size: int = 64,
        batch_bytes: int = 256 * _MIB,
        map_size: int = 64 * _MIB,
    ) -> None:
        if batch_size < 1 or batch_bytes < 1 or map_size < 1:
            raise ValueError("batch_size, batch_bytes and map_size must be positive")
        self.path = path
        self.partial_path = path.with_name(path.name + PARTIAL_SUFFIX)
        self.spec = spec
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._pending: dict[bytes, bytes] = {}
        self._pending_bytes = 0
        self._closed = False

        if path.exists():
            if not resume:
                raise FileExistsError(
                    f"{path} already exists; pass resume=True to add images to it, or delete it"
                )
            if self.partial_path.exists():
                raise FeatureStoreError(
                    f"both {path} and an unfinished {self.partial_path} exist; delete one"
                )
            if ENVIRONMENTS.is_open(path):
                raise FeatureStoreError(
                    f"{path} is open for reading in this process; close its readers "
                    "(reader.close()) before adding images to it"
                )
            self._check_existing(path)
            path.rename(self.partial_path)  # reopened for appending: published again on close
        elif self.partial_path.exists() and not resume:
            shutil.rmtree(self.partial_path)

        self.partial_path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(self.partial_path),
            map_size=map_size,
            max_dbs=2,
            subdir=True,
            readahead=False,
            meminit=False,
        )
        self._records = self._env.open_db(_RECORDS_DB)
        self._meta = self._env.open_db(_META_DB)
        try:
            state = _read_json_record(
                self._env, self._meta, _BUILD_KEY, _BuildState, self.partial_path
            )
            if state is None:
                state = _BuildState(spec=spec, created_at=utc_now())
            else:
                _check_same_spec(state.spec, spec, self.partial_path)
            self._state = state
            self._commit({})
        except BaseException:
            self._env.close()
            raise

    def _check_existing(self, path: Path) -> None:
        with _borrowed(path) as env:
            _, meta = _open_twelve_dbs(env, path)
            state = _read_json_record(env, meta, _BUILD_KEY, _BuildState, path)
        if state is None:
            raise NotAFeatureStoreError(f"{path}: no build record, cannot add images to it")
        _check_same_spec(state.spec, self.spec, path)

    @property
    def created_at(self) -> datetime:
        """When the build of this store first started."""
        return self._state.created_at

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str):
            return False
        key = _image_key(image_id, self.path)
        if key in self._pending:
            return True
        with self._env.begin(db=self._records, buffers=True) as txn:
            return txn.get(key) is not None

    def __len__(self) -> int:
        with self._env.begin(db=self._records) as txn:
            return int(txn.stat(self._records)["entries"]) + len(self._pending)

    def put(self, record: RegionFeatures) -> bool:
        """Queue one record; False (and nothing written) when its id is already stored."""
        if self._closed:
            raise FeatureStoreError(f"{self.path}: the writer is closed")
        if not isinstance(record, RegionFeatures):
            raise TypeError(f"put() takes a RegionFeatures, got {type(record).__name__}")
        if record.image_id in self:
            return False
        where = f"{self.path}: record {record.image_id!r}"
        if record.feature_dim != self.spec.feature_dim:
            raise StoreMismatchError(
                f"{where} has {record.feature_dim}-d features, the store holds "
                f"{self.spec.feature_dim}-d"
            )
        if self.spec.max_boxes is not None and record.num_boxes > self.spec.max_boxes:
            raise ValueError(
                f"{where} has {record.num_boxes} boxes, more than the store's max_boxes "
                f"{self.spec.max_boxes}"
            )
        value = encode_record(record, self.spec.dtype)
        self._pending[_image_key(record.image_id, self.path)] = value
        self._pending_bytes += len(value)
        self._state = self._state.model_copy(
            update={"max_boxes_seen": max(self._state.max_boxes_seen, record.num_boxes)}
        )
        if len(self._pending) >= self._batch_size or self._pending_bytes >= self._batch_bytes:
            self.flush()
        return True

    def flush(self) -> None:
        """Commit the queued records in one transaction (the map grows when it is full)."""
        if self._pending:
            self._commit(self._pending)
            self._pending = {}
            self._pending_bytes = 0

    def _commit(self, records: dict[bytes, bytes], header: StoreHeader | None = None) -> None:
        needed = sum(len(v) for v in records.values())
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in records.items():
                        txn.put(key, value, db=self._records)
                    txn.put(_BUILD_KEY, self._state.model_dump_json().encode(), db=self._meta)
                    if header is not None:
                        txn.put(_HEADER_KEY, header.model_dump_json().encode(), db=self._meta)
                return
            except lmdb.MapFullError:
                size = self._env.info()["map_size"]
                self._env.set_mapsize(max(2 * size, size + 2 * needed))

    def close(self) -> StoreHeader:
        """Commit what is queued, write the header and publish the store at its final path."""
        if self._closed:
            raise FeatureStoreError(f"{self.path}: the writer is already closed")
        self.flush()
        with self._env.begin(db=self._records) as txn:
            count = int(txn.stat(self._records)["entries"])
        spec = self.spec
        header = StoreHeader(
            schema_version=SCHEMA_VERSION,
            extractor=spec.extractor,
            config_sha256=spec.config_sha256,
            weights_sha256=spec.weights_sha256,
            feature_dim=spec.feature_dim,
            dtype=spec.dtype,
            max_boxes=spec.max_boxes if spec.max_boxes is not None else self._state.max_boxes_seen,
            box_convention=spec.box_convention,
            image_count=count,
            created_at=self._state.created_at,
            extra=spec.extra,
        )
        self._commit({}, header)
        self._env.sync(True)
        self._env.close()
        self._closed = True
        (self.partial_path / "lock.mdb").unlink(missing_ok=True)  # readers never lock
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} appeared while building; the finished store is at {self.partial_path}"
            )
        self.partial_path.rename(self.path)
        return header

    def abandon(self) -> None:
        """Commit what is queued and stop, keeping `<path>.partial` for a later resume."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._env.close()
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abandon()


def _check_same_spec(existing: StoreSpec, requested: StoreSpec, path: Path) -> None:
    differences = [
        f"{name}: store has {getattr(existing, name)!r}, requested {getattr(requested, name)!r}"
        for name in StoreSpec.model_fields
        if getattr(existing, name) != getattr(requested, name)
    ]
    if differences:
        raise StoreMismatchError(
            f"{path} was built differently; adding records would mix features:\n  "
            + "\n  ".join(differences)
            + "\nwrite to a new store, or delete this one to rebuild it"
        )
