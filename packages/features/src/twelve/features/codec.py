"""The binary record layout of the feature store: named arrays, versioned, no pickle.

Layout of format version 1 (little-endian):

    prefix (24 bytes)   magic b"TWRF" | u16 version | u16 array count | u32 image width |
                        u32 image height | u16 image-id length | u16 table length |
                        u32 crc32 of every byte after the prefix
    image id            utf-8
    array table         per array: u8 name length | name (ascii) | u8 dtype code | u8 ndim |
                        u32 × ndim shape | u32 offset | u32 byte length
    array data          from the first 16-byte boundary after the table; each array's C-order
                        bytes at its offset (relative to the data start, a multiple of 16)

Offsets are relative to the data, so records with the same array shapes share one table,
which is parsed and checked once and then reused (a small cache keyed by the table bytes).
Every read still checks the prefix and that the arrays fit in the record; the crc32 costs about
as much as the decode itself, so it is checked on request (`verify`). Float16 arrays are
widened to float32 with torch, which is ~10× faster than numpy.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

import numpy as np

from twelve.features.record import RegionFeatures

MAGIC: Final = b"TWRF"
FORMAT_VERSION: Final = 1
StorageDtype = Literal["float16", "float32"]

_PREFIX = struct.Struct("<4sHHIIHHI")
_ALIGN = 16
_MAX_ARRAYS = 32

_DTYPE_BY_CODE: Final[dict[int, np.dtype]] = {
    1: np.dtype("<f2"),
    2: np.dtype("<f4"),
    3: np.dtype("<i4"),
}
_CODE_BY_DTYPE: Final = {dtype: code for code, dtype in _DTYPE_BY_CODE.items()}


@dataclass(frozen=True)
class _ArraySpec:
    """How one named field of `RegionFeatures` is stored."""

    ndim: int
    stored: tuple[np.dtype, ...]  # dtypes allowed on disk
    returned: str | None  # dtype given back (None: as stored, or float32 on request)


# The fields of RegionFeatures, in the order they are written. Ids are stored as int32.
_FLOAT16, _FLOAT32, _INT32 = np.dtype("<f2"), np.dtype("<f4"), np.dtype("<i4")
_ARRAYS: Final[dict[str, _ArraySpec]] = {
    "boxes": _ArraySpec(2, (_FLOAT32,), "float32"),
    "features": _ArraySpec(2, (_FLOAT16, _FLOAT32), None),
    "class_probs": _ArraySpec(2, (_FLOAT16, _FLOAT32), None),
    "object_ids": _ArraySpec(1, (_INT32,), "int64"),
    "object_scores": _ArraySpec(1, (_FLOAT32,), "float32"),
    "attribute_ids": _ArraySpec(1, (_INT32,), "int64"),
    "attribute_scores": _ArraySpec(1, (_FLOAT32,), "float32"),
}
_FLOAT_BY_STORAGE: Final = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}


class RecordFormatError(ValueError):
    """Bytes that are not a valid record; the store turns it into `CorruptRecordError`."""


class ArrayInfo(NamedTuple):
    """Name, stored dtype and shape of one array in a record, read without decoding it."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RecordInfo:
    """What a record holds, read from its table only (cheap: for statistics and listings)."""

    image_id: str
    image_width: int
    image_height: int
    arrays: tuple[ArrayInfo, ...]

    @property
    def num_boxes(self) -> int:
        """Number of regions in the record."""
        return self.arrays[0].shape[0]

    @property
    def feature_dim(self) -> int:
        """Width of each region feature."""
        return next(a.shape[1] for a in self.arrays if a.name == "features")

    @property
    def feature_dtype(self) -> str:
        """Stored dtype of the features ("float16" or "float32")."""
        return next(np.dtype(a.dtype).name for a in self.arrays if a.name == "features")


def _to_storage_float(array: np.ndarray, dtype: np.dtype, image_id: str, name: str) -> np.ndarray:
    if array.dtype == dtype:
        return np.ascontiguousarray(array)
    if dtype == np.float16:
        import torch

        narrowed = torch.tensor(array, dtype=torch.float16).numpy()
        if not np.isfinite(narrowed).all() and np.isfinite(array).all():
            raise ValueError(
                f"record {image_id!r}: {name} has values beyond the float16 range (±65504); "
                "store this data as float32"
            )
        return narrowed
    return np.ascontiguousarray(array, dtype=dtype)


