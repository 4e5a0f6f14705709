"""Given boxes for ground-truth-box extraction: a JSON file mapping image id → list of boxes.

The original GT-box script documented `[x, y, w, h]` but fed the boxes to the detector as
`[x1, y1, x2, y2]` (vilbert-multi-task issue #77), silently extracting features at wrong
places. Here the convention is explicit (`xyxy` by default, `xywh` for COCO-style
annotations), boxes are converted once to xyxy, and boxes that cannot be xyxy (x2 < x1) are
refused with a hint that the file may be xywh.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np

BoxFormat = Literal["xyxy", "xywh"]


class BoxesFileError(ValueError):
    """The boxes file is malformed; the message names the file, image id, box and value."""


def _parse_box(raw: object, where: str, box_format: BoxFormat) -> list[float]:
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        raise BoxesFileError(f"{where}: expected 4 numbers [{_names(box_format)}], got {raw!r}")
    values: list[float] = []
    for value in raw:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise BoxesFileError(f"{where}: {value!r} is not a finite number (box {raw!r})")
        values.append(float(value))
    if box_format == "xywh":
        x, y, w, h = values
        if w < 0 or h < 0:
            raise BoxesFileError(f"{where}: negative width or height in xywh box {raw!r}")
        return [x, y, x + w, y + h]
    x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise BoxesFileError(
            f"{where}: box {raw!r} has x2 < x1 or y2 < y1, so it is not [x1, y1, x2, y2]; "
            "if the file holds [x, y, width, height] boxes, pass --box-format xywh"
        )
    return values


def _names(box_format: BoxFormat) -> str:
    return "x1, y1, x2, y2" if box_format == "xyxy" else "x, y, width, height"


def read_boxes_file(path: Path, box_format: BoxFormat = "xyxy") -> dict[str, np.ndarray]:
    """Read `{image_id: [[...4 numbers...], ...]}` and return xyxy float32 (N, 4) per image id.

    Boxes are in pixels of the upright original image, in the order features will be stored.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise BoxesFileError(f"{path}: cannot read the boxes file ({error})") from None
    except json.JSONDecodeError as error:
        raise BoxesFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise BoxesFileError(
            f"{path}: expected a JSON object {{image_id: [[{_names(box_format)}], ...]}}, "
            f"got {type(data).__name__}"
        )
    boxes: dict[str, np.ndarray] = {}
    for image_id, entries in data.items():
        where = f"{path}: image {image_id!r}"
        if not isinstance(entries, list) or not entries:
            raise BoxesFileError(f"{where}: expected a non-empty list of boxes, got {entries!r}")
        parsed = [
            _parse_box(raw, f"{where}, box {index}", box_format)
            for index, raw in enumerate(entries)
        ]
        boxes[image_id] = np.asarray(parsed, dtype=np.float32).reshape(-1, 4)
    return boxes
