"""Image regions as the model sees them: global token first, 5-d locations, optional GT boxes.

Follows original-system.md §3.5–3.10 and §6.1: the global token is the mean of the image's
region features with location `[0, 0, 1, 1, 1]` and pixel box `[0, 0, W, H]`; each region's
location is `[x1/W, y1/H, x2/W, y2/H, (x2−x1)(y2−y1)/(W·H)]`; features extracted at ground-truth
boxes are appended after the detected regions (the GT store keeps no global row, so none is
dropped); the list is then cut to R rows. IoU uses the original's +1-pixel convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from twelve.datasets.errors import DatasetError
from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureSource

GLOBAL_LOCATION = np.array([0.0, 0.0, 1.0, 1.0, 1.0], dtype=np.float32)


class MissingImageFeaturesError(DatasetError, KeyError):
    """A task refers to an image the feature store does not hold; names the task and the id."""

    def __init__(self, task: str, image_ids: list[str], store: Path) -> None:
        self.task = task
        self.image_ids = image_ids
        shown = ", ".join(repr(image_id) for image_id in image_ids[:5])
        more = f" and {len(image_ids) - 5} more" if len(image_ids) > 5 else ""
        super().__init__(
            f"{task}: image id {shown}{more} not in the feature store {store}; "
            "extract features for these images or point the task at the right store"
        )

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def check_images_present(task: str, store: FeatureSource, image_ids: list[str]) -> None:
    """Fail before training starts if any image of a task is missing from its feature store."""
    missing = [image_id for image_id in dict.fromkeys(image_ids) if image_id not in store]
    if missing:
        raise MissingImageFeaturesError(task, missing, store.path)


def read_record(task: str, store: FeatureSource, image_id: str) -> RegionFeatures:
    """Read one image's record, turning a missing id into an error that names the task."""
    try:
        return store.get(image_id, as_float32=False)
    except KeyError:
        raise MissingImageFeaturesError(task, [image_id], store.path) from None


@dataclass(frozen=True)
class ImageRegions:
    """An image's regions ready for a batch: row 0 is the global token when it was added."""

    image_id: str
    features: np.ndarray
    """(N, D) float32."""
    locations: np.ndarray
    """(N, 5) float32 normalised boxes and area."""
    boxes: np.ndarray
    """(N, 4) float32 x1 y1 x2 y2 in pixels (global row: the whole image), used for IoU."""

    @property
    def num_regions(self) -> int:
        """Number of rows N."""
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        """Feature width D."""
        return int(self.features.shape[1])


def spatial_locations(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """The original 5-d location `[x1/W, y1/H, x2/W, y2/H, (x2−x1)(y2−y1)/(W·H)]` per box."""
    boxes = np.asarray(boxes, dtype=np.float32)
    locations = np.empty((boxes.shape[0], 5), dtype=np.float32)
    locations[:, 0] = boxes[:, 0] / width
    locations[:, 1] = boxes[:, 1] / height
    locations[:, 2] = boxes[:, 2] / width
    locations[:, 3] = boxes[:, 3] / height
    locations[:, 4] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (width * height)
    return locations


_CONVERT_BLOCK = 16_384
"""Elements per float16 → float32 conversion call: below torch's parallel grain size, so the
conversion stays on the calling thread (intra-op threads stall badly on busy machines)."""


def _copy_as_float32(source: np.ndarray, target: np.ndarray) -> None:
    """Copy `source` into float32 `target`; float16 goes through torch, ~7× faster than numpy."""
    if source.dtype != np.float16:
        target[...] = source
        return
    rows = max(1, _CONVERT_BLOCK // max(1, source.shape[1]))
    source_t, target_t = torch.from_numpy(source), torch.from_numpy(target)
    for start in range(0, source.shape[0], rows):
        target_t[start : start + rows].copy_(source_t[start : start + rows])


def with_global_token(record: RegionFeatures) -> ImageRegions:
    """Regions of a detector record with the global token (mean feature, whole image) in front."""
    if record.num_boxes == 0:
        raise ValueError(
            f"image {record.image_id!r} has no regions, so it has no global token either; "
            "re-extract its features"
        )
    n, dim = record.features.shape
    features = np.empty((n + 1, dim), dtype=np.float32)
    _copy_as_float32(record.features, features[1:])
    features[1:].mean(axis=0, out=features[0])
    width, height = record.image_width, record.image_height
    locations = np.empty((n + 1, 5), dtype=np.float32)
    locations[0] = GLOBAL_LOCATION
    locations[1:] = spatial_locations(record.boxes, width, height)
    boxes = np.empty((n + 1, 4), dtype=np.float32)
    boxes[0] = (0.0, 0.0, width, height)
    boxes[1:] = record.boxes
    return ImageRegions(record.image_id, features, locations, boxes)


def append_regions(regions: ImageRegions, extra: RegionFeatures) -> ImageRegions:
    """Append features extracted at ground-truth boxes after the detected regions."""
    if extra.num_boxes == 0:
        return regions
    if extra.feature_dim != regions.feature_dim:
        raise ValueError(
            f"image {regions.image_id!r}: ground-truth features have width {extra.feature_dim} "
            f"but detected features have {regions.feature_dim}; use stores of one extractor"
        )
    locations = spatial_locations(extra.boxes, extra.image_width, extra.image_height)
    features = np.empty((regions.num_regions + extra.num_boxes, extra.feature_dim), np.float32)
    features[: regions.num_regions] = regions.features
    _copy_as_float32(extra.features, features[regions.num_regions :])
    return ImageRegions(
        regions.image_id,
        features,
        np.concatenate([regions.locations, locations]),
        np.concatenate([regions.boxes, extra.boxes.astype(np.float32, copy=False)]),
    )


def truncate(regions: ImageRegions, max_regions: int) -> ImageRegions:
    """Keep the first `max_regions` rows (global token and best detections come first)."""
    if regions.num_regions <= max_regions:
        return regions
    return ImageRegions(
        regions.image_id,
        regions.features[:max_regions],
        regions.locations[:max_regions],
        regions.boxes[:max_regions],
    )


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of `boxes` (N,4) with one `box` (4,), xyxy, widths and heights counted +1."""
    boxes = np.asarray(boxes, dtype=np.float32)
    box = np.asarray(box, dtype=np.float32)
    inter_w = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1
    inter_h = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    return (inter / (areas + area - inter)).astype(np.float32)


def xywh_to_xyxy(box: tuple[float, float, float, float] | list[float]) -> np.ndarray:
    """The original's conversion of `[x, y, w, h]` annotation boxes: `[x, y, x+w, y+h]` (no −1)."""
    x, y, w, h = (float(value) for value in box)
    return np.array([x, y, x + w, y + h], dtype=np.float32)
