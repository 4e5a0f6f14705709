"""Box selection (per-class NMS, ranking, min/max), given-box files and preprocessing rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torchvision.ops import nms

from twelve.features.extract.boxes_file import BoxesFileError, read_boxes_file
from twelve.features.extract.preprocess import prepare_image, resize_scale
from twelve.features.extract.selection import (
    BoxSelection,
    best_surviving_scores,
    select_regions,
)


def _reference_scores(
    boxes: torch.Tensor, probs: torch.Tensor, conf: float, iou: float
) -> torch.Tensor:
    """The original extractor's loop, written plainly: NMS over all boxes for every class."""
    best = torch.zeros(len(boxes))
    for c in range(1, probs.shape[1]):
        scores = probs[:, c]
        keep = nms(boxes, scores, iou)
        better = (scores[keep] > best[keep]) & (scores[keep] > conf)
        best[keep] = torch.where(better, scores[keep], best[keep])
    return best


def _random_detections(
    seed: int, n: int = 60, classes: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=generator) * 80
    wh = torch.rand(n, 2, generator=generator) * 40 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    probs = torch.softmax(torch.randn(n, classes, generator=generator) * 3, dim=1)
    return boxes, probs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("conf", [0.0, 0.05, 0.3])
def test_pruned_per_class_nms_equals_the_plain_loop(seed: int, conf: float) -> None:
    boxes, probs = _random_detections(seed)
    scores, classes = best_surviving_scores(boxes, probs, conf=conf, nms_iou=0.5)
    torch.testing.assert_close(scores, _reference_scores(boxes, probs, conf, 0.5))
    survived = scores > 0
    assert torch.all(classes[~survived] == 0)
    rows = torch.nonzero(survived).squeeze(1)
    torch.testing.assert_close(probs[rows, classes[rows]], scores[rows])


def test_selection_ranks_by_score_and_respects_max() -> None:
    boxes, probs = _random_detections(1)
    chosen = select_regions(boxes, probs, BoxSelection(min_boxes=5, max_boxes=12))
    assert len(chosen.indices) == 12
    assert torch.all(chosen.object_scores[:-1] >= chosen.object_scores[1:])
    reference = _reference_scores(boxes, probs, 0.0, 0.5)
    top = torch.sort(reference, descending=True).values[:12]
    torch.testing.assert_close(chosen.object_scores, top)
    torch.testing.assert_close(probs[chosen.indices, chosen.object_ids], chosen.object_scores)


def test_min_boxes_fills_with_boxes_that_passed_nowhere() -> None:
    boxes, probs = _random_detections(2)
    strict = BoxSelection(min_boxes=40, max_boxes=50, conf=0.6)
    passing = int((_reference_scores(boxes, probs, 0.6, 0.5) > 0).sum())
    assert passing < 40
    chosen = select_regions(boxes, probs, strict)
    assert len(chosen.indices) == 40
    assert len(set(chosen.indices.tolist())) == 40
    assert torch.all(chosen.object_ids >= 1)
    torch.testing.assert_close(probs[chosen.indices, chosen.object_ids], chosen.object_scores)
    assert torch.all(chosen.object_scores[:passing] > 0.6)


def test_background_never_counts_and_few_proposals_keep_all() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    probs = torch.tensor([[0.9, 0.06, 0.04], [0.8, 0.05, 0.15]])
    chosen = select_regions(boxes, probs, BoxSelection(min_boxes=10, max_boxes=100))
    assert chosen.indices.tolist() == [1, 0]
    assert chosen.object_ids.tolist() == [2, 1]


def test_selection_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="min_boxes"):
        BoxSelection(min_boxes=20, max_boxes=10)
    with pytest.raises(ValidationError):
        BoxSelection(nms=0.0)


def test_boxes_file_xyxy_and_xywh(tmp_path: Path) -> None:
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"139": [[10, 20, 30, 60], [0, 0, 5, 5]], "7": [[1.5, 2, 3, 4]]}))
    boxes = read_boxes_file(path)
    assert boxes["139"].dtype == np.float32
    np.testing.assert_array_equal(boxes["139"], [[10, 20, 30, 60], [0, 0, 5, 5]])
    xywh = read_boxes_file(path, "xywh")
    np.testing.assert_array_equal(xywh["139"], [[10, 20, 40, 80], [0, 0, 5, 5]])
    np.testing.assert_array_equal(xywh["7"], [[1.5, 2, 4.5, 6]])


def test_boxes_file_that_is_really_xywh_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"139": [[100, 120, 30, 40]]}))
    with pytest.raises(BoxesFileError, match=r"image '139', box 0.*--box-format xywh"):
        read_boxes_file(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "JSON object"),
        ('{"a": []}', "non-empty list"),
        ('{"a": [[1, 2, 3]]}', "expected 4 numbers"),
        ('{"a": [[1, "x", 3, 4]]}', "not a finite number"),
        ('{"a": [[1, NaN, 3, 4]]}', "not a finite number"),
        ("{nope", "not valid JSON"),
    ],
)
def test_boxes_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "boxes.json"
    path.write_text(content)
    with pytest.raises(BoxesFileError, match=message) as caught:
        read_boxes_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((480, 640), 800 / 480),  # short side to 800, long side 1067 fits
        ((500, 2000), 1333 / 2000),  # long side would be 3200: capped at 1333
        ((800, 800), 1.0),
    ],
)
def test_resize_rule_of_the_original(size: tuple[int, int], expected: float) -> None:
    assert resize_scale(*size, short_side=800, max_size=1333) == pytest.approx(expected)


def test_prepare_image_flips_to_bgr_and_resizes() -> None:
    rgb = np.zeros((30, 60, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    resized = prepare_image(rgb, short_side=60, max_size=1000)
    assert resized.scale == 2.0
    assert resized.pixels.shape == (3, 60, 120)
    assert resized.pixels.dtype == torch.float32
    assert torch.all(resized.pixels[2] == 200)
    assert torch.all(resized.pixels[0] == 0)
    rgb_order = prepare_image(rgb, short_side=30, max_size=1000, channel_order="RGB")
    assert rgb_order.scale == 1.0
    assert torch.all(rgb_order.pixels[0] == 200)
