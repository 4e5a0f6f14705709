"""detectron2 building blocks twelve adds: a Caffe-style ResNet stem and an attribute head.

Bottom-up-attention detectors (Anderson et al., 2018) were trained in Caffe: their stem max
pool rounds up without padding, and an attribute classifier sits next to the object
classifier. detectron2 has neither, so both are defined here and registered under names of
our own (`build_resnet_caffe_pool_backbone`, `Res5ROIHeadsWithAttributes`), which YAML
configs select like any detectron2 component. Importing this module needs detectron2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from detectron2.config import CfgNode, configurable
from detectron2.layers import CNNBlockBase, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.modeling.roi_heads import Res5ROIHeads
from torch import nn


class CaffePoolStem(CNNBlockBase):
    """ResNet stem whose max pool rounds up and does not pad, as Caffe's did."""

    def __init__(self, conv1: nn.Module, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = conv1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 (with its frozen norm), ReLU, 3x3/2 max pool with ceil rounding."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


def build_resnet_caffe_pool_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """detectron2's ResNet backbone with the Caffe-style stem (same weights, same names)."""
    backbone = build_resnet_backbone(cfg, input_shape)
    stem = backbone.stem
    backbone.stem = CaffePoolStem(stem.conv1, stem.in_channels, stem.out_channels)
    return backbone


class AttributePredictor(nn.Module):
    """Attribute logits from a region feature and the embedding of the region's object class.

    Layout (bottom-up-attention): embed the object class (`obj_embed`, num_classes + 1 rows in
    detectron2's class order, background last), concatenate it to the region feature, `fc`
    to `fc_dim` with ReLU, then `attr_score` to num_attributes + 1 logits, column 0 meaning
    "no attribute".
    """

    def __init__(
        self, *, input_dim: int, num_classes: int, num_attributes: int, embed_dim: int, fc_dim: int
    ) -> None:
        super().__init__()
        self.num_attributes = num_attributes
        self.obj_embed = nn.Embedding(num_classes + 1, embed_dim)
        self.fc = nn.Linear(input_dim + embed_dim, fc_dim)
        self.attr_score = nn.Linear(fc_dim, num_attributes + 1)
        nn.init.normal_(self.obj_embed.weight, std=0.01)
        for layer in (self.fc, self.attr_score):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, object_classes: torch.Tensor) -> torch.Tensor:
        """(N, D) features and (N,) detectron2 class indices → (N, num_attributes + 1) logits."""
        joined = torch.cat([features, self.obj_embed(object_classes)], dim=1)
        return self.attr_score(F.relu(self.fc(joined)))


class Res5ROIHeadsWithAttributes(Res5ROIHeads):
    """detectron2's C4 ROI heads plus an `attribute_predictor` on the pooled res5 features.

    Built for inference (feature extraction); its attribute head has no training loss, so
    training mode is refused rather than silently leaving attributes untrained.
    """

    @configurable
    def __init__(self, *, attribute_predictor: AttributePredictor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attribute_predictor = attribute_predictor

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        """detectron2's Res5 arguments plus the attribute head sized by ROI_ATTRIBUTE_HEAD."""
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_ATTRIBUTE_HEAD
        ret["attribute_predictor"] = AttributePredictor(
            input_dim=ret["box_predictor"].cls_score.in_features,
            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            num_attributes=head.NUM_CLASSES,
            embed_dim=head.OBJ_EMBED_DIM,
            fc_dim=head.FC_DIM,
        )
        return ret

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """detectron2's inference; training is not implemented for the attribute head."""
        if self.training:
            raise NotImplementedError(
                "Res5ROIHeadsWithAttributes is for feature extraction: it has no attribute loss"
            )
        return super().forward(*args, **kwargs)


def register_modules() -> None:
    """Make our components selectable from YAML (idempotent: safe to call many times)."""
    if "build_resnet_caffe_pool_backbone" not in BACKBONE_REGISTRY:
        BACKBONE_REGISTRY.register(build_resnet_caffe_pool_backbone)
    if "Res5ROIHeadsWithAttributes" not in ROI_HEADS_REGISTRY:
        ROI_HEADS_REGISTRY.register(Res5ROIHeadsWithAttributes)
