"""Regions: global token, 5-d locations, GT-box merging, truncation, +1 IoU, missing images."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from twelve.datasets.regions import (
    GLOBAL_LOCATION,
    MissingImageFeaturesError,
    append_regions,
    box_iou,
    spatial_locations,
    truncate,
    with_global_token,
    xywh_to_xyxy,
)
from twelve.datasets.tasks.base import RegionSource
from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore

worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))


def _record(image_id: str = "7", *, dtype: type = np.float32) -> RegionFeatures:
    return RegionFeatures(
        image_id=image_id,
        image_width=200,
        image_height=100,
        boxes=np.array([[0, 0, 100, 50], [50, 25, 150, 75], [10, 10, 20, 30]], np.float32),
        features=np.array([[1, 2], [3, 4], [5, 9]], dtype=dtype),
    )


def test_spatial_locations_are_the_originals() -> None:
    locations = spatial_locations(np.array([[0, 0, 100, 50], [50, 25, 150, 75]]), 200, 100)
    np.testing.assert_allclose(locations, [[0, 0, 0.5, 0.5, 0.25], [0.25, 0.25, 0.75, 0.75, 0.25]])


def test_global_token_first() -> None:
    regions = with_global_token(_record())
    assert regions.num_regions == 4
    assert regions.features.dtype == np.float32
    np.testing.assert_allclose(regions.features[0], [3, 5])  # mean of the region features
    np.testing.assert_array_equal(regions.locations[0], GLOBAL_LOCATION)
    np.testing.assert_array_equal(regions.boxes[0], [0, 0, 200, 100])  # the whole image
    np.testing.assert_array_equal(regions.boxes[1:], _record().boxes)
    np.testing.assert_allclose(regions.locations[3], [0.05, 0.1, 0.1, 0.3, 10 * 20 / 20000])


def test_float16_features_become_float32_with_a_float32_mean() -> None:
    regions = with_global_token(_record(dtype=np.float16))
    assert regions.features.dtype == np.float32
    np.testing.assert_allclose(regions.features[0], [3, 5])


def test_image_without_regions_is_an_error() -> None:
    empty = RegionFeatures(
        image_id="9",
        image_width=10,
        image_height=10,
        boxes=np.zeros((0, 4)),
        features=np.zeros((0, 2)),
    )
    with pytest.raises(ValueError, match="image '9' has no regions"):
        with_global_token(empty)


def test_ground_truth_regions_follow_the_detections_without_a_second_global() -> None:
    detected = with_global_token(_record())
    gt = RegionFeatures(
        image_id="7",
        image_width=200,
        image_height=100,
        boxes=np.array([[20, 20, 60, 60]], np.float32),
        features=np.array([[7, 7]], np.float32),
    )
    merged = append_regions(detected, gt)
    assert merged.num_regions == 5
    np.testing.assert_array_equal(merged.features[4], [7, 7])
    np.testing.assert_array_equal(merged.boxes[4], [20, 20, 60, 60])
    np.testing.assert_allclose(merged.locations[4], [0.1, 0.2, 0.3, 0.6, 1600 / 20000])
    wrong = gt.model_copy(update={"features": np.zeros((1, 3), np.float32)})
    with pytest.raises(ValueError, match="ground-truth features have width 3"):
        append_regions(detected, wrong)


def test_truncation_keeps_the_first_rows() -> None:
    regions = with_global_token(_record())
    cut = truncate(regions, 2)
    assert cut.num_regions == 2
    np.testing.assert_array_equal(cut.features, regions.features[:2])
    assert truncate(regions, 10) is regions


def test_iou_uses_the_plus_one_convention() -> None:
    boxes = np.array([[0, 0, 9, 9], [5, 5, 14, 14], [20, 20, 30, 30], [0, 0, 9, 9]])
    iou = box_iou(boxes, np.array([0, 0, 9, 9]))
    # 10×10 boxes; overlap 5×5 = 25 → 25 / (100 + 100 − 25)
    np.testing.assert_allclose(iou, [1.0, 25 / 175, 0.0, 1.0], rtol=1e-6)
    assert iou.dtype == np.float32


def test_xywh_boxes_convert_without_minus_one() -> None:
    np.testing.assert_array_equal(xywh_to_xyxy([10.5, 20, 100.25, 80]), [10.5, 20, 110.75, 100])


def test_region_source_names_the_task_and_the_missing_image(tmp_path: Path) -> None:
    store_path = worlds.write_store(tmp_path / "store", [_record("7")], dim=2)
    store = FeatureStore.open(store_path)
    source = RegionSource("refcoco", store, max_regions=3)
    assert source.detected("7").num_regions == 3
    with pytest.raises(
        MissingImageFeaturesError, match=r"refcoco: image id '8' not in the feature store"
    ):
        source.detected("8")
    with pytest.raises(MissingImageFeaturesError, match=r"refcoco: image id '8', '9'"):
        source.check(["7", "8", "9", "8"])
    with pytest.raises(ValueError, match="no ground-truth feature store"):
        source.with_ground_truth("7")
