"""Feature-store read rates: the twelve LMDB store against the original vilbert-multi-task layout.

Both layouts hold the same data and are read side by side in one run:

- original: one LMDB, a pickled dict per image key and the pickled list of all keys under
  b"keys"; a read finds the key with `list.index` over that list, then unpickles the record
  (what vilbert-multi-task's `ImageFeaturesH5Reader` does);
- twelve: `FeatureStore` (binary records, a direct key lookup, float16 widened with torch).

Measurements (each is a function; `--skip NAME` leaves one out):

- random-access: random reads/s as the store grows (N = 1k, 10k, 100k records of 100×64
  float32 features). Target: twelve ≥ 5× the original at 100k, and flat in N.
- large-records: 2k records of 100×2048 features: reads/s and MB/s for float32 and float16
  storage (float16 returned as float32 tensors) and the size on disk. Target: float16 about
  half the original's size.

Every read returns the features as a torch tensor, as a dataset would. Stores are written to
a temporary folder (removed at the end) and read from a warm page cache.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
import torch
from extraction import measure_extraction  # benchmarks/extraction.py

from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore

IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480


# ----------------------------------------------------------------------------- data


class SyntheticRecords:
    """Records with realistic shapes; feature values cycle through a small pool (fast to make)."""

    def __init__(self, num_boxes: int, feature_dim: int, seed: int = 0, pool: int = 64) -> None:
        rng = np.random.default_rng(seed)
        self.features = [
            rng.standard_normal((num_boxes, feature_dim)).astype(np.float32) for _ in range(pool)
        ]
        xy = rng.uniform(0, 300, size=(pool, num_boxes, 2))
        self.boxes = [np.concatenate([p, p + 100], axis=1).astype(np.float32) for p in xy]

    def record(self, index: int) -> RegionFeatures:
        """The record of image `index` (its id is str(index), as COCO ids are stored)."""
        slot = index % len(self.features)
        return RegionFeatures(
            image_id=str(index),
            image_width=IMAGE_WIDTH,
            image_height=IMAGE_HEIGHT,
            boxes=self.boxes[slot],
            features=self.features[slot],
        )


def write_original(path: Path, data: SyntheticRecords, count: int) -> None:
    """The original layout (script/convert_to_lmdb.py): pickled dicts plus a pickled key list."""
    env = lmdb.open(str(path), map_size=1 << 40)
    keys = []
    txn = env.begin(write=True)
    for index in range(count):
        record = data.record(index)
        item = {
            "image_id": index,
            "image_h": record.image_height,
            "image_w": record.image_width,
            "num_boxes": record.num_boxes,
            "boxes": record.boxes,
            "features": record.features,
        }
        key = str(index).encode()
        keys.append(key)
        txn.put(key, pickle.dumps(item))
        if index % 1000 == 999:
            txn.commit()
            txn = env.begin(write=True)
    txn.put(b"keys", pickle.dumps(keys))
    txn.commit()
    env.close()


def write_twelve(path: Path, data: SyntheticRecords, count: int, dtype: str) -> None:
    """The same records as a twelve store."""
    with FeatureStore.create(
        path,
        extractor="benchmark",
        feature_dim=data.features[0].shape[1],
        dtype=dtype,  # type: ignore[arg-type]
        batch_size=1000,
    ) as writer:
        for index in range(count):
            writer.put(data.record(index))


# ----------------------------------------------------------------------------- readers


class OriginalReader:
    """Reads like vilbert-multi-task's ImageFeaturesH5Reader: list.index, then unpickle."""

    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(
            str(path), max_readers=1, readonly=True, lock=False, readahead=False, meminit=False
        )
        with self.env.begin(write=False) as txn:
            self.image_ids = pickle.loads(txn.get(b"keys"))

    def features(self, image_id: str) -> torch.Tensor:
        """Features of one image as a tensor."""
        index = self.image_ids.index(image_id.encode())
        with self.env.begin(write=False) as txn:
            item = pickle.loads(txn.get(self.image_ids[index]))
        return torch.from_numpy(item["features"])

    def close(self) -> None:
        """Release the LMDB handle."""
        self.env.close()


