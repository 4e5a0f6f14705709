"""An extraction run: images → detector → feature store, resumable, with a summary at the end.

Images are decoded in background threads while the detector works; ids already in the store
are skipped (an interrupted run continues where it stopped); unreadable images are reported
as they come and listed in the summary, never fatal.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from twelve.features.extract.detector import DetectorConfigError
from twelve.features.extract.extractor import RegionExtractor
from twelve.features.extract.images import ImageLoadError, ImageSource, LoadedImage, load_image
from twelve.features.header import ATTRIBUTE_CLASSES_KEY, OBJECT_CLASSES_KEY
from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore, FeatureStoreWriter


@dataclass(frozen=True)
class Failure:
    """An image that was skipped, and why."""

    source: ImageSource
    reason: str


@dataclass
class ExtractionSummary:
    """What a run did: how many records it wrote, skipped as present, and could not make."""

    store: Path
    requested: int = 0
    written: int = 0
    already_stored: int = 0
    failures: list[Failure] = field(default_factory=list)
    without_boxes: int = 0
    """Given-boxes mode: input images the boxes file has no entry for (not extracted)."""
    seconds: float = 0.0

    def lines(self, limit: int = 20) -> list[str]:
        """A human summary: counts, throughput and the first `limit` failures."""
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"{self.store}: {self.written} images extracted in {self.seconds:.1f} s "
            f"({rate:.2f} images/s), {self.already_stored} already in the store, "
            f"{len(self.failures)} skipped"
            + (f", {self.without_boxes} not in the boxes file" if self.without_boxes else "")
        ]
        for failure in self.failures[:limit]:
            out.append(
                f"  skipped {failure.source.image_id!r} ({failure.source.path}): {failure.reason}"
            )
        if len(self.failures) > limit:
            out.append(f"  … and {len(self.failures) - limit} more")
        return out


@dataclass(frozen=True)
class StoreProvenance:
    """What the store header records about how its features were made."""

    extractor: str
    config_sha256: str
    weights_sha256: str | None
    extra: dict[str, str]


def provenance_extra(
    *,
    config_yaml: str,
    config_source: str,
    mode: Literal["detections", "given-boxes"],
    details: dict[str, object],
    weights: str,
    object_classes: Sequence[str] | None = None,
    attribute_classes: Sequence[str] | None = None,
) -> dict[str, str]:
    """The header's free-form fields: resolved config, selection or box format, class names."""
    extra = {
        "detector_config": config_yaml,
        "config_source": config_source,
        "mode": mode,
        "weights": weights,
        **{key: json.dumps(value, sort_keys=True) for key, value in sorted(details.items())},
    }
    if object_classes is not None:
        extra[OBJECT_CLASSES_KEY] = json.dumps(list(object_classes))
    if attribute_classes is not None:
        extra[ATTRIBUTE_CLASSES_KEY] = json.dumps(list(attribute_classes))
    return extra


def _load_or_fail(source: ImageSource, apply_exif: bool) -> LoadedImage | Failure:
    try:
        return load_image(source, apply_exif=apply_exif)
    except ImageLoadError as error:
        return Failure(source, error.reason)


def decode_ahead(
    sources: Iterable[ImageSource], *, apply_exif: bool, workers: int, lookahead: int
) -> Iterator[LoadedImage | Failure]:
    """Decode images in `workers` threads, `lookahead` ahead of the consumer, in input order."""
    iterator = iter(sources)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future[LoadedImage | Failure]] = deque()

        def submit_next() -> None:
            source = next(iterator, None)
            if source is not None:
                pending.append(pool.submit(_load_or_fail, source, apply_exif))

        for _ in range(max(1, lookahead)):
            submit_next()
        while pending:
            result = pending.popleft().result()
            submit_next()
            yield result


