"""What `twelve features inspect` and `verify` report: store summaries and record checks."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from twelve.features.errors import CorruptRecordError
from twelve.features.header import StoreHeader
from twelve.features.legacy import LegacyFeatureStore
from twelve.features.safe_pickle import UnsafePickleError
from twelve.features.store import FeatureSource


class BoxCountStats(BaseModel):
    """How many regions the images of a store have."""

    min: int
    max: int
    mean: float
    median: float


class SampleRecord(BaseModel):
    """One record described for a human: its id, size, arrays and first boxes."""

    image_id: str
    image_width: int
    image_height: int
    arrays: dict[str, str]
    """name → "dtype[shape]" as stored."""
    first_boxes: list[list[float]]


class StoreSummary(BaseModel):
    """The answer of `inspect`: header, count, box-count statistics and a sample record."""

    path: str
    kind: Literal["twelve", "original"]
    """A twelve store, or an original vilbert-multi-task LMDB read with trust_pickle."""
    count: int
    feature_dim: int
    dtype: str
    schema_version: int
    header: StoreHeader
    boxes_per_image: BoxCountStats | None
    sample: SampleRecord | None


def summarize_store(store: FeatureSource) -> StoreSummary:
    """Describe a store; box counts come from each record's table (no arrays are decoded)."""
    header = store.header
    keys = store.keys()
    counts = [store.info(key).num_boxes for key in keys]
    stats = None
    if counts:
        stats = BoxCountStats(
            min=min(counts),
            max=max(counts),
            mean=statistics.fmean(counts),
            median=statistics.median(counts),
        )
    sample = None
    if keys:
        record = store.get(keys[0], as_float32=False)
        info = store.info(keys[0])
        sample = SampleRecord(
            image_id=record.image_id,
            image_width=record.image_width,
            image_height=record.image_height,
            arrays={a.name: f"{np.dtype(a.dtype).name}{list(a.shape)}" for a in info.arrays},
            first_boxes=[[round(float(v), 2) for v in box] for box in record.boxes[:3]],
        )
    return StoreSummary(
        path=str(store.path),
        kind="original" if isinstance(store, LegacyFeatureStore) else "twelve",
        count=len(keys),
        feature_dim=header.feature_dim,
        dtype=header.dtype,
        schema_version=header.schema_version,
        header=header,
        boxes_per_image=stats,
        sample=sample,
    )


class RecordProblem(BaseModel):
    """One record that failed verification, and why."""

    image_id: str
    problem: str


class VerifyReport(BaseModel):
    """The answer of `verify`: how many records were checked and which ones are bad."""

    path: str
    checked: int
    problems: list[RecordProblem]

    @property
    def ok(self) -> bool:
        """True when every record decoded and agreed with the header."""
        return not self.problems


def verify_store(
    store: FeatureSource, on_record: Callable[[str], None] | None = None
) -> VerifyReport:
    """Decode every record and check it against the header (dim, dtype, box count, values)."""
    header = store.header
    keys = store.keys()
    problems: list[RecordProblem] = []
    class_probs_width: int | None = None
    for image_id in keys:
        if on_record is not None:
            on_record(image_id)
        try:
            record = store.get(image_id, as_float32=False)
        except (CorruptRecordError, UnsafePickleError) as error:
            reason = error.reason if isinstance(error, CorruptRecordError) else str(error)
            problems.append(RecordProblem(image_id=image_id, problem=reason))
            continue
        found: list[str] = []
        if record.feature_dim != header.feature_dim:
            found.append(f"feature dim {record.feature_dim} != header {header.feature_dim}")
        if record.features.dtype.name != header.dtype:
            found.append(f"features stored as {record.features.dtype.name} != {header.dtype}")
        if header.max_boxes is not None and record.num_boxes > header.max_boxes:
            found.append(f"{record.num_boxes} boxes > header max_boxes {header.max_boxes}")
        if not np.isfinite(record.features).all():
            found.append("features contain NaN or infinity")
        boxes = record.boxes
        if not np.isfinite(boxes).all():
            found.append("boxes contain NaN or infinity")
        elif (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            found.append("boxes with x2 < x1 or y2 < y1 (not xyxy?)")
        if record.class_probs is not None:
            width = record.class_probs.shape[1]
            class_probs_width = class_probs_width or width
            if width != class_probs_width:
                found.append(f"class_probs has {width} classes, other records {class_probs_width}")
        problems.extend(RecordProblem(image_id=image_id, problem=p) for p in found)
    if len(keys) != header.image_count:
        problems.append(
            RecordProblem(
                image_id="<header>",
                problem=f"header says {header.image_count} images, the store holds {len(keys)}",
            )
        )
    return VerifyReport(path=str(Path(store.path)), checked=len(keys), problems=problems)