class TwelveReader:
    """The twelve store, returning float32 tensors."""

    def __init__(self, path: Path) -> None:
        self.store = FeatureStore.open(path)

    def features(self, image_id: str) -> torch.Tensor:
        """Features of one image as a float32 tensor."""
        return torch.from_numpy(self.store.get(image_id).features)

    def close(self) -> None:
        """Release the LMDB handle."""
        self.store.close()


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Rate:
    """Reads per second over one timed run."""

    reads: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Records read per second."""
        return self.reads / self.seconds


def time_interleaved(
    readers: dict[str, Callable[[str], torch.Tensor]],
    ids: Sequence[str],
    budget_s: float,
    slice_s: float = 0.1,
) -> dict[str, Rate]:
    """Reads/s of each reader over the same random ids, taking turns in short time slices.

    Taking turns keeps the ratios fair on a shared, noisy machine: a burst of load elsewhere
    slows every reader alike instead of whichever happened to be running.
    """
    for read in readers.values():
        for image_id in ids[: min(100, len(ids))]:
            read(image_id)
    position = dict.fromkeys(readers, 0)
    reads = dict.fromkeys(readers, 0)
    seconds = dict.fromkeys(readers, 0.0)
    while min(seconds.values()) < budget_s:
        for name, read in readers.items():
            start = time.perf_counter()
            stop = start + slice_s
            count = 0
            while True:
                tensor = read(ids[(position[name] + count) % len(ids)])
                count += 1
                if count % 8 == 0 and time.perf_counter() > stop:
                    break
            if tensor.dtype != torch.float32:
                raise AssertionError(f"{name} returned {tensor.dtype}, expected float32")
            seconds[name] += time.perf_counter() - start
            reads[name] += count
            position[name] += count
    return {name: Rate(reads[name], seconds[name]) for name in readers}


def data_size(path: Path) -> int:
    """Bytes the LMDB data file takes on disk."""
    data_file = path / "data.mdb"
    return data_file.stat().st_blocks * 512


def random_ids(count: int, reads: int, seed: int) -> list[str]:
    """Uniformly random image ids, the same sequence for every layout."""
    rng = random.Random(seed)
    return [str(rng.randrange(count)) for _ in range(reads)]


# ----------------------------------------------------------------------------- measurements


def measure_random_access(args: argparse.Namespace, workdir: Path) -> None:
    """(a) random reads/s as the store grows, twelve against the original layout."""
    print(
        f"\n(a) random access, 100x64 float32 features per record "
        f"({args.seconds:g} s of reads per layout and N, layouts taking turns)"
    )
    print(f"{'N':>8} {'twelve rec/s':>14} {'original rec/s':>16} {'twelve/original':>16}")
    data = SyntheticRecords(num_boxes=100, feature_dim=64)
    for count in args.sizes:
        original_path, twelve_path = workdir / f"original-{count}", workdir / f"twelve-{count}"
        write_original(original_path, data, count)
        write_twelve(twelve_path, data, count, "float32")
        ids = random_ids(count, args.ids, seed=count)
        original, twelve = OriginalReader(original_path), TwelveReader(twelve_path)
        rates = time_interleaved(
            {"original": original.features, "twelve": twelve.features}, ids, args.seconds
        )
        original_rate, twelve_rate = rates["original"], rates["twelve"]
        original.close()
        twelve.close()
        print(
            f"{count:>8} {twelve_rate.per_second:>14,.0f} {original_rate.per_second:>16,.0f} "
            f"{twelve_rate.per_second / original_rate.per_second:>15.1f}x"
        )
        shutil.rmtree(original_path)
        shutil.rmtree(twelve_path)


def measure_large_records(args: argparse.Namespace, workdir: Path) -> None:
    """(b) 100x2048 records: reads/s, MB/s and size on disk for float32 and float16 storage."""
    count = args.large_records
    data = SyntheticRecords(num_boxes=100, feature_dim=2048)
    returned_mb = 100 * 2048 * 4 / 1e6  # float32 features handed back per record
    layouts: dict[str, tuple[Path, Callable[[Path], OriginalReader | TwelveReader]]] = {}
    original_path = workdir / "original-large"
    write_original(original_path, data, count)
    layouts["original (pickle, fp32)"] = (original_path, OriginalReader)
    for dtype in ("float32", "float16"):
        path = workdir / f"twelve-large-{dtype}"
        write_twelve(path, data, count, dtype)
        layouts[f"twelve {dtype}"] = (path, TwelveReader)

    print(
        f"\n(b) {count} records of 100x2048 features, random reads returning float32 tensors "
        f"({args.seconds:g} s of reads per layout, taking turns)"
    )
    print(
        f"{'layout':<24} {'rec/s':>8} {'MB/s out':>9} {'MB/s disk':>10} {'on disk MB':>11} "
        f"{'size vs original':>17} {'speed vs original':>18}"
    )
    ids = random_ids(count, args.ids, seed=7)
    readers = {name: reader_type(path) for name, (path, reader_type) in layouts.items()}
    rates = time_interleaved(
        {name: reader.features for name, reader in readers.items()}, ids, args.seconds
    )
    for reader in readers.values():
        reader.close()
    base_rate = base_size = None
    for name, (path, _) in layouts.items():
        rate = rates[name]
        size = data_size(path)
        base_rate = base_rate or rate.per_second
        base_size = base_size or size
        print(
            f"{name:<24} {rate.per_second:>8,.0f} {rate.per_second * returned_mb:>9,.0f} "
            f"{rate.per_second * size / count / 1e6:>10,.0f} {size / 1e6:>11,.1f} "
            f"{size / base_size:>16.2f}x {rate.per_second / base_rate:>17.2f}x"
        )
    for path, _ in layouts.values():
        shutil.rmtree(path)


# Each measurement is registered by name; `--skip NAME` leaves it out. (c) extraction
# throughput (images/s of the R101-C4 configuration on this CPU, all cores) lives in
# benchmarks/extraction.py, which also runs alone with more options.
MEASUREMENTS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "random-access": measure_random_access,
    "large-records": measure_large_records,
    "extraction": measure_extraction,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1000, 10_000, 100_000],
        help="store sizes N for (a), comma-separated",
    )
    parser.add_argument("--large-records", type=int, default=2000, help="records in (b)")
    parser.add_argument("--seconds", type=float, default=3.0, help="read time per layout and N")
    parser.add_argument("--ids", type=int, default=50_000, help="random ids drawn per N")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--skip", action="append", default=[], choices=sorted(MEASUREMENTS), help="leave out"
    )
    parser.add_argument("--workdir", type=Path, help="where temporary stores go (default: /tmp)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(
        f"feature store benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} thread), "
        f"lmdb {lmdb.__version__}, numpy {np.__version__}; warm page cache"
    )
    workdir = Path(tempfile.mkdtemp(prefix="twelve-feature-store-", dir=args.workdir))
    try:
        for name, measure in MEASUREMENTS.items():
            if name not in args.skip:
                measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
