"""Region-feature extraction throughput (images/s) of a full-size detector on this machine.

The bottom-up-attention style ResNet-101 C4 preset (`butd-r101-c4`: 600/1000 resize, 300
proposals, 1600 classes, 400 attributes) runs with seeded random weights over generated
640×480 JPEGs (a typical COCO size), end to end as `twelve features extract` does: decode,
resize, backbone, RPN, pooled res5 features, per-class NMS selection, store write. Images
alternate between the precisions so both see the same (shared, noisy) machine. A second
pass times each stage on the same images to show where the time goes. Variants measured side
by side: float32 (the default: channels-last convolutions), float32 in the plain NCHW layout,
and bfloat16 autocast (`--precision bfloat16`).

Random weights make class scores nearly uniform, the worst case for the 1600-class NMS
selection (trained detectors are peaked, so their selection is cheaper). Needs detectron2.

    uv run python benchmarks/extraction.py [--images 6] [--threads 2] [--batch-size 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _write_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Smooth random images (JPEG), so decoding costs what a photo's would."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    width, height = size
    for index in range(count):
        coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        image.save(folder / f"{index:06d}.jpg", quality=90)


def _stage_times(extractor: object, sources: list[object]) -> dict[str, float]:
    """Seconds per stage, summed over `sources`, running the extraction steps one by one."""
    from twelve.features.extract.extractor import RegionExtractor
    from twelve.features.extract.images import load_image
    from twelve.features.extract.preprocess import prepare_image
    from twelve.features.extract.selection import select_regions

    assert isinstance(extractor, RegionExtractor)
    detector = extractor.detector
    stages = dict.fromkeys(("decode", "resize", "backbone", "rpn", "box head", "selection"), 0.0)
    autocast = torch.autocast(
        "cpu", dtype=torch.bfloat16, enabled=extractor.precision == "bfloat16"
    )
    with torch.inference_mode(), autocast:
        for source in sources:
            mark = time.perf_counter()

            def lap(stage: str) -> None:
                nonlocal mark
                now = time.perf_counter()
                stages[stage] += now - mark
                mark = now

            image = load_image(source)  # type: ignore[arg-type]
            lap("decode")
            resized = prepare_image(
                image.rgb,
                short_side=extractor.short_side,
                max_size=extractor.max_size,
                channel_order=extractor.channel_order,
            )
            lap("resize")
            batch, maps = detector.encode([resized.pixels])
            lap("backbone")
            boxes = detector.propose(batch, maps)
            lap("rpn")
            (output,) = detector.describe(maps, boxes)
            lap("box head")
            chosen = select_regions(boxes[0], output.class_probs, extractor.selection)
            if detector.attribute_predictor is not None:
                detector.attribute_probs(output.features[chosen.indices], chosen.object_ids)
            lap("selection")
    return stages


def measure_extraction(args: argparse.Namespace, workdir: Path) -> None:
    """Print end-to-end images/s of each variant, side by side, and a stage breakdown."""
    from twelve.features.extract.availability import detectron2_available

    if not detectron2_available():
        print(
            "\nextraction: skipped, detectron2 is not installed (see packages/features/README.md)"
        )
        return
    from twelve.features.extract.detector import build_detector, load_detector_config
    from twelve.features.extract.extractor import RegionExtractor
    from twelve.features.extract.images import collect_images, load_image
    from twelve.features.extract.run import StoreProvenance, extract_to_store

    preset = getattr(args, "extract_config", "butd-r101-c4")
    count = getattr(args, "extract_images", 6)
    stage_count = min(count, getattr(args, "extract_stage_images", 2))
    batch_size = getattr(args, "extract_batch_size", 1)
    threads = getattr(args, "extract_threads", None) or os.cpu_count() or 1
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        folder = workdir / "extraction-images"
        _write_images(folder, count + 1, (640, 480))
        sources = collect_images(folder)
        config = load_detector_config(preset)
        started = time.perf_counter()
        detector = build_detector(config, random_seed=0)
        build_seconds = time.perf_counter() - started
        print(
            f"\nextraction: {preset} ({detector.feature_dim}-d, "
            f"{detector.num_classes - 1} classes, {config.cfg.MODEL.RPN.POST_NMS_TOPK_TEST} "
            f"proposals), random weights, 640x480 JPEGs resized to short side "
            f"{config.cfg.INPUT.MIN_SIZE_TEST}, batch {batch_size}, {threads} torch threads, "
            f"CPU; model built in {build_seconds:.1f} s"
        )
        print(
            f"{'variant':<24} {'images':>6} {'seconds':>8} {'images/s':>9} {'s/image':>8} "
            f"{'speed':>6}"
        )
        nchw = build_detector(config, random_seed=0, channels_last=False)
        extractors = {
            "float32 (default)": RegionExtractor(detector),
            "float32, NCHW layout": RegionExtractor(nchw),
            "bfloat16 autocast": RegionExtractor(detector, precision="bfloat16"),
        }
        for extractor in extractors.values():
            extractor.extract([load_image(sources[0])])  # warm-up (allocator, oneDNN kernels)
        # Interleaved, one image at a time, so every variant sees the same machine load.
        seconds = dict.fromkeys(extractors, 0.0)
        written = dict.fromkeys(extractors, 0)
        for source in sources[1:]:
            for index, (variant, extractor) in enumerate(extractors.items()):
                summary = extract_to_store(
                    [source],
                    workdir / f"extraction-store-{index}",
                    extractor,
                    StoreProvenance(
                        extractor=config.name,
                        config_sha256=config.sha256,
                        weights_sha256=None,
                        extra={"variant": variant},
                    ),
                    batch_size=batch_size,
                    progress=False,
                    report=lambda _message: None,
                )
                seconds[variant] += summary.seconds
                written[variant] += summary.written
        baseline = written["float32 (default)"] / seconds["float32 (default)"]
        for variant in extractors:
            rate = written[variant] / seconds[variant]
            print(
                f"{variant:<24} {written[variant]:>6} {seconds[variant]:>8.1f} "
                f"{rate:>9.3f} {1 / rate:>8.2f} {rate / baseline:>5.2f}x"
            )
        by_precision: dict[str, dict[str, float]] = {}
        staged = {k: v for k, v in extractors.items() if "NCHW" not in k}
        for source in sources[1 : 1 + stage_count]:
            for precision, extractor in staged.items():
                times = _stage_times(extractor, [source])
                totals = by_precision.setdefault(precision, dict.fromkeys(times, 0.0))
                for stage, value in times.items():
                    totals[stage] += value
        for precision, stages in by_precision.items():
            total = sum(stages.values())
            print(f"{precision} per image by stage: " + ", ".join(
                f"{name} {seconds / stage_count:.2f} s ({100 * seconds / total:.0f}%)"
                for name, seconds in stages.items()
            ))  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", dest="extract_config", default="butd-r101-c4")
    parser.add_argument("--images", dest="extract_images", type=int, default=6)
    parser.add_argument("--stage-images", dest="extract_stage_images", type=int, default=2)
    parser.add_argument("--batch-size", dest="extract_batch_size", type=int, default=1)
    parser.add_argument("--threads", dest="extract_threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, help="where temporary files go (default: /tmp)")
    args = parser.parse_args()
    print(
        f"extraction benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="twelve-extraction-", dir=args.workdir))
    try:
        measure_extraction(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