def encode_record(record: RegionFeatures, dtype: StorageDtype) -> bytes:
    """Serialise one record; features and class probabilities are stored as `dtype`."""
    float_dtype = _FLOAT_BY_STORAGE[dtype]
    arrays: list[tuple[str, np.ndarray]] = []
    for name in _ARRAYS:
        value = getattr(record, name)
        if value is None:
            continue
        if name in ("features", "class_probs"):
            value = _to_storage_float(value, float_dtype, record.image_id, name)
        elif name.endswith("_ids"):
            if value.size and (value.min() < -(2**31) or value.max() >= 2**31):
                raise ValueError(f"record {record.image_id!r}: {name} do not fit in int32")
            value = np.ascontiguousarray(value, dtype="<i4")
        else:
            value = np.ascontiguousarray(value, dtype="<f4")
        arrays.append((name, value))

    image_id = record.image_id.encode("utf-8")
    if len(image_id) > 0xFFFF:
        raise ValueError(f"record {record.image_id[:40]!r}...: image id over 65535 bytes")
    table = bytearray()
    chunks: list[tuple[int, bytes]] = []
    offset = 0
    for name, array in arrays:
        data = array.tobytes()
        table += struct.pack("<B", len(name)) + name.encode("ascii")
        table += struct.pack(
            f"<BB{array.ndim}I", _CODE_BY_DTYPE[array.dtype], array.ndim, *array.shape
        )
        table += struct.pack("<II", offset, len(data))
        chunks.append((offset, data))
        offset = _align(offset + len(data))

    data_start = _align(_PREFIX.size + len(image_id) + len(table))
    out = bytearray(data_start + chunks[-1][0] + len(chunks[-1][1]))
    position = _PREFIX.size
    out[position : position + len(image_id)] = image_id
    position += len(image_id)
    out[position : position + len(table)] = table
    for start, data in chunks:
        out[data_start + start : data_start + start + len(data)] = data
    crc = zlib.crc32(memoryview(out)[_PREFIX.size :])
    _PREFIX.pack_into(
        out,
        0,
        MAGIC,
        FORMAT_VERSION,
        len(arrays),
        record.image_width,
        record.image_height,
        len(image_id),
        len(table),
        crc,
    )
    return bytes(out)


