"""Drawing a record's boxes and top classes on its image, to see what the detector kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from twelve.features.record import RegionFeatures

_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


_BACKGROUND_NAMES = frozenset({"__background__", "background", "__bg__", "bg"})


def names_by_class_id(names: list[str]) -> list[str]:
    """Index names by class id, where id 0 is background (the first `class_probs` column).

    Object vocabularies usually list only the object classes (Visual Genome's 1600); a
    leading background entry is optional and added when missing.
    """
    if names and names[0].strip().lower() in _BACKGROUND_NAMES:
        return list(names)
    return ["__background__", *names]


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a file, one per line, indexed by class id (see `names_by_class_id`).

    Lines of synonyms ("bike,bicycle") keep their first name.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return names_by_class_id([line.split(",")[0].strip() for line in lines if line.strip()])


def top_classes(record: RegionFeatures) -> list[tuple[int, float]] | None:
    """Best object class and its score per region (from the stored ids, else the probabilities).

    Class ids are columns of `class_probs`, whose column 0 is background, so the argmax is
    taken over the other columns.
    """
    if record.object_ids is not None:
        scores = (
            record.object_scores
            if record.object_scores is not None
            else np.full(record.num_boxes, np.nan, dtype=np.float32)
        )
        return [(int(i), float(s)) for i, s in zip(record.object_ids, scores, strict=True)]
    if record.class_probs is not None and record.class_probs.shape[1] > 1:
        objects = np.asarray(record.class_probs[:, 1:], dtype=np.float32)
        ids = objects.argmax(axis=1)
        return [(int(i) + 1, float(objects[row, i])) for row, i in enumerate(ids)]
    return None


def region_labels(record: RegionFeatures, names: list[str] | None) -> list[str]:
    """One label per region: "name 0.87", "class 12 0.87", or "#3" when no class is stored.

    `names` is indexed by class id (background first, see `names_by_class_id`).
    """
    classes = top_classes(record)
    if classes is None:
        return [f"#{row}" for row in range(record.num_boxes)]
    labels = []
    for class_id, score in classes:
        name = names[class_id] if names is not None and 0 <= class_id < len(names) else None
        text = name or f"class {class_id}"
        labels.append(text if np.isnan(score) else f"{text} {score:.2f}")
    return labels


def load_image_upright(path: str | Path) -> Image.Image:
    """The image as RGB, rotated by its EXIF orientation (the way detectors see it)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def draw_regions(
    image: Image.Image,
    record: RegionFeatures,
    *,
    names: list[str] | None = None,
    top: int | None = None,
) -> Image.Image:
    """A copy of `image` with the first `top` boxes (all by default) and their labels drawn.

    Boxes are in pixels of an image of the record's size; a differently sized image is drawn
    on with the boxes scaled to it.
    """
    canvas = image.convert("RGB")
    scale_x = canvas.width / record.image_width
    scale_y = canvas.height / record.image_height
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 40))
    labels = region_labels(record, names)
    count = record.num_boxes if top is None else min(top, record.num_boxes)
    width = max(1, round(min(canvas.size) / 300))
    for row in reversed(range(count)):  # best box drawn last, on top
        x1, y1, x2, y2 = (float(v) for v in record.boxes[row])
        box = (x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y)
        color = _PALETTE[row % len(_PALETTE)]
        draw.rectangle(box, outline=color, width=width)
        text_box = draw.textbbox((box[0], box[1]), labels[row], font=font)
        draw.rectangle(text_box, fill=color)
        draw.text((box[0], box[1]), labels[row], fill=(0, 0, 0), font=font)
    return canvas
