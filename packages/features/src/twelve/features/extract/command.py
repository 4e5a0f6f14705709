"""`twelve features extract`: region features of a folder (or list) of images into a store.

Only click and the standard library are imported here; torch and detectron2 load inside the
command, so `twelve --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

_PRESET_HELP = (
    "vg-x152-fpn (12-in-1 style ResNeXt-152 FPN, 1600 classes, fc6 features) or butd-r101-c4 "
    "(bottom-up attention style ResNet-101 C4, 1600 classes + 400 attributes), or the path "
    "of a detectron2 YAML"
)


def _silence_detectron2_deprecations() -> None:
    """Hide warnings detectron2 v0.6 raises inside newer torch, which its users cannot act on."""
    import warnings

    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
    )


def _read_names(path: Path | None, first: str) -> list[str] | None:
    """Class names from a text file (one per line), with index 0 = background / no attribute."""
    if path is None:
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [first, *names]


def _list_presets(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from twelve.features.extract.presets import PRESETS

    for preset in PRESETS.values():
        click.echo(f"{preset.name:14s} {preset.summary}")
    ctx.exit(0)


@click.command(name="extract")
@click.argument("images", type=click.Path(exists=True, path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--config", "config", default="vg-x152-fpn", show_default=True, help=_PRESET_HELP)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set MODEL.RPN.POST_NMS_TOPK_TEST=300 (repeatable).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Detector weights: a detectron2 .pth/.pt state dict (or .pkl with --trust-pickle).",
)
@click.option(
    "--random-weights",
    type=int,
    metavar="SEED",
    help="Seeded random weights instead of --weights (smoke tests and benchmarks only).",
)
@click.option(
    "--trust-pickle", is_flag=True, help="Allow a .pkl weights file (restricted unpickler)."
)
@click.option(
    "--boxes",
    "boxes_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {image_id: [[...], ...]}: features at exactly these boxes, in this order.",
)
@click.option(
    "--box-format",
    type=click.Choice(["xyxy", "xywh"]),
    default="xyxy",
    show_default=True,
    help="Layout of the boxes in --boxes: x1 y1 x2 y2, or x y width height (COCO).",
)
@click.option("--min-boxes", type=int, default=10, show_default=True)
@click.option("--max-boxes", type=int, default=100, show_default=True)
@click.option("--conf", type=float, default=0.0, show_default=True, help="Class score threshold.")
@click.option("--nms", type=float, default=0.5, show_default=True, help="Per-class NMS IoU.")
@click.option("--short-side", type=int, help="Resize the short side to this (config: 800/600).")
@click.option("--max-size", type=int, help="Cap on the long side after resizing (1333/1000).")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="bfloat16 runs the networks under autocast: faster on AMX/BF16 CPUs and GPUs, "
    "features differ slightly from float32.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, …")
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="Storage dtype of features and class probabilities.",
)
@click.option(
    "--class-probs/--no-class-probs",
    default=True,
    show_default=True,
    help="Store each region's class distribution (pretraining targets; ~40% of a store).",
)
@click.option(
    "--id-style",
    type=click.Choice(["stem", "number"]),
    default="stem",
    show_default=True,
    help="Image id from the file name: its stem, or its trailing number (COCO_…_000139 → 139).",
)
@click.option("--recursive", is_flag=True, help="Also look in sub-folders of IMAGES.")
@click.option("--no-exif", is_flag=True, help="Ignore EXIF orientation (use raw pixel layout).")
@click.option(
    "--object-classes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Object class names, one per line (without background), kept in the store header.",
)
@click.option(
    "--attribute-classes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Attribute names, one per line (without 'no attribute'), kept in the header.",
)
@click.option("--threads", type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--decode-workers", type=int, default=2, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--list-configs",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_presets,
    help="List the shipped detector configs and exit.",
)
def extract_command(
    images: Path,
    store: Path,
    config: str,
    overrides: tuple[str, ...],
    weights: Path | None,
    random_weights: int | None,
    trust_pickle: bool,
    boxes_file: Path | None,
    box_format: str,
    min_boxes: int,
    max_boxes: int,
    conf: float,
    nms: float,
    short_side: int | None,
    max_size: int | None,
    batch_size: int,
    precision: str,
    device: str,
    dtype: str,
    class_probs: bool,
    id_style: str,
    recursive: bool,
    no_exif: bool,
    object_classes: Path | None,
    attribute_classes: Path | None,
    threads: int | None,
    decode_workers: int,
    progress: bool,
) -> None:
    """Extract region features of IMAGES (a folder, or a list file) into the store STORE.

    Resumable: images already in STORE are skipped, and an interrupted run continues from
    STORE.partial when run again with the same settings. Unreadable images are reported and
    skipped; the command then exits with status 1 after publishing the store.
    """
    from twelve.features.extract.availability import Detectron2MissingError, require_detectron2

    if (weights is None) == (random_weights is None):
        raise click.UsageError("pass exactly one of --weights FILE and --random-weights SEED")
    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    try:
        require_detectron2()
    except Detectron2MissingError as error:
        raise click.ClickException(str(error)) from None
    _silence_detectron2_deprecations()

    import torch
    from pydantic import ValidationError

    from twelve.features.errors import FeatureStoreError
    from twelve.features.extract.boxes_file import BoxesFileError, read_boxes_file
    from twelve.features.extract.detector import (
        DetectorConfigError,
        build_detector,
        load_detector_config,
    )
    from twelve.features.extract.extractor import RegionExtractor
    from twelve.features.extract.images import ImageListError, collect_images
    from twelve.features.extract.run import StoreProvenance, extract_to_store, provenance_extra
    from twelve.features.extract.selection import BoxSelection
    from twelve.features.extract.weights import WeightsError
    from twelve.features.header import sha256_file

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        selection = BoxSelection(min_boxes=min_boxes, max_boxes=max_boxes, conf=conf, nms=nms)
    except ValidationError as error:
        raise click.UsageError(f"bad box selection: {error.errors()[0]['msg']}") from None
    resize = [
        f"INPUT.{key}={value}"
        for key, value in (("MIN_SIZE_TEST", short_side), ("MAX_SIZE_TEST", max_size))
        if value is not None
    ]
    try:
        sources = collect_images(images, recursive=recursive, id_style=id_style)  # type: ignore[arg-type]
        given = read_boxes_file(boxes_file, box_format) if boxes_file else None  # type: ignore[arg-type]
        detector_config = load_detector_config(config, [*overrides, *resize])
        detector = build_detector(
            detector_config,
            weights=weights,
            random_seed=random_weights,
            trust_pickle=trust_pickle,
            device=device,
        )
    except (ImageListError, BoxesFileError, DetectorConfigError, WeightsError) as error:
        raise click.ClickException(str(error)) from None
    if not sources:
        raise click.ClickException(f"no images found in {images}")

    details: dict[str, object] = {"precision": precision, "class_probs": class_probs}
    if given is None:
        mode = "detections"
        details["selection"] = selection.model_dump()
    else:
        mode = "given-boxes"
        details["box_format"] = box_format
    provenance = StoreProvenance(
        extractor=detector_config.name,
        config_sha256=detector_config.sha256,
        weights_sha256=sha256_file(weights) if weights is not None else None,
        extra=provenance_extra(
            config_yaml=detector_config.yaml,
            config_source=detector_config.source,
            mode=mode,  # type: ignore[arg-type]
            details=details,
            weights=str(weights) if weights is not None else f"random (seed {random_weights})",
            object_classes=_read_names(object_classes, "__background__"),
            attribute_classes=_read_names(attribute_classes, "__no_attribute__"),
        ),
    )
    click.echo(
        f"extracting {len(sources)} images with {detector_config.source} "
        f"({detector.feature_dim}-d features, {mode}, {precision}) on {device} into {store}",
        err=True,
    )
    try:
        summary = extract_to_store(
            sources,
            store,
            RegionExtractor(
                detector,
                selection,
                precision=precision,  # type: ignore[arg-type]
                keep_class_probs=class_probs,
            ),
            provenance,
            dtype=dtype,  # type: ignore[arg-type]
            given_boxes=given,
            batch_size=batch_size,
            apply_exif=not no_exif,
            decode_workers=decode_workers,
            progress=progress,
        )
    except (FeatureStoreError, DetectorConfigError) as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted: rerun the same command to resume from {store}.partial", err=True)
        sys.exit(130)
    for line in summary.lines():
        click.echo(line, err=True)
    if summary.failures:
        sys.exit(1)
