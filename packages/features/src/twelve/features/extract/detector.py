"""A detectron2 Faster R-CNN driven for region features: configs, building, and the forward steps.

The detector is an ordinary detectron2 `GeneralizedRCNN` built from a YAML config (one of
the presets shipped in `configs/`, or the user's own), so upstream detectron2 and the wheel
built by `tools/build_detectron2.py` both work. Instead of detectron2's inference (which
regresses, thresholds and suppresses boxes per class) the steps are called one by one:
backbone → RPN proposals → pooled box features → class (and attribute) probabilities, so the
original 12-in-1 selection can run on the proposals and features can come from any layer.

Config keys twelve adds: `TWELVE.FEATURE_LAYER` ("fc6": first fc layer of an FC box head,
after its ReLU, as 12-in-1 stored; "head": the box head's output, the box predictor's input —
for C4 detectors the res5 output averaged over each region), `TWELVE.SIZE_DIVISIBILITY`
(batches are padded to multiples of it; the original used 32) and
`MODEL.ROI_ATTRIBUTE_HEAD.{NUM_CLASSES, OBJ_EMBED_DIM, FC_DIM}` (see `modules.py`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from detectron2.modeling.roi_heads import Res5ROIHeads, StandardROIHeads
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from detectron2.structures import Boxes, ImageList
from torch import nn

from twelve.features.extract.modules import Res5ROIHeadsWithAttributes, register_modules
from twelve.features.extract.presets import PRESETS
from twelve.features.extract.weights import load_weights

FEATURE_LAYERS: Final = ("fc6", "head")


class DetectorConfigError(ValueError):
    """The detector config cannot be used for extraction; the message says which key and why."""


@dataclass(frozen=True)
class DetectorConfig:
    """A resolved detectron2 config (bases merged, overrides applied) and where it came from."""

    name: str
    """Preset name, or the YAML file's name without suffix."""
    source: str
    """`preset:<name>` or the path of the user's YAML."""
    cfg: CfgNode

    @property
    def yaml(self) -> str:
        """The resolved config as YAML, device-independent (what the store records)."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.WEIGHTS = ""
        cfg.OUTPUT_DIR = ""
        return str(cfg.dump())

    @property
    def sha256(self) -> str:
        """Fingerprint of the resolved config: same features ⇔ same config fingerprint."""
        return hashlib.sha256(self.yaml.encode()).hexdigest()


def base_config() -> CfgNode:
    """detectron2's defaults plus the keys twelve adds (so user YAMLs may set them)."""
    register_modules()
    cfg = get_cfg()
    cfg.TWELVE = CfgNode({"FEATURE_LAYER": "head", "SIZE_DIVISIBILITY": 32})
    cfg.MODEL.ROI_ATTRIBUTE_HEAD = CfgNode(
        {"NUM_CLASSES": 400, "OBJ_EMBED_DIM": 256, "FC_DIM": 512}
    )
    return cfg


def _parse_overrides(overrides: Sequence[str]) -> list[str]:
    pairs: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DetectorConfigError(f"config override {item!r} must look like KEY=VALUE")
        pairs += [key.strip(), value.strip()]
    return pairs


def load_detector_config(config: str | Path, overrides: Sequence[str] = ()) -> DetectorConfig:
    """Resolve a preset name or a detectron2 YAML path, then apply `KEY=VALUE` overrides."""
    cfg = base_config()
    text = str(config)
    if text in PRESETS:
        preset = PRESETS[text]
        name, source = preset.name, f"preset:{preset.name}"
        with resources.as_file(preset.resource()) as path:
            cfg.merge_from_file(str(path))
    else:
        path = Path(config)
        if not path.is_file():
            raise DetectorConfigError(
                f"--config {text!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file"
            )
        name, source = path.stem, str(path)
        try:
            cfg.merge_from_file(str(path))
        except (KeyError, ValueError, AssertionError) as error:
            raise DetectorConfigError(f"{path}: not a usable detectron2 config ({error})") from None
    try:
        cfg.merge_from_list(_parse_overrides(overrides))
    except (KeyError, ValueError, AssertionError) as error:
        raise DetectorConfigError(f"{source}: bad override ({error})") from None
    _check_config(cfg, source)
    cfg.freeze()
    return DetectorConfig(name=name, source=source, cfg=cfg)


