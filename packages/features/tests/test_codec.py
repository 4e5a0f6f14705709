"""The record codec: exact fp32 and close fp16 round trips, and clear errors on bad bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest

from twelve.features.codec import (
    FORMAT_VERSION,
    RecordFormatError,
    decode_record,
    encode_record,
    read_record_info,
)
from twelve.features.record import RegionFeatures

MakeRecord = Callable[..., RegionFeatures]

OPTIONAL = ("class_probs", "object_ids", "object_scores", "attribute_ids", "attribute_scores")


def _assert_same(a: RegionFeatures, b: RegionFeatures, *, atol: float = 0.0) -> None:
    assert (a.image_id, a.image_width, a.image_height) == (
        b.image_id,
        b.image_width,
        b.image_height,
    )
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(a.features, b.features, atol=atol, rtol=atol)
    for name in OPTIONAL:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            np.testing.assert_allclose(left, right, atol=atol, rtol=atol)
            assert left.dtype == right.dtype or name == "class_probs", name


def test_float32_round_trip_is_exact(make_record: MakeRecord) -> None:
    record = make_record("139")
    decoded = decode_record(encode_record(record, "float32"), check_crc=True)
    _assert_same(record, decoded)
    assert decoded.features.dtype == np.float32
    assert decoded.object_ids.dtype == np.int64
    assert decoded.features.flags.writeable
    assert decoded.features.flags.owndata is not None


def test_float16_storage_reads_back_as_float32_or_float16(make_record: MakeRecord) -> None:
    record = make_record("a", feature_dim=64)
    data = encode_record(record, "float16")
    widened = decode_record(data)
    assert widened.features.dtype == np.float32
    assert widened.class_probs.dtype == np.float32
    _assert_same(record, widened, atol=1e-3)
    np.testing.assert_array_equal(
        widened.features, record.features.astype(np.float16).astype(np.float32)
    )
    narrow = decode_record(data, as_float32=False)
    assert narrow.features.dtype == np.float16
    assert narrow.class_probs.dtype == np.float16
    np.testing.assert_array_equal(narrow.features, record.features.astype(np.float16))


def test_float16_halves_the_feature_bytes(make_record: MakeRecord) -> None:
    record = make_record("a", num_boxes=100, feature_dim=2048, num_classes=None)
    fp32, fp16 = len(encode_record(record, "float32")), len(encode_record(record, "float16"))
    assert fp32 > 100 * 2048 * 4
    assert fp16 < 0.51 * fp32


def test_optional_fields_stay_absent_and_ids_can_be_unicode(make_record: MakeRecord) -> None:
    record = make_record("nlvr2-dev-ünï-img0", num_classes=None)
    decoded = decode_record(encode_record(record, "float32"))
    _assert_same(record, decoded)
    assert decoded.class_probs is None


def test_zero_boxes_round_trip(make_record: MakeRecord) -> None:
    record = make_record("empty", num_boxes=0)
    assert decode_record(encode_record(record, "float16")).num_boxes == 0


def test_record_info_reads_only_the_table(make_record: MakeRecord) -> None:
    record = make_record("x", num_boxes=9, feature_dim=48)
    info = read_record_info(encode_record(record, "float16"))
    assert (info.image_id, info.num_boxes, info.feature_dim) == ("x", 9, 48)
    assert info.feature_dtype == "float16"
    assert [a.name for a in info.arrays] == ["boxes", "features", *OPTIONAL]


def test_values_beyond_float16_range_are_refused(make_record: MakeRecord) -> None:
    record = make_record("big")
    huge = record.model_copy(update={"features": record.features * 1e6})
    with pytest.raises(ValueError, match=r"'big'.*float16 range"):
        encode_record(huge, "float16")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "shorter than"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack("<H", FORMAT_VERSION + 1) + b[6:], "format version 2"),
        (lambda b: b[: len(b) // 2], "arrays need .* the record has"),
        (lambda b: b[:24] + b"\xff" * 8 + b[32:], r"not utf-8|garbled|unknown|expected"),
        (lambda b: b"\x00" * len(b), "bad magic"),
    ],
)
def test_corrupt_bytes_raise_record_format_error(
    make_record: MakeRecord, mutate: Callable[[bytes], bytes], message: str
) -> None:
    data = encode_record(make_record("img-with-long-id-0001"), "float32")
    with pytest.raises(RecordFormatError, match=message):
        decode_record(mutate(data))


def test_flipped_payload_bit_is_caught_by_the_checksum(make_record: MakeRecord) -> None:
    data = bytearray(encode_record(make_record("x"), "float32"))
    data[-5] ^= 0x10
    decode_record(bytes(data))  # structure is intact, so a plain read succeeds
    with pytest.raises(RecordFormatError, match="crc32"):
        decode_record(bytes(data), check_crc=True)
