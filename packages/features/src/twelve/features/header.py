"""`StoreHeader`: the provenance record of a feature store (which detector made it, and how)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION: Final = 1
OBJECT_CLASSES_KEY: Final = "object_classes"
"""`extra` key holding the JSON list of object class names, indexed by object id (a column of
`class_probs`: entry 0 is background; a list without it is read as starting at id 1)."""
ATTRIBUTE_CLASSES_KEY: Final = "attribute_classes"
"""`extra` key holding the JSON list of attribute class names (index = attribute id)."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class StoreHeader(BaseModel):
    """Who made a feature store and how: checked when stores are extended, shown by `inspect`.

    Mixing features from different detectors is the most common reason re-extracted features
    do not reproduce published numbers, so every store records its extractor and the sha256 of
    the detector's config and weights.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    extractor: Annotated[str, Field(min_length=1)]
    """Name of the extractor configuration, e.g. "vg-rcnn-r101-c4"."""
    config_sha256: Sha256 | None = None
    """sha256 of the detector configuration file (None: not known, e.g. converted files)."""
    weights_sha256: Sha256 | None = None
    """sha256 of the detector weights file (None: not known)."""
    feature_dim: Annotated[int, Field(gt=0)]
    dtype: Literal["float16", "float32"]
    """Storage dtype of features and class probabilities."""
    max_boxes: Annotated[int, Field(ge=0)] | None
    """No record has more regions (None only for original vilbert-multi-task files)."""
    box_convention: Literal["xyxy"] = "xyxy"
    """Boxes are x1 y1 x2 y2 in pixels of the original image."""
    image_count: Annotated[int, Field(ge=0)]
    created_at: AwareDatetime
    extra: dict[str, str] = Field(default_factory=dict)
    """Free-form provenance (class names, source paths, tool versions)."""

    def class_names(self, key: str = OBJECT_CLASSES_KEY) -> list[str] | None:
        """The class names stored under `extra[key]` (a JSON list), or None when absent."""
        raw = self.extra.get(key)
        if raw is None:
            return None
        names = json.loads(raw)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"header extra[{key!r}] must be a JSON list of strings")
        return names


def utc_now() -> datetime:
    """The current time, timezone-aware (headers never hold naive times)."""
    return datetime.now(UTC)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Fingerprint a detector config or weights file for `StoreHeader`."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
