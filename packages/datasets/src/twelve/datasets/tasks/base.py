"""What every task dataset shares: the indexing protocol, data locations, cleaning, image checks."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from twelve.datasets.batch import TaskBatch
from twelve.datasets.errors import DatasetError, EmptySplitError
from twelve.datasets.regions import (
    ImageRegions,
    append_regions,
    check_images_present,
    read_record,
    truncate,
    with_global_token,
)
from twelve.datasets.specs import TaskSpec
from twelve.datasets.tokenizer import BertTokenizer
from twelve.features.store import FeatureSource, FeatureStore

ExampleT = TypeVar("ExampleT")
BatchT = TypeVar("BatchT", bound=TaskBatch)


class ItemKey(NamedTuple):
    """Which example to build, and the seed of any random choice it makes (negatives)."""

    index: int
    seed: int


class TaskData(BaseModel):
    """Where one task's files are: annotations, feature stores and auxiliary files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path
    """Folder that directly holds the dataset's official files."""
    features: Path
    """Feature store of detected regions."""
    gt_features: Path | None = None
    """Feature store of regions at ground-truth boxes (grounding and pointing tasks)."""
    answer_vocab: Path | None = None
    """Answer vocabulary JSON (VQA, VG QA, GQA) in the label order of the head."""
    hard_negatives: Path | None = None
    """Hard-negative pool from `twelve data hard-negatives` (retrieval training)."""
    exclude_images: Path | None = None
    """List of test image ids removed from training ("clean" sets: `coco_test_ids.npy`, ...)."""
    trust_pickle: bool = False
    """Allow original vilbert-multi-task LMDB feature files (pickled records, read restricted)."""

    def open_features(self, path: Path) -> FeatureSource:
        """Open one of this task's feature stores (readers share LMDB handles per process)."""
        return FeatureStore.open(path, trust_pickle=self.trust_pickle)


def load_image_id_list(path: Path) -> frozenset[str]:
    """Read image ids to exclude from `.npy` (no pickle), `.json` (a list) or text (one per line)."""
    if not path.is_file():
        raise FileNotFoundError(f"image id list {path} does not exist")
    if path.suffix == ".npy":
        try:
            values: Iterable[object] = np.load(path, allow_pickle=False).reshape(-1).tolist()
        except ValueError as error:
            raise ValueError(f"{path}: not a plain numpy array of ids ({error})") from None
    elif path.suffix == ".json":
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, list):
            raise ValueError(f"{path}: expected a JSON list of image ids")
    else:
        values = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return frozenset(_image_key(value) for value in values if value != "")


def _image_key(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class TaskDataset(ABC, Generic[ExampleT, BatchT]):
    """A map-style dataset of one task split that builds examples and collates typed batches."""

    def __init__(self, spec: TaskSpec, split: str, *, training: bool) -> None:
        self.spec = spec
        self.split = split
        self.training = training

    @abstractmethod
    def __len__(self) -> int:
        """Number of examples."""

    @abstractmethod
    def example(self, index: int, seed: int) -> ExampleT:
        """Build example `index`; random choices draw from `seed` so streams are reproducible."""

    @abstractmethod
    def collate(self, examples: Sequence[ExampleT]) -> BatchT:
        """Pad and stack examples into the task's batch type."""

    def __getitem__(self, index: int) -> ExampleT:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.spec.name}: index {index} outside 0..{len(self) - 1}")
        return self.example(index, seed=index)

    def batch(self, keys: Sequence[ItemKey | int]) -> BatchT:
        """Build and collate the examples of `keys` (plain indices use their index as seed)."""
        examples = [
            self.example(key.index, key.seed) if isinstance(key, ItemKey) else self[key]
            for key in keys
        ]
        return self.collate(examples)

    def describe(self) -> str:
        """One line for logs: task, split, mode and size."""
        mode = "train" if self.training else "eval"
        return f"{self.spec.name}/{self.split} ({mode}): {len(self)} examples"


class RegionSource:
    """Reads an image's regions for a task: global token, optional GT boxes, truncation to R."""

    def __init__(
        self,
        task: str,
        features: FeatureSource,
        max_regions: int,
        gt_features: FeatureSource | None = None,
    ) -> None:
        self.task = task
        self.features = features
        self.gt_features = gt_features
        self.max_regions = max_regions

    def check(self, image_ids: Sequence[str]) -> None:
        """Fail early, naming the task and the ids, if a store lacks any of the images."""
        check_images_present(self.task, self.features, list(image_ids))
        if self.gt_features is not None:
            check_images_present(self.task, self.gt_features, list(image_ids))

    def detected(self, image_id: str) -> ImageRegions:
        """Global token + detected regions, cut to R."""
        record = read_record(self.task, self.features, image_id)
        return truncate(with_global_token(record), self.max_regions)

    def with_ground_truth(self, image_id: str) -> tuple[ImageRegions, int]:
        """Detected regions then GT-box regions, cut to R; also the number of detected rows."""
        if self.gt_features is None:
            raise ValueError(f"{self.task}: no ground-truth feature store was given")
        detected = with_global_token(read_record(self.task, self.features, image_id))
        ground_truth = read_record(self.task, self.gt_features, image_id)
        merged = append_regions(detected, ground_truth)
        return truncate(merged, self.max_regions), detected.num_regions


def drop_excluded(
    task: str, split: str, records: list[ExampleT], keys: Sequence[str], excluded: frozenset[str]
) -> list[ExampleT]:
    """Remove records whose image is in the excluded (test) list; an emptied split is an error."""
    kept = [record for record, key in zip(records, keys, strict=True) if key not in excluded]
    if not kept:
        raise EmptySplitError(task, split, "the cleaned split (every image was excluded)")
    return kept


class TaskConfigError(DatasetError, ValueError):
    """A task dataset was asked for with missing or inconsistent inputs (vocabulary, stores)."""


def encode_texts(
    tokenizer: BertTokenizer, texts: Sequence[str], max_length: int
) -> list[np.ndarray]:
    """Tokenise a list of texts once (used where a text is paired with many images)."""
    return [tokenizer.encode(text, max_length) for text in texts]
