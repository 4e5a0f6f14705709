"""The `twelve features` command group; heavy imports stay inside the commands that need them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twelve.features.extract.command import extract_command

if TYPE_CHECKING:
    from twelve.features.inspection import StoreSummary
    from twelve.features.store import FeatureSource

_TRUST_PICKLE_HELP = (
    "Allow reading an original vilbert-multi-task LMDB (pickled records, loaded through a "
    "restricted unpickler). Use only for files from a source you trust."
)


@click.group(name="features")
def features() -> None:
    """Region features: extract, store, inspect and verify."""


def _open_store(path: Path, *, trust_pickle: bool, check_checksums: bool = False) -> FeatureSource:
    from twelve.features.errors import FeatureStoreError
    from twelve.features.store import FeatureStore

    try:
        return FeatureStore.open(path, trust_pickle=trust_pickle, check_checksums=check_checksums)
    except FeatureStoreError as error:
        raise click.ClickException(str(error)) from None


def _store_errors() -> tuple[type[Exception], ...]:
    from twelve.features.errors import FeatureStoreError, MissingImageError
    from twelve.features.safe_pickle import UnsafePickleError

    return (FeatureStoreError, MissingImageError, UnsafePickleError)


def _print_summary(summary: StoreSummary) -> None:
    header = summary.header
    kind = "original vilbert-multi-task LMDB" if summary.kind == "original" else "twelve store"
    rows: list[tuple[str, str]] = [
        ("store", f"{summary.path} ({kind}, schema {header.schema_version})"),
        ("extractor", header.extractor),
        ("config", f"sha256 {header.config_sha256}" if header.config_sha256 else "unknown"),
        ("weights", f"sha256 {header.weights_sha256}" if header.weights_sha256 else "unknown"),
        (
            "features",
            f"{header.feature_dim}-d {header.dtype}, max boxes "
            f"{header.max_boxes if header.max_boxes is not None else 'not recorded'}, "
            f"boxes {header.box_convention} in original-image pixels",
        ),
        ("images", f"{summary.count}"),
        ("created", header.created_at.isoformat(timespec="seconds")),
    ]
    stats = summary.boxes_per_image
    if stats is not None:
        rows.append(
            (
                "boxes/image",
                f"min {stats.min}  median {stats.median:g}  mean {stats.mean:.1f}  max {stats.max}",
            )
        )
    for key, value in sorted(header.extra.items()):
        shown = value if len(value) <= 70 else f"{value[:67]}... ({len(value)} chars)"
        rows.append((f"extra.{key}", shown))
    sample = summary.sample
    if sample is not None:
        rows.append(("sample", f"{sample.image_id!r} {sample.image_width}x{sample.image_height}"))
        rows.extend(("", f"  {name} {layout}") for name, layout in sample.arrays.items())
        rows.extend(("", f"  box {box}") for box in sample.first_boxes)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@features.command("inspect")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
def inspect_command(store: Path, as_json: bool, trust_pickle: bool) -> None:
    """Show a store's header, image count, boxes per image and one sample record."""
    from twelve.features.inspection import summarize_store

    source = _open_store(store, trust_pickle=trust_pickle)
    try:
        summary = summarize_store(source)
    except _store_errors() as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(summary.model_dump_json(indent=2))
    else:
        _print_summary(summary)


@features.command("verify")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def verify_command(store: Path, trust_pickle: bool, progress: bool) -> None:
    """Decode every record and check it against the header; exit 1 if any is bad."""
    from tqdm import tqdm

    from twelve.features.inspection import verify_store

    source = _open_store(store, trust_pickle=trust_pickle, check_checksums=True)
    with tqdm(total=len(source), desc="verify", unit="rec", disable=not progress) as bar:
        try:
            report = verify_store(source, on_record=lambda _: bar.update())
        except _store_errors() as error:
            raise click.ClickException(str(error)) from None
    for problem in report.problems:
        click.echo(f"corrupt: {problem.image_id}: {problem.problem}")
    if not report.ok:
        bad = len({p.image_id for p in report.problems})
        raise click.ClickException(
            f"{store}: {bad} of {report.checked} records failed verification"
        )
    click.echo(f"ok: {report.checked} records verified in {store}")