def _check_config(cfg: CfgNode, source: str) -> None:
    if cfg.TWELVE.FEATURE_LAYER not in FEATURE_LAYERS:
        raise DetectorConfigError(
            f"{source}: TWELVE.FEATURE_LAYER is {cfg.TWELVE.FEATURE_LAYER!r}, expected one of "
            f"{FEATURE_LAYERS}"
        )
    if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise DetectorConfigError(f"{source}: INPUT.FORMAT {cfg.INPUT.FORMAT!r} is not BGR/RGB")
    if int(cfg.TWELVE.SIZE_DIVISIBILITY) < 0:
        raise DetectorConfigError(f"{source}: TWELVE.SIZE_DIVISIBILITY must be >= 0")
    for key in ("MIN_SIZE_TEST", "MAX_SIZE_TEST"):
        value = cfg.INPUT[key]
        if not isinstance(value, int) or value <= 0:
            raise DetectorConfigError(
                f"{source}: INPUT.{key} must be a positive int, got {value!r}"
            )


@dataclass(frozen=True)
class RegionOutputs:
    """What the detector says about one image's regions, one row per region."""

    features: torch.Tensor
    """(N, D) float32 region features from the configured layer."""
    class_probs: torch.Tensor
    """(N, C + 1) softmax over classes, background in column 0 (the original's layout)."""


