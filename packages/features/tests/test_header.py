"""StoreHeader: validation, JSON round trip, class names and file fingerprints."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pydantic
import pytest

from twelve.features.header import OBJECT_CLASSES_KEY, StoreHeader, sha256_file, utc_now


def _header(**changes: object) -> StoreHeader:
    fields: dict[str, object] = {
        "extractor": "butd-r101-c4",
        "feature_dim": 2048,
        "dtype": "float16",
        "max_boxes": 100,
        "image_count": 3,
        "created_at": utc_now(),
    }
    fields.update(changes)
    return StoreHeader(**fields)


def test_json_round_trip_and_defaults() -> None:
    header = _header(extra={"tool": "twelve"})
    assert header.schema_version == 1
    assert header.box_convention == "xyxy"
    assert StoreHeader.model_validate_json(header.model_dump_json()) == header


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("config_sha256", "not-a-hash"),
        ("weights_sha256", "AB" * 32),  # upper case is not how hexdigest() spells it
        ("dtype", "bfloat16"),
        ("box_convention", "xywh"),
        ("schema_version", 2),
        ("feature_dim", 0),
        ("created_at", datetime(2020, 1, 1)),  # naive times are refused
        ("unknown_field", 1),
    ],
)
def test_invalid_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        _header(**{field: value})


def test_class_names() -> None:
    assert _header().class_names() is None
    names = ["__background__", "cat", "dog"]
    assert _header(extra={OBJECT_CLASSES_KEY: json.dumps(names)}).class_names() == names
    with pytest.raises(ValueError, match="JSON list of strings"):
        _header(extra={OBJECT_CLASSES_KEY: json.dumps({"a": 1})}).class_names()


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x00" * 3_000_000)
    assert sha256_file(path, chunk_size=1 << 16) == hashlib.sha256(b"\x00" * 3_000_000).hexdigest()