@features.command("show")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.argument("image_id")
@click.option(
    "--image",
    "image_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The image the features were extracted from.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write."
)
@click.option(
    "--names",
    "names_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Object class names, one per line (default: the header's extra.object_classes).",
)
@click.option("--top", type=click.IntRange(min=1), help="Draw only the first N boxes.")
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
def show_command(
    store: Path,
    image_id: str,
    image_path: Path,
    out: Path,
    names_path: Path | None,
    top: int | None,
    trust_pickle: bool,
) -> None:
    """Draw an image's stored boxes with their top class onto the image, as a PNG."""
    from twelve.features.draw import (
        draw_regions,
        load_image_upright,
        names_by_class_id,
        read_class_names,
    )

    source = _open_store(store, trust_pickle=trust_pickle)
    try:
        record = source.get(image_id)
        stored_names = source.header.class_names()
    except (*_store_errors(), ValueError) as error:
        raise click.ClickException(str(error)) from None
    if names_path is not None:
        names: list[str] | None = read_class_names(names_path)
    else:
        names = names_by_class_id(stored_names) if stored_names is not None else None
    try:
        image = load_image_upright(image_path)
    except OSError as error:
        raise click.ClickException(f"{image_path}: cannot read the image ({error})") from None
    if image.size != (record.image_width, record.image_height):
        click.echo(
            f"note: {image_path} is {image.width}x{image.height}, the record says "
            f"{record.image_width}x{record.image_height}; boxes are scaled to the image",
            err=True,
        )
    drawn = draw_regions(image, record, names=names, top=top)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    drawn.save(partial, format="PNG")
    os.replace(partial, out)
    shown = record.num_boxes if top is None else min(top, record.num_boxes)
    click.echo(f"wrote {out} ({shown} of {record.num_boxes} boxes)")


@features.command("convert-legacy")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP + " Required.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage dtype of the converted features (float16 halves the size).",
)
@click.option(
    "--extractor",
    default="vilbert-multi-task-legacy",
    show_default=True,
    help="Extractor name recorded in the header.",
)
@click.option("--max-boxes", type=click.IntRange(min=1), help="Refuse records with more boxes.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def convert_legacy_command(
    source: Path,
    destination: Path,
    trust_pickle: bool,
    dtype: str,
    extractor: str,
    max_boxes: int | None,
    progress: bool,
) -> None:
    """Convert an original vilbert-multi-task LMDB into a twelve store (resumable)."""
    if not trust_pickle:
        raise click.UsageError(
            f"{source} holds pickled records, which can run code when loaded; pass "
            "--trust-pickle if you trust where the file came from"
        )
    from tqdm import tqdm

    from twelve.features.legacy import LegacyFeatureStore, convert_legacy

    try:
        total = len(LegacyFeatureStore(source, trust_pickle=True))
        with tqdm(total=total, desc="convert", unit="rec", disable=not progress) as bar:
            written: list[bool] = []

            def on_record(_image_id: str, was_written: bool) -> None:
                written.append(was_written)
                bar.update()

            header = convert_legacy(
                source,
                destination,
                trust_pickle=True,
                dtype=dtype,  # type: ignore[arg-type]  # click.Choice keeps it valid
                extractor=extractor,
                max_boxes=max_boxes,
                on_record=on_record,
            )
    except (*_store_errors(), FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    summary: dict[str, Any] = {
        "destination": str(destination),
        "images": header.image_count,
        "converted_now": sum(written),
        "skipped_already_present": len(written) - sum(written),
        "dtype": header.dtype,
        "feature_dim": header.feature_dim,
    }
    click.echo(json.dumps(summary))


features.add_command(extract_command)