def _align(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


class _Entry(NamedTuple):
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


_ENTRY_HEAD = struct.Struct("<BB")
_ENTRY_TAIL = {ndim: struct.Struct(f"<{ndim}III") for ndim in (1, 2)}  # shape, offset, nbytes


def _read_table(
    buf: memoryview | bytes,
) -> tuple[str, int, int, tuple[_Entry, ...], int, int]:
    """Check the prefix and parse the array table.

    Returns (image id, width, height, arrays, data start, crc).
    """
    size = len(buf)
    if size < _PREFIX.size:
        raise RecordFormatError(f"only {size} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, count, width, height, id_len, table_len, crc = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise RecordFormatError(f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise RecordFormatError(
            f"record format version {version}, this twelve reads version {FORMAT_VERSION}; "
            "upgrade twelve-features"
        )
    if width == 0 or height == 0:
        raise RecordFormatError(f"image size {width}x{height} is empty")
    table_start = _PREFIX.size + id_len
    data_start = _align(table_start + table_len)
    if data_start > size:
        raise RecordFormatError(
            f"image id ({id_len} bytes) and table ({table_len} bytes) run past the record "
            f"({size} bytes)"
        )
    try:
        image_id = str(buf[_PREFIX.size : table_start], "utf-8")
    except UnicodeDecodeError as error:
        raise RecordFormatError(f"image id is not utf-8 ({error})") from None
    entries, data_size = _parse_table(bytes(buf[table_start : table_start + table_len]), count)
    if data_start + data_size > size:
        raise RecordFormatError(
            f"arrays need {data_size} bytes from byte {data_start}, the record has {size}"
        )
    return image_id, width, height, entries, data_start, crc


@functools.lru_cache(maxsize=1024)
def _parse_table(table: bytes, count: int) -> tuple[tuple[_Entry, ...], int]:
    """Parse and check an array table (cached: a store's records share a few tables).

    Returns the arrays and the number of data bytes they span.
    """
    if not 2 <= count <= _MAX_ARRAYS:
        raise RecordFormatError(f"array count {count} out of range")
    entries = []
    pos = 0
    try:
        for _ in range(count):
            entry, pos = _read_entry(table, pos)
            entries.append(entry)
    except UnicodeDecodeError as error:
        raise RecordFormatError(f"an array name is not ascii ({error})") from None
    except (struct.error, IndexError) as error:
        raise RecordFormatError(f"array table is truncated or garbled ({error})") from None
    if pos != len(table):
        raise RecordFormatError(f"array table has {len(table) - pos} bytes left over")
    _check_entries(entries)
    return tuple(entries), max(e.offset + e.nbytes for e in entries)


def _read_entry(table: bytes, pos: int) -> tuple[_Entry, int]:
    """One table entry starting at `pos`, and where the next one starts."""
    name_len = table[pos]
    name = table[pos + 1 : pos + 1 + name_len].decode("ascii")
    code, ndim = _ENTRY_HEAD.unpack_from(table, pos + 1 + name_len)
    tail = _ENTRY_TAIL.get(ndim)
    if tail is None:
        raise RecordFormatError(f"array {name!r} has {ndim} dimensions")
    *shape, offset, nbytes = tail.unpack_from(table, pos + 3 + name_len)
    dtype = _DTYPE_BY_CODE.get(code)
    if dtype is None:
        raise RecordFormatError(f"array {name!r} has unknown dtype code {code}")
    return _Entry(name, dtype, tuple(shape), offset, nbytes), pos + 3 + name_len + tail.size


def _check_entries(entries: list[_Entry]) -> None:
    if entries[0].name != "boxes" or entries[1].name != "features":
        raise RecordFormatError(
            f"arrays {[e.name for e in entries]} do not start with boxes, features"
        )
    num_boxes = entries[0].shape[0]
    seen = set()
    for entry in entries:
        spec = _ARRAYS.get(entry.name)
        if spec is None or entry.name in seen:
            raise RecordFormatError(f"unknown or repeated array {entry.name!r}")
        seen.add(entry.name)
        if entry.dtype not in spec.stored:
            raise RecordFormatError(f"array {entry.name!r} stored as {entry.dtype}")
        if len(entry.shape) != spec.ndim or entry.shape[0] != num_boxes:
            raise RecordFormatError(
                f"array {entry.name!r} has shape {entry.shape}, expected {spec.ndim}-d "
                f"with {num_boxes} rows"
            )
        expected = math.prod(entry.shape) * entry.dtype.itemsize
        if entry.nbytes != expected or entry.offset % _ALIGN:
            raise RecordFormatError(
                f"array {entry.name!r} claims {entry.nbytes} bytes at offset {entry.offset} "
                f"(needs {expected}, aligned to {_ALIGN})"
            )
    if entries[0].shape[1] != 4:
        raise RecordFormatError(f"boxes have shape {entries[0].shape}, expected (N, 4)")


def read_record_info(buf: memoryview | bytes) -> RecordInfo:
    """Describe a record (id, size, array shapes and dtypes) without copying its arrays."""
    image_id, width, height, entries, _, _ = _read_table(buf)
    arrays = tuple(ArrayInfo(e.name, e.dtype.str, e.shape) for e in entries)
    return RecordInfo(image_id, width, height, arrays)


def decode_record(
    buf: memoryview | bytes, *, as_float32: bool = True, check_crc: bool = False
) -> RegionFeatures:
    """Rebuild the record; arrays are fresh writable copies (valid after `buf` goes away)."""
    image_id, width, height, entries, data_start, crc = _read_table(buf)
    if check_crc and zlib.crc32(memoryview(buf)[_PREFIX.size :]) != crc:
        raise RecordFormatError("crc32 mismatch: the stored bytes changed after writing")
    fields: dict[str, np.ndarray] = {}
    for name, dtype, shape, offset, nbytes in entries:
        view = np.frombuffer(
            buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=data_start + offset
        )
        returned = _ARRAYS[name].returned
        if returned is not None:
            value = view.astype(returned)  # int32 ids → int64 and little-endian floats: cheap
        elif as_float32 and dtype == _FLOAT16:
            value = _widen_float16(view)
        else:
            value = view.copy()
        fields[name] = value.reshape(shape)
    # The table checks above enforce every invariant RegionFeatures' validators would.
    return RegionFeatures.from_checked_arrays(image_id, width, height, fields)


def _widen_float16(view: np.ndarray) -> np.ndarray:
    import torch

    # torch.tensor copies a read-only array without a warning and converts with F16C.
    return torch.tensor(view, dtype=torch.float32).numpy()
