"""RegionFeatures: coercion to the documented dtypes and shape checks that name the image."""

from __future__ import annotations

import pickle

import numpy as np
import pydantic
import pytest

from twelve.features.record import RegionFeatures


def _fields(n: int = 3, d: int = 8) -> dict[str, object]:
    return {
        "image_id": "img",
        "image_width": 100,
        "image_height": 50,
        "boxes": np.zeros((n, 4)),
        "features": np.zeros((n, d), dtype=np.float32),
    }


def test_arrays_are_coerced_to_documented_dtypes() -> None:
    record = RegionFeatures(
        **_fields(),
        object_ids=np.array([1, 2, 3], dtype=np.int32),
        object_scores=[0.1, 0.2, 0.3],
        attribute_ids=[4, 5, 6],
        attribute_scores=np.ones(3, dtype=np.float64),
    )
    assert record.boxes.dtype == np.float32
    assert record.object_ids.dtype == np.int64
    assert record.object_scores.dtype == np.float32
    assert record.attribute_ids.dtype == np.int64
    assert record.attribute_scores.dtype == np.float32
    assert (record.num_boxes, record.feature_dim) == (3, 8)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float16, np.float16),
        (np.float32, np.float32),
        (np.float64, np.float32),
        (int, np.float32),
    ],
)
def test_features_keep_float16_or_float32(dtype: type, expected: type) -> None:
    fields = _fields()
    fields["features"] = np.zeros((3, 8), dtype=dtype)
    assert RegionFeatures(**fields).features.dtype == expected


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("boxes", np.zeros((3, 5)), "boxes must be (N, 4)"),
        ("features", np.zeros((2, 8)), "features must be (3, D)"),
        ("class_probs", np.zeros((4, 11)), "class_probs must be (3, C)"),
        ("object_ids", np.zeros(2), "object_ids must be (3,)"),
        ("attribute_scores", np.zeros((3, 1)), "attribute_scores must be (3,)"),
    ],
)
def test_wrong_shapes_are_rejected_naming_the_image(
    field: str, value: object, message: str
) -> None:
    fields = _fields()
    fields[field] = value
    with pytest.raises(pydantic.ValidationError, match=r"image_id='img'.*") as info:
        RegionFeatures(**fields)
    assert message in str(info.value)


@pytest.mark.parametrize(("field", "value"), [("image_id", ""), ("image_width", 0)])
def test_empty_id_and_size_are_rejected(field: str, value: object) -> None:
    fields = _fields()
    fields[field] = value
    with pytest.raises(pydantic.ValidationError, match=field):
        RegionFeatures(**fields)


def test_records_are_frozen() -> None:
    record = RegionFeatures(**_fields())
    with pytest.raises(pydantic.ValidationError):
        record.image_id = "other"  # type: ignore[misc]


def test_unvalidated_build_behaves_like_a_validated_record() -> None:
    arrays = {
        "boxes": np.ones((3, 4), dtype=np.float32),
        "features": np.zeros((3, 8), dtype=np.float16),
        "object_ids": np.arange(3, dtype=np.int64),
    }
    fast = RegionFeatures.from_checked_arrays("img", 100, 50, arrays)
    slow = RegionFeatures(image_id="img", image_width=100, image_height=50, **arrays)
    for name in RegionFeatures.model_fields:
        left, right = getattr(fast, name), getattr(slow, name)
        if isinstance(right, np.ndarray):
            np.testing.assert_array_equal(left, right)
        else:
            assert left == right, name
    assert (fast.num_boxes, fast.feature_dim) == (3, 8)
    assert fast.model_copy(update={"image_id": "other"}).image_id == "other"
    assert pickle.loads(pickle.dumps(fast)).image_id == "img"
    assert "image_id='img'" in repr(fast)
    with pytest.raises(pydantic.ValidationError):
        fast.image_id = "changed"  # type: ignore[misc]