def zero_init_residual_norms(model: nn.Module) -> None:
    """Zero the last norm of every residual block so random weights stay numerically tame.

    With random weights and frozen batch norm, activations grow through 100+ layers and the
    RPN proposes almost nothing; starting each block as identity keeps random detectors usable
    for tests and benchmarks.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BottleneckBlock):
                module.conv3.norm.weight.zero_()
            elif isinstance(module, BasicBlock):
                module.conv2.norm.weight.zero_()


class RegionDetector:
    """A built detectron2 detector and the steps extraction runs on it, on one device."""

    def __init__(
        self, model: nn.Module, config: DetectorConfig, *, channels_last: bool = True
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            # NHWC convolutions: ~1.4x faster on CPU (oneDNN) for the same results.
            self.model.to(memory_format=torch.channels_last)
        cfg = config.cfg
        self.feature_layer: str = cfg.TWELVE.FEATURE_LAYER
        roi_heads = getattr(model, "roi_heads", None)
        if not isinstance(roi_heads, Res5ROIHeads | StandardROIHeads) or isinstance(
            getattr(roi_heads, "box_head", None), nn.ModuleList
        ):
            raise DetectorConfigError(
                f"{config.source}: ROI heads {type(roi_heads).__name__} are not supported; "
                "use Res5ROIHeads (C4) or StandardROIHeads with one box head (FPN)"
            )
        self.roi_heads = roi_heads
        if self.feature_layer == "fc6" and not (
            isinstance(roi_heads, StandardROIHeads)
            and isinstance(roi_heads.box_head, FastRCNNConvFCHead)
            and any(name == "fc_relu1" for name, _ in roi_heads.box_head.named_children())
        ):
            raise DetectorConfigError(
                f"{config.source}: TWELVE.FEATURE_LAYER 'fc6' needs an FC box head "
                "(ROI_BOX_HEAD.NAME FastRCNNConvFCHead with NUM_FC >= 1); use 'head' instead"
            )
        predictor = roi_heads.box_predictor
        self.num_classes: int = int(predictor.num_classes) + 1
        self.attribute_predictor = (
            roi_heads.attribute_predictor
            if isinstance(roi_heads, Res5ROIHeadsWithAttributes)
            else None
        )
        divisors = [int(cfg.TWELVE.SIZE_DIVISIBILITY), int(model.backbone.size_divisibility)]
        self.size_divisibility = math.lcm(*[d for d in divisors if d > 0] or [1])
        self.feature_dim: int = self._feature_dim()

    def _feature_dim(self) -> int:
        heads = self.roi_heads
        if isinstance(heads, Res5ROIHeads):
            return int(heads.box_predictor.cls_score.in_features)
        if self.feature_layer == "fc6":
            return int(heads.box_head.fc1.out_features)
        return int(heads.box_predictor.cls_score.in_features)

    @property
    def device(self) -> torch.device:
        """Where the detector's weights live (inputs are moved there)."""
        return self.model.pixel_mean.device

    @property
    def num_attributes(self) -> int | None:
        """Attribute classes including "no attribute" (column 0), or None without the head."""
        if self.attribute_predictor is None:
            return None
        return int(self.attribute_predictor.num_attributes) + 1

    def encode(self, images: Sequence[torch.Tensor]) -> tuple[ImageList, dict[str, torch.Tensor]]:
        """Normalise and pad resized (3, h, w) images into one batch; run the backbone."""
        model = self.model
        normalised = [
            (image.to(self.device) - model.pixel_mean) / model.pixel_std for image in images
        ]
        batch = ImageList.from_tensors(normalised, self.size_divisibility)
        batch.tensor = batch.tensor.contiguous(memory_format=self.memory_format)
        return batch, model.backbone(batch.tensor)

    def propose(
        self, batch: ImageList, feature_maps: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """RPN proposals per image, (N_i, 4) xyxy in resized-image pixels, best first."""
        if self.model.proposal_generator is None:
            raise DetectorConfigError(
                f"{self.config.source}: this detector has no proposal generator; "
                "extract at given boxes (--boxes) instead"
            )
        proposals, _ = self.model.proposal_generator(batch, feature_maps, None)
        return [p.proposal_boxes.tensor for p in proposals]

    def describe(
        self, feature_maps: dict[str, torch.Tensor], boxes: Sequence[torch.Tensor]
    ) -> list[RegionOutputs]:
        """Features and class probabilities of the given boxes (resized-image pixels)."""
        heads = self.roi_heads
        box_lists = [Boxes(b.to(self.device, torch.float32)) for b in boxes]
        if isinstance(heads, Res5ROIHeads):
            maps = [feature_maps[name].float() for name in heads.in_features]
            features = heads.res5(heads.pooler(maps, box_lists)).mean(dim=(2, 3))
            logits, _ = heads.box_predictor(features)
        else:
            maps = [feature_maps[name].float() for name in heads.box_in_features]
            x = heads.box_pooler(maps, box_lists)
            fc6: torch.Tensor | None = None
            for name, layer in heads.box_head.named_children():
                x = layer(x)
                if name == "fc_relu1":
                    fc6 = x
            logits, _ = heads.box_predictor(x)
            features = fc6 if self.feature_layer == "fc6" and fc6 is not None else x
        probs = torch.softmax(logits.float(), dim=1)
        probs = torch.cat([probs[:, -1:], probs[:, :-1]], dim=1)  # background first
        counts = [len(b) for b in box_lists]
        return [
            RegionOutputs(features=f.float(), class_probs=p)
            for f, p in zip(features.split(counts), probs.split(counts), strict=True)
        ]

    def attribute_probs(self, features: torch.Tensor, object_ids: torch.Tensor) -> torch.Tensor:
        """Attribute distribution (N, A + 1) given each region's object id (background-first)."""
        if self.attribute_predictor is None:
            raise DetectorConfigError(f"{self.config.source}: this detector has no attribute head")
        detectron2_classes = (object_ids.to(self.device) - 1).clamp(min=0)
        logits = self.attribute_predictor(features.to(self.device), detectron2_classes)
        return torch.softmax(logits.float(), dim=1)


def build_detector(
    config: DetectorConfig,
    *,
    weights: Path | None = None,
    random_seed: int | None = None,
    trust_pickle: bool = False,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
) -> RegionDetector:
    """Build the detector of `config` on `device` with a user's weights or seeded random ones.

    Random weights (for tests, benchmarks and smoke runs) are deterministic for a seed and
    have the last norm of each residual block zeroed (`zero_init_residual_norms`).
    `channels_last` runs convolutions in NHWC layout (faster; same results up to rounding).
    """
    if (weights is None) == (random_seed is None):
        raise ValueError("pass exactly one of weights (a file) and random_seed")
    cfg = config.cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    # Initialise on the CPU with a seeded generator (or directly on "meta", allocating nothing);
    # build_model then moves the model to cfg.MODEL.DEVICE.
    where = torch.device("meta") if torch.device(device).type == "meta" else torch.device("cpu")
    with torch.random.fork_rng(devices=[]), where:
        torch.manual_seed(0 if random_seed is None else random_seed)
        model = build_model(cfg)
    if weights is not None:
        load_weights(model, weights, trust_pickle=trust_pickle)
    else:
        zero_init_residual_norms(model)
    return RegionDetector(model, config, channels_last=channels_last)