def _batches(
    items: Iterable[LoadedImage | Failure], size: int, on_failure: Callable[[Failure], None]
) -> Iterator[list[LoadedImage]]:
    batch: list[LoadedImage] = []
    for item in items:
        if isinstance(item, Failure):
            on_failure(item)
            continue
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _extract_batch(
    extractor: RegionExtractor,
    batch: list[LoadedImage],
    given: dict[str, np.ndarray] | None,
    on_failure: Callable[[Failure], None],
) -> list[RegionFeatures]:
    """Extract a batch; if it fails, retry image by image so one bad image costs only itself."""

    def boxes_for(images: list[LoadedImage]) -> list[np.ndarray] | None:
        return None if given is None else [given[image.source.image_id] for image in images]

    try:
        return extractor.extract(batch, boxes_for(batch))
    except DetectorConfigError:
        raise  # the detector cannot do this at all: no image would succeed
    except (RuntimeError, ValueError) as error:
        if len(batch) == 1:
            on_failure(Failure(batch[0].source, f"extraction failed: {error}"))
            return []
    records: list[RegionFeatures] = []
    for image in batch:
        records += _extract_batch(extractor, [image], given, on_failure)
    return records


def _sources_with_boxes(
    sources: Sequence[ImageSource],
    given_boxes: dict[str, np.ndarray],
    summary: ExtractionSummary,
    on_failure: Callable[[Failure], None],
) -> list[ImageSource]:
    """The images the boxes file names; its ids without an image file are failures."""
    by_id = {source.image_id: source for source in sources}
    summary.without_boxes = sum(1 for image_id in by_id if image_id not in given_boxes)
    for image_id in given_boxes:
        if image_id not in by_id:
            on_failure(Failure(ImageSource(image_id, Path("?")), "boxes given but no such image"))
    return [source for source in sources if source.image_id in given_boxes]


def extract_to_store(
    sources: Sequence[ImageSource],
    store_path: Path,
    extractor: RegionExtractor,
    provenance: StoreProvenance,
    *,
    dtype: Literal["float16", "float32"] = "float16",
    given_boxes: dict[str, np.ndarray] | None = None,
    batch_size: int = 2,
    apply_exif: bool = True,
    decode_workers: int = 2,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> ExtractionSummary:
    """Extract every source not yet in the store at `store_path` and publish the store.

    With `given_boxes` (image id → xyxy boxes) features are taken at those boxes, for the
    images the boxes file names (an id there without an image is reported as a failure). Interrupting keeps `<store>.partial`: run
    again with the same settings to resume.
    """
    from tqdm import tqdm

    say = report or (lambda message: tqdm.write(message, file=sys.stderr))
    summary = ExtractionSummary(store=store_path, requested=len(sources))
    started = time.perf_counter()
    detector = extractor.detector

    def on_failure(failure: Failure) -> None:
        summary.failures.append(failure)
        say(f"skipping {failure.source.image_id!r} ({failure.source.path}): {failure.reason}")

    writer: FeatureStoreWriter = FeatureStore.create(
        store_path,
        extractor=provenance.extractor,
        feature_dim=detector.feature_dim,
        dtype=dtype,
        max_boxes=extractor.selection.max_boxes if given_boxes is None else None,
        config_sha256=provenance.config_sha256,
        weights_sha256=provenance.weights_sha256,
        extra=provenance.extra,
        resume=True,
    )
    with writer:
        if given_boxes is not None:
            sources = _sources_with_boxes(sources, given_boxes, summary, on_failure)
        todo: list[ImageSource] = []
        for source in sources:
            if source.image_id in writer:
                summary.already_stored += 1
            else:
                todo.append(source)
        bar = tqdm(total=len(todo), unit="img", disable=not progress, desc="extract")
        with bar:
            decoded = decode_ahead(
                todo,
                apply_exif=apply_exif,
                workers=decode_workers,
                lookahead=max(4, 2 * batch_size),
            )

            def count_failure(failure: Failure) -> None:
                on_failure(failure)
                bar.update(1)

            for batch in _batches(decoded, batch_size, count_failure):
                for record in _extract_batch(extractor, batch, given_boxes, count_failure):
                    if writer.put(record):
                        summary.written += 1
                    bar.update(1)
    summary.seconds = time.perf_counter() - started
    return summary
