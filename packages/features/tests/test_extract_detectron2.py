"""Extraction with detectron2 and random weights: both presets (shrunk), both modes, the command.

The presets are exercised with small backbones (overrides on the shipped YAML) so a test
takes a fraction of a second; the full-size presets are only built on the meta device.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("detectron2", reason="detectron2 is not installed")

from twelve.features.extract.command import extract_command
from twelve.features.extract.detector import (
    DetectorConfigError,
    RegionDetector,
    build_detector,
    load_detector_config,
)
from twelve.features.extract.extractor import RegionExtractor
from twelve.features.extract.images import ImageSource, LoadedImage
from twelve.features.extract.selection import BoxSelection
from twelve.features.extract.weights import WeightsError
from twelve.features.header import sha256_file
from twelve.features.store import FeatureStore

pytestmark = pytest.mark.detectron2

SMALL_INPUT = [
    "INPUT.MIN_SIZE_TEST=96",
    "INPUT.MAX_SIZE_TEST=160",
    "MODEL.RPN.PRE_NMS_TOPK_TEST=300",
    "MODEL.RPN.POST_NMS_TOPK_TEST=40",
]
SMALL_RESNET = [
    "MODEL.RESNETS.DEPTH=50",
    "MODEL.RESNETS.STEM_OUT_CHANNELS=16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS=32",
    "MODEL.ROI_HEADS.NUM_CLASSES=12",
]
SMALL = {
    "butd-r101-c4": [
        *SMALL_INPUT,
        *SMALL_RESNET,
        "MODEL.RESNETS.WIDTH_PER_GROUP=8",
        "MODEL.ROI_ATTRIBUTE_HEAD.NUM_CLASSES=6",
        "MODEL.ROI_ATTRIBUTE_HEAD.OBJ_EMBED_DIM=8",
        "MODEL.ROI_ATTRIBUTE_HEAD.FC_DIM=16",
    ],
    "vg-x152-fpn": [
        *SMALL_INPUT,
        *SMALL_RESNET,
        "MODEL.RESNETS.NUM_GROUPS=2",
        "MODEL.RESNETS.WIDTH_PER_GROUP=4",
        "MODEL.FPN.OUT_CHANNELS=16",
        "MODEL.ROI_BOX_HEAD.FC_DIM=24",
    ],
}
FEATURE_DIM = {"butd-r101-c4": 256, "vg-x152-fpn": 24}


def _images(count: int = 3) -> list[LoadedImage]:
    rng = np.random.default_rng(7)
    sizes = [(120, 160), (90, 70), (100, 100), (64, 200)]
    return [
        LoadedImage(
            source=ImageSource(f"img{i}", Path(f"img{i}.png")),
            rgb=rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8),
            file_format="PNG",
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module", params=sorted(SMALL))
def detector(request: pytest.FixtureRequest) -> RegionDetector:
    torch.set_num_threads(1)
    config = load_detector_config(request.param, SMALL[request.param])
    return build_detector(config, random_seed=0)


def test_detection_records_follow_the_selection_rules(detector: RegionDetector) -> None:
    selection = BoxSelection(min_boxes=5, max_boxes=20)
    images = _images()
    records = RegionExtractor(detector, selection).extract(images)
    assert [r.image_id for r in records] == ["img0", "img1", "img2"]
    for record, image in zip(records, images, strict=True):
        assert (record.image_width, record.image_height) == (image.width, image.height)
        assert 5 <= record.num_boxes <= 20
        assert record.feature_dim == FEATURE_DIM[detector.config.name]
        assert np.isfinite(record.features).all()
        boxes = record.boxes
        assert (boxes[:, 2] >= boxes[:, 0]).all()
        assert (boxes[:, 3] >= boxes[:, 1]).all()
        assert boxes[:, 0::2].min() >= 0
        assert boxes[:, 0::2].max() <= image.width
        assert boxes[:, 1::2].min() >= 0
        assert boxes[:, 1::2].max() <= image.height
        assert record.class_probs is not None
        assert record.class_probs.shape[1] == 13
        np.testing.assert_allclose(record.class_probs.sum(axis=1), 1.0, rtol=1e-5)
        rows = np.arange(record.num_boxes)
        np.testing.assert_allclose(
            record.class_probs[rows, record.object_ids], record.object_scores, rtol=1e-6
        )
        assert (record.object_ids >= 1).all()
        assert (np.diff(record.object_scores) <= 1e-7).all()
        if detector.config.name == "butd-r101-c4":
            assert record.attribute_ids is not None
            assert record.attribute_scores is not None
            assert ((record.attribute_ids >= 1) & (record.attribute_ids <= 6)).all()
        else:
            assert record.attribute_ids is None


def test_given_boxes_give_features_at_exactly_those_boxes_in_order(
    detector: RegionDetector,
) -> None:
    extractor = RegionExtractor(detector)
    images = _images(2)
    detected = extractor.extract(images)
    # Feeding the detected boxes back as given boxes reproduces their features: the mapping
    # between original and resized pixels is consistent both ways.
    given = [record.boxes for record in detected]
    again = extractor.extract(images, given)
    for first, second in zip(detected, again, strict=True):
        np.testing.assert_array_equal(second.boxes, first.boxes)
        np.testing.assert_allclose(second.features, first.features, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(second.class_probs, first.class_probs, rtol=1e-3, atol=1e-4)
    # Order is kept: reversing the boxes reverses the rows.
    reversed_boxes = [b[::-1].copy() for b in given]
    flipped = extractor.extract(images, reversed_boxes)
    for straight, backwards in zip(again, flipped, strict=True):
        np.testing.assert_allclose(
            backwards.features, straight.features[::-1], rtol=1e-4, atol=1e-4
        )
        np.testing.assert_array_equal(backwards.boxes, straight.boxes[::-1])


def test_hand_written_boxes_are_stored_verbatim(detector: RegionDetector) -> None:
    image = _images(1)[0]
    boxes = np.array([[0, 0, 160, 120], [10.5, 20.25, 30, 40], [100, 60, 101, 61]], np.float32)
    (record,) = RegionExtractor(detector).extract([image], [boxes])
    np.testing.assert_array_equal(record.boxes, boxes)
    assert record.num_boxes == 3
    assert not np.allclose(record.features[0], record.features[1])


def test_extraction_is_deterministic_for_a_seed(detector: RegionDetector) -> None:
    again = build_detector(detector.config, random_seed=0)
    images = _images(1)
    first = RegionExtractor(detector).extract(images)[0]
    second = RegionExtractor(again).extract(images)[0]
    np.testing.assert_array_equal(first.boxes, second.boxes)
    np.testing.assert_array_equal(first.features, second.features)


@pytest.mark.parametrize(
    ("preset", "dim", "classes", "attributes"),
    [("vg-x152-fpn", 2048, 1601, None), ("butd-r101-c4", 2048, 1601, 401)],
)
def test_full_size_presets_build_on_the_meta_device(
    preset: str, dim: int, classes: int, attributes: int | None
) -> None:
    detector = build_detector(load_detector_config(preset), random_seed=0, device="meta")
    assert detector.feature_dim == dim
    assert detector.num_classes == classes
    assert detector.num_attributes == attributes
    parameters = sum(p.numel() for p in detector.model.parameters())
    assert parameters > (150e6 if preset == "vg-x152-fpn" else 60e6)
    cfg = detector.config.cfg
    if preset == "vg-x152-fpn":
        assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NUM_GROUPS) == (152, 32)
        assert detector.feature_layer == "fc6"
        assert detector.size_divisibility == 32
        assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)
    else:
        assert cfg.MODEL.RESNETS.DEPTH == 101
        assert detector.feature_layer == "head"
        assert type(detector.model.backbone.stem).__name__ == "CaffePoolStem"


def test_config_fingerprint_tracks_the_resolved_config() -> None:
    base = load_detector_config("butd-r101-c4")
    assert base.sha256 == load_detector_config("butd-r101-c4").sha256
    changed = load_detector_config("butd-r101-c4", ["INPUT.MIN_SIZE_TEST=800"])
    assert changed.sha256 != base.sha256
    assert "MIN_SIZE_TEST: 800" in changed.yaml


def test_user_yaml_with_base_and_bad_configs(tmp_path: Path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text(
        "_BASE_: Base-RCNN-C4.yaml\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 5\n"
        "TWELVE:\n  FEATURE_LAYER: head\n"
    )
    from detectron2.model_zoo import get_config_file

    (tmp_path / "Base-RCNN-C4.yaml").write_text(
        Path(get_config_file("Base-RCNN-C4.yaml")).read_text()
    )
    config = load_detector_config(user)
    assert config.name == "mine"
    assert config.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 5
    with pytest.raises(DetectorConfigError, match="neither a preset"):
        load_detector_config(tmp_path / "absent.yaml")
    with pytest.raises(DetectorConfigError, match="KEY=VALUE"):
        load_detector_config("butd-r101-c4", ["MODEL.RESNETS.DEPTH"])
    with pytest.raises(DetectorConfigError, match="FEATURE_LAYER"):
        load_detector_config("butd-r101-c4", ["TWELVE.FEATURE_LAYER=fc7"])
    c4_with_fc6 = load_detector_config(
        "butd-r101-c4", [*SMALL["butd-r101-c4"], "TWELVE.FEATURE_LAYER=fc6"]
    )
    with pytest.raises(DetectorConfigError, match="fc6"):
        build_detector(c4_with_fc6, random_seed=0)


def test_weights_load_from_pth_and_trusted_pickle_only(tmp_path: Path) -> None:
    config = load_detector_config("vg-x152-fpn", SMALL["vg-x152-fpn"])
    source = build_detector(config, random_seed=1)
    state = source.model.state_dict()
    torch.save({"model": state, "iteration": 5}, tmp_path / "model.pth")
    loaded = build_detector(config, weights=tmp_path / "model.pth")
    images = _images(1)
    expected = RegionExtractor(source).extract(images)[0]
    np.testing.assert_array_equal(
        RegionExtractor(loaded).extract(images)[0].features, expected.features
    )

    with (tmp_path / "model.pkl").open("wb") as file:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}}, file)
    with pytest.raises(WeightsError, match="--trust-pickle"):
        build_detector(config, weights=tmp_path / "model.pkl")
    trusted = build_detector(config, weights=tmp_path / "model.pkl", trust_pickle=True)
    np.testing.assert_array_equal(
        RegionExtractor(trusted).extract(images)[0].features, expected.features
    )

    other = load_detector_config(
        "vg-x152-fpn", [*SMALL["vg-x152-fpn"], "MODEL.ROI_HEADS.NUM_CLASSES=7"]
    )
    with pytest.raises(WeightsError, match=r"another shape.*cls_score"):
        build_detector(other, weights=tmp_path / "model.pth")
    torch.save({"model": {"backbone.nonsense": torch.zeros(1)}}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match=r"missing.*unexpected: backbone.nonsense"):
        build_detector(config, weights=tmp_path / "wrong.pth")


def _write_images(folder: Path) -> None:
    folder.mkdir()
    for image in _images(3):
        Image.fromarray(image.rgb).save(folder / f"{image.source.image_id}.png")


def _run(*args: str) -> tuple[int, str]:
    small = [item for override in SMALL["butd-r101-c4"] for item in ("--set", override)]
    result = CliRunner().invoke(
        extract_command,
        [*args, "--config", "butd-r101-c4", *small, "--no-progress", "--threads", "1"],
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_command_extracts_resumes_and_reports_unreadable_images(tmp_path: Path) -> None:
    images, store = tmp_path / "images", tmp_path / "store"
    _write_images(images)
    code, output = _run(str(images), str(store), "--random-weights", "3", "--max-boxes", "16")
    assert code == 0, output
    reader = FeatureStore.open(store)
    assert sorted(reader.keys()) == ["img0", "img1", "img2"]
    header = reader.header
    assert header.extractor == "butd-r101-c4"
    assert header.feature_dim == 256
    assert header.dtype == "float16"
    assert header.max_boxes == 16
    assert (
        header.config_sha256 == load_detector_config("butd-r101-c4", SMALL["butd-r101-c4"]).sha256
    )
    assert header.weights_sha256 is None
    assert header.extra["weights"] == "random (seed 3)"
    assert json.loads(header.extra["selection"])["max_boxes"] == 16
    record = reader.get("img1")
    assert record.features.dtype == np.float32
    assert record.num_boxes <= 16
    reader.close()

    (images / "broken.jpg").write_bytes(b"garbage")
    code, output = _run(str(images), str(store), "--random-weights", "3", "--max-boxes", "16")
    assert code == 1
    assert "0 images extracted" in output
    assert "3 already in the store" in output
    assert "broken.jpg" in output
    assert "1 skipped" in output
    assert len(FeatureStore.open(store)) == 3

    # Other weights would mix features from two detectors in one store: refused.
    code, output = _run(str(images), str(store), "--random-weights", "4", "--max-boxes", "16")
    assert code == 1
    assert "built differently" in output
    assert "random (seed 4)" in output


def test_command_given_boxes_and_weights_fingerprint(tmp_path: Path) -> None:
    images, store = tmp_path / "images", tmp_path / "gt"
    _write_images(images)
    config = load_detector_config("butd-r101-c4", SMALL["butd-r101-c4"])
    torch.save(build_detector(config, random_seed=2).model.state_dict(), tmp_path / "w.pth")
    boxes = {"img0": [[5, 5, 60, 40], [0, 0, 160, 120]], "img2": [[10, 10, 20, 30]]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    code, output = _run(
        str(images), str(store), "--weights", str(tmp_path / "w.pth"),
        "--boxes", str(tmp_path / "boxes.json"), "--dtype", "float32", "--no-class-probs",
    )  # fmt: skip
    assert code == 0, output
    assert "1 not in the boxes file" in output
    reader = FeatureStore.open(store)
    assert sorted(reader.keys()) == ["img0", "img2"]
    np.testing.assert_array_equal(reader.get("img0").boxes, np.array(boxes["img0"], np.float32))
    assert reader.header.weights_sha256 == sha256_file(tmp_path / "w.pth")
    assert reader.header.extra["mode"] == "given-boxes"
    assert reader.get("img2").class_probs is None
    assert reader.get("img2").object_ids is not None

    (tmp_path / "xywh.json").write_text(json.dumps({"img1": [[50, 50, 10, 10]]}))
    code, output = _run(
        str(images), str(tmp_path / "other"), "--random-weights", "0",
        "--boxes", str(tmp_path / "xywh.json"),
    )  # fmt: skip
    assert code == 1
    assert "--box-format xywh" in output


def test_command_usage_errors(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _write_images(images)
    code, output = _run(str(images), str(tmp_path / "s"))
    assert code == 2
    assert "--random-weights" in output
    code, output = _run(
        str(images),
        str(tmp_path / "s"),
        "--random-weights",
        "0",
        "--min-boxes",
        "50",
        "--max-boxes",
        "20",
    )
    assert code == 2
    assert "min_boxes" in output
    result = CliRunner().invoke(extract_command, ["--list-configs"])
    assert result.exit_code == 0
    assert "vg-x152-fpn" in result.output


def test_bfloat16_autocast_gives_close_features_at_given_boxes(detector: RegionDetector) -> None:
    images = _images(1)
    boxes = [np.array([[0, 0, 160, 120], [20, 10, 90, 70]], np.float32)]
    full = RegionExtractor(detector).extract(images, boxes)[0]
    fast = RegionExtractor(detector, precision="bfloat16").extract(images, boxes)[0]
    assert fast.features.dtype == np.float32
    np.testing.assert_array_equal(fast.boxes, full.boxes)
    scale = np.abs(full.features).max()
    assert np.abs(fast.features - full.features).max() < 0.1 * scale


def test_channels_last_layout_gives_the_same_features(detector: RegionDetector) -> None:
    plain = build_detector(detector.config, random_seed=0, channels_last=False)
    images = _images(2)
    for fast, slow in zip(
        RegionExtractor(detector).extract(images),
        RegionExtractor(plain).extract(images),
        strict=True,
    ):
        np.testing.assert_allclose(fast.boxes, slow.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(fast.features, slow.features, rtol=1e-4, atol=1e-4)
