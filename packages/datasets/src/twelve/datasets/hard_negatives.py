"""The hard-negative pool of retrieval training: each image's nearest images by mean feature.

The original (`script/generate_pool.py`, original-system.md §3.6) mean-pools every training
image's region features and keeps the 100 nearest training images by Euclidean distance, entry 0
being the image itself; training draws a hard negative from entries 1..99. Here distances are
computed exactly, in chunks of query images against all images (`torch.cdist`), and the pool is
stored as a plain `.npz` (image ids + neighbour indices + JSON metadata), no pickle.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from twelve.datasets.errors import DatasetError
from twelve.datasets.regions import read_record
from twelve.features.store import FeatureSource

FORMAT = "twelve-hard-negatives/1"


class HardNegativePoolError(DatasetError, ValueError):
    """The pool file is malformed or does not cover the images of the training split."""


@dataclass(frozen=True)
class HardNegativePool:
    """Nearest images per image: `neighbours[i, 0] == i`, then increasing distance."""

    image_ids: tuple[str, ...]
    neighbours: np.ndarray
    """(N, K) int64 row indices into `image_ids`."""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if self.neighbours.ndim != 2 or self.neighbours.shape[0] != n:
            raise HardNegativePoolError(
                f"neighbours must be ({n}, K) for {n} images, got {self.neighbours.shape}"
            )
        if n and (self.neighbours.min() < 0 or self.neighbours.max() >= n):
            raise HardNegativePoolError(f"neighbour indices must lie in 0..{n - 1}")

    @property
    def pool_size(self) -> int:
        """K: neighbours per image, the image itself included."""
        return int(self.neighbours.shape[1])

    def save(self, path: Path) -> None:
        """Write the pool as `.npz` under a temporary name, then rename (never half-written)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".npz"
        )
        os.close(handle)
        try:
            np.savez(
                temporary,
                format=np.array(FORMAT),
                image_ids=np.array(self.image_ids, dtype=np.str_),
                neighbours=self.neighbours.astype(np.int64, copy=False),
                metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
            )
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> HardNegativePool:
        """Read a pool written by `save` (plain arrays only; pickled objects are refused)."""
        if not path.is_file():
            raise FileNotFoundError(f"hard-negative pool {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                found = str(data["format"]) if "format" in data else None
                if found != FORMAT:
                    raise HardNegativePoolError(
                        f"{path}: not a twelve hard-negative pool (format {found!r}); compute "
                        "one with `twelve data hard-negatives`"
                    )
                image_ids = tuple(str(value) for value in data["image_ids"].tolist())
                neighbours = data["neighbours"].astype(np.int64)
                metadata = json.loads(str(data["metadata"]))
        except (ValueError, KeyError, OSError) as error:
            raise HardNegativePoolError(
                f"{path}: unreadable hard-negative pool ({error})"
            ) from None
        try:
            return cls(image_ids, neighbours, metadata)
        except HardNegativePoolError as error:
            raise HardNegativePoolError(f"{path}: {error}") from None

    def neighbours_for(self, task: str, image_ids: Sequence[str]) -> np.ndarray:
        """Hard candidates per dataset image as dataset indices (entries 1..K−1; −1 = not in it).

        Neighbours absent from `image_ids` (e.g. removed by cleaning after the pool was built)
        become −1 and are never drawn. Every dataset image must have a row in the pool.
        """
        row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}
        missing = [image_id for image_id in image_ids if image_id not in row_of]
        if missing:
            shown = ", ".join(repr(image_id) for image_id in missing[:5])
            raise HardNegativePoolError(
                f"{task}: {len(missing)} training image(s) ({shown}) are not in the "
                f"hard-negative pool; recompute it for this split with `twelve data hard-negatives`"
            )
        index_of = {image_id: index for index, image_id in enumerate(image_ids)}
        pool_to_dataset = np.array(
            [index_of.get(image_id, -1) for image_id in self.image_ids], dtype=np.int64
        )
        rows = np.array([row_of[image_id] for image_id in image_ids], dtype=np.int64)
        return pool_to_dataset[self.neighbours[rows, 1:]]


def mean_features(
    task: str,
    store: FeatureSource,
    image_ids: Sequence[str],
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(N, D) float32: each image's region features averaged (its global-token feature)."""
    rows: list[np.ndarray] = []
    for image_id in image_ids:
        record = read_record(task, store, image_id)
        rows.append(record.features.astype(np.float32).mean(axis=0))
        if progress is not None:
            progress(1)
    return torch.from_numpy(np.stack(rows))


def nearest_images(
    features: torch.Tensor,
    pool_size: int,
    *,
    chunk_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, K) indices of each row's K nearest rows by Euclidean distance, itself first."""
    count = features.shape[0]
    k = min(pool_size, count)
    out = np.empty((count, k), dtype=np.int64)
    features = features.to(torch.float32)
    for start in range(0, count, chunk_size):
        stop = min(start + chunk_size, count)
        distances = torch.cdist(features[start:stop], features)
        rows = torch.arange(stop - start)
        distances[rows, rows + start] = -1.0  # the image itself always comes first
        out[start:stop] = torch.topk(distances, k, dim=1, largest=False).indices.numpy()
        if progress is not None:
            progress(stop - start)
    return out


def compute_hard_negatives(
    task: str,
    store: FeatureSource,
    image_ids: Sequence[str],
    *,
    pool_size: int = 100,
    chunk_size: int = 512,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> HardNegativePool:
    """Build the pool of a training split: mean-pool features, then K nearest per image."""
    if len(image_ids) < 2:
        raise HardNegativePoolError(f"{task}: a hard-negative pool needs at least 2 images")
    if len(set(image_ids)) != len(image_ids):
        raise HardNegativePoolError(f"{task}: image ids of the pool must be unique")
    features = mean_features(task, store, image_ids, progress)
    neighbours = nearest_images(features, pool_size, chunk_size=chunk_size, progress=progress)
    info = {"task": task, "distance": "euclidean(mean region feature)", **(metadata or {})}
    return HardNegativePool(tuple(image_ids), neighbours, info)
