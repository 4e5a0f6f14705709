"""Images in, `RegionFeatures` out: preprocessing, the detector and box selection, per batch.

Two modes. Detection: RPN proposals, the original per-class-NMS selection (`selection.py`);
stored boxes are the selected proposals mapped back to original pixels (the original stored
proposals, not class-regressed boxes). Given boxes: features at exactly the given boxes, in
the given order (referring expressions, pointing); stored boxes are the given ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from twelve.features.extract.detector import RegionDetector
from twelve.features.extract.images import LoadedImage
from twelve.features.extract.preprocess import prepare_image
from twelve.features.extract.selection import BoxSelection, select_regions
from twelve.features.record import RegionFeatures

Precision = Literal["float32", "bfloat16"]


class RegionExtractor:
    """Runs a `RegionDetector` over batches of decoded images and builds their records."""

    def __init__(
        self,
        detector: RegionDetector,
        selection: BoxSelection | None = None,
        *,
        precision: Precision = "float32",
        keep_class_probs: bool = True,
    ) -> None:
        self.detector = detector
        self.selection = selection or BoxSelection()
        self.precision: Precision = precision
        self.keep_class_probs = keep_class_probs
        cfg = detector.config.cfg
        self.short_side = int(cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(cfg.INPUT.MAX_SIZE_TEST)
        self.channel_order = cfg.INPUT.FORMAT

    @torch.inference_mode()
    def extract(
        self,
        images: Sequence[LoadedImage],
        given_boxes: Sequence[np.ndarray] | None = None,
    ) -> list[RegionFeatures]:
        """One record per image; with `given_boxes` (xyxy, original pixels) features at those.

        With precision "bfloat16" the networks run under autocast (much faster on CPUs with
        AMX/AVX-512 BF16 and on GPUs; features differ from float32 in the third digit);
        probabilities, selection and the stored arrays stay float32.
        """
        if not images:
            return []
        if given_boxes is not None and len(given_boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(given_boxes)} box lists")
        device_type = self.detector.device.type
        with torch.autocast(
            device_type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"
        ):
            return self._extract(images, given_boxes)

    def _extract(
        self, images: Sequence[LoadedImage], given_boxes: Sequence[np.ndarray] | None
    ) -> list[RegionFeatures]:
        detector = self.detector
        resized = [
            prepare_image(
                image.rgb,
                short_side=self.short_side,
                max_size=self.max_size,
                channel_order=self.channel_order,
                device=detector.device,
            )
            for image in images
        ]
        batch, feature_maps = detector.encode([r.pixels for r in resized])
        if given_boxes is None:
            boxes = detector.propose(batch, feature_maps)
        else:
            boxes = [
                torch.as_tensor(b, dtype=torch.float32, device=detector.device) * r.scale
                for b, r in zip(given_boxes, resized, strict=True)
            ]
        outputs = detector.describe(feature_maps, boxes)
        records = []
        for index, image in enumerate(images):
            output, scale = outputs[index], resized[index].scale
            if given_boxes is None:
                chosen = select_regions(boxes[index], output.class_probs, self.selection)
                rows = chosen.indices
                object_ids, object_scores = chosen.object_ids, chosen.object_scores
                kept_boxes = (boxes[index][rows] / scale).cpu().numpy()
                kept_boxes[:, 0::2] = kept_boxes[:, 0::2].clip(0, image.width)
                kept_boxes[:, 1::2] = kept_boxes[:, 1::2].clip(0, image.height)
            else:
                rows = torch.arange(len(boxes[index]), device=detector.device)
                object_scores, foreground = output.class_probs[:, 1:].max(dim=1)
                object_ids = foreground + 1
                kept_boxes = np.asarray(given_boxes[index], dtype=np.float32)
            features = output.features[rows]
            attributes: dict[str, np.ndarray] = {}
            if detector.attribute_predictor is not None:
                attribute_probs = detector.attribute_probs(features, object_ids)
                scores, best = attribute_probs[:, 1:].max(dim=1)
                attributes = {
                    "attribute_ids": (best + 1).cpu().numpy(),
                    "attribute_scores": scores.cpu().numpy(),
                }
            records.append(
                RegionFeatures(
                    image_id=image.source.image_id,
                    image_width=image.width,
                    image_height=image.height,
                    boxes=kept_boxes,
                    features=features.float().cpu().numpy(),
                    class_probs=(
                        output.class_probs[rows].cpu().numpy() if self.keep_class_probs else None
                    ),
                    object_ids=object_ids.cpu().numpy(),
                    object_scores=object_scores.float().cpu().numpy(),
                    **attributes,
                )
            )
        return records
