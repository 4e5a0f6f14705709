"""The binary record layout of the feature store: named arrays, versioned, no pickle.

Layout of format version 1 (little-endian; offsets from the start of the record):

    prefix (24 bytes)   magic b"TWRF" | u16 version | u16 array count | u32 image width |
                        u32 image height | u32 image-id length | u32 crc32 of bytes [24:]
    image id            utf-8
    array table         per array: u8 name length | name (ascii) | u8 dtype code | u8 ndim |
                        u32 × ndim shape | u32 offset | u32 byte length
    array data          each array's C-order bytes, starting on a 16-byte boundary

Reading checks the structure (magic, version, names, dtypes, shapes, bounds) on every record;
the crc32 of the payload costs about as much as the decode itself, so it is checked on request
(`verify`). Float16 arrays are widened to float32 with torch, which is ~10× faster than numpy.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from twelve.features.record import RegionFeatures

MAGIC: Final = b"TWRF"
FORMAT_VERSION: Final = 1
StorageDtype = Literal["float16", "float32"]

_PREFIX = struct.Struct("<4sHHIIII")
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
    stored: tuple[str, ...]  # dtypes allowed on disk
    returned: str | None  # dtype given back (None: as stored, or float32 on request)


# The fields of RegionFeatures, in the order they are written. Ids are stored as int32.
_ARRAYS: Final[dict[str, _ArraySpec]] = {
    "boxes": _ArraySpec(2, ("<f4",), "float32"),
    "features": _ArraySpec(2, ("<f2", "<f4"), None),
    "class_probs": _ArraySpec(2, ("<f2", "<f4"), None),
    "object_ids": _ArraySpec(1, ("<i4",), "int64"),
    "object_scores": _ArraySpec(1, ("<f4",), "float32"),
    "attribute_ids": _ArraySpec(1, ("<i4",), "int64"),
    "attribute_scores": _ArraySpec(1, ("<f4",), "float32"),
}
_FLOAT_BY_STORAGE: Final = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}


class RecordFormatError(ValueError):
    """Bytes that are not a valid record; the store turns it into `CorruptRecordError`."""


@dataclass(frozen=True)
class ArrayInfo:
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
    table = bytearray()
    table_size = sum(4 + len(name) + 4 * a.ndim + 8 for name, a in arrays)
    offset = _align(_PREFIX.size + len(image_id) + table_size)
    chunks: list[tuple[int, bytes]] = []
    for name, array in arrays:
        data = array.tobytes()
        table += struct.pack("<B", len(name)) + name.encode("ascii")
        table += struct.pack(
            f"<BB{array.ndim}I", _CODE_BY_DTYPE[array.dtype], array.ndim, *array.shape
        )
        table += struct.pack("<II", offset, len(data))
        chunks.append((offset, data))
        offset = _align(offset + len(data))

    out = bytearray(chunks[-1][0] + len(chunks[-1][1]))
    body_start = _PREFIX.size
    out[body_start : body_start + len(image_id)] = image_id
    out[body_start + len(image_id) : body_start + len(image_id) + len(table)] = table
    for start, data in chunks:
        out[start : start + len(data)] = data
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
        crc,
    )
    return bytes(out)


def _align(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


def _read_table(
    buf: memoryview | bytes,
) -> tuple[RecordInfo, list[tuple[ArrayInfo, int, int]], int]:
    """Parse and check the prefix and array table; return info, (array, offset, size), crc."""
    size = len(buf)
    if size < _PREFIX.size:
        raise RecordFormatError(f"only {size} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, count, width, height, id_len, crc = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise RecordFormatError(f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise RecordFormatError(
            f"record format version {version}, this twelve reads version {FORMAT_VERSION}; "
            "upgrade twelve-features"
        )
    if not 2 <= count <= _MAX_ARRAYS:
        raise RecordFormatError(f"array count {count} out of range")
    if width == 0 or height == 0:
        raise RecordFormatError(f"image size {width}x{height} is empty")
    pos = _PREFIX.size + id_len
    if pos > size:
        raise RecordFormatError(f"image id length {id_len} runs past the record ({size} bytes)")
    try:
        image_id = bytes(buf[_PREFIX.size : pos]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordFormatError(f"image id is not utf-8 ({error})") from None

    entries: list[tuple[ArrayInfo, int, int]] = []
    try:
        for _ in range(count):
            (name_len,) = struct.unpack_from("<B", buf, pos)
            name = bytes(buf[pos + 1 : pos + 1 + name_len]).decode("ascii")
            pos += 1 + name_len
            code, ndim = struct.unpack_from("<BB", buf, pos)
            shape = struct.unpack_from(f"<{ndim}I", buf, pos + 2)
            offset, nbytes = struct.unpack_from("<II", buf, pos + 2 + 4 * ndim)
            pos += 2 + 4 * ndim + 8
            entries.append((ArrayInfo(name, _dtype_name(code, name), shape), offset, nbytes))
    except (struct.error, UnicodeDecodeError) as error:
        raise RecordFormatError(f"array table is truncated or garbled ({error})") from None

    _check_arrays(entries, size)
    info = RecordInfo(image_id, width, height, tuple(entry[0] for entry in entries))
    return info, entries, crc


def _dtype_name(code: int, name: str) -> str:
    dtype = _DTYPE_BY_CODE.get(code)
    if dtype is None:
        raise RecordFormatError(f"array {name!r} has unknown dtype code {code}")
    return dtype.str


def _check_arrays(entries: list[tuple[ArrayInfo, int, int]], size: int) -> None:
    names = [entry[0].name for entry in entries]
    if names[:2] != ["boxes", "features"] or len(set(names)) != len(names):
        raise RecordFormatError(f"arrays {names} (need boxes, features first, no repeats)")
    num_boxes = entries[0][0].shape[0] if entries[0][0].shape else -1
    for array, offset, nbytes in entries:
        spec = _ARRAYS.get(array.name)
        if spec is None:
            raise RecordFormatError(f"unknown array {array.name!r}")
        if array.dtype not in spec.stored:
            raise RecordFormatError(f"array {array.name!r} stored as {array.dtype}")
        if len(array.shape) != spec.ndim or array.shape[0] != num_boxes:
            raise RecordFormatError(
                f"array {array.name!r} has shape {array.shape}, expected {spec.ndim}-d "
                f"with {num_boxes} rows"
            )
        if array.name == "boxes" and array.shape[1] != 4:
            raise RecordFormatError(f"boxes have shape {array.shape}, expected (N, 4)")
        expected = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize
        if nbytes != expected or offset + nbytes > size:
            raise RecordFormatError(
                f"array {array.name!r} claims bytes {offset}..{offset + nbytes} "
                f"(needs {expected}) in a {size}-byte record"
            )


def read_record_info(buf: memoryview | bytes) -> RecordInfo:
    """Describe a record (id, size, array shapes and dtypes) without copying its arrays."""
    return _read_table(buf)[0]


def decode_record(
    buf: memoryview | bytes, *, as_float32: bool = True, check_crc: bool = False
) -> RegionFeatures:
    """Rebuild the record; arrays are fresh writable copies (valid after `buf` goes away)."""
    info, entries, crc = _read_table(buf)
    if check_crc and zlib.crc32(memoryview(buf)[_PREFIX.size :]) != crc:
        raise RecordFormatError("crc32 mismatch: the stored bytes changed after writing")
    fields: dict[str, object] = {}
    for array, offset, nbytes in entries:
        dtype = np.dtype(array.dtype)
        view = np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        returned = _ARRAYS[array.name].returned
        if returned is not None:
            value = view.astype(returned)  # int32 ids → int64 and little-endian floats: cheap
        elif dtype == np.float16 and as_float32:
            value = _widen_float16(view)
        else:
            value = view.copy()
        fields[array.name] = value.reshape(array.shape)
    # The table checks above enforce every invariant RegionFeatures' validators would.
    return RegionFeatures.model_construct(
        image_id=info.image_id,
        image_width=info.image_width,
        image_height=info.image_height,
        **fields,
    )


def _widen_float16(view: np.ndarray) -> np.ndarray:
    import torch

    # torch.tensor copies a read-only array without a warning and converts with F16C.
    return torch.tensor(view, dtype=torch.float32).numpy()
