"""Small complete task worlds for tests: official files, feature stores, vocabularies, pools.

Tests load this module with one line (tests run with --import-mode=importlib)::

    worlds = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("task_worlds.py"))))

`build_world(task, root, official_files)` writes a task's official files (through the parsers
engineer's `official_files` writers), a feature store holding every image of every split with
random features and boxes, the ground-truth-box store of grounding tasks (boxes = the annotated
objects, in ascending id order), an answer vocabulary for answer tasks and a hard-negative pool
for retrieval, and returns the `TaskData` and the spec to use.
"""

from __future__ import annotations

import string
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from twelve.datasets.answers import (
    AnswerVocabulary,
    build_gqa_vocabulary,
    build_vg_qa_vocabulary,
    build_vqa_vocabulary,
)
from twelve.datasets.hard_negatives import compute_hard_negatives
from twelve.datasets.parsers import annotated_images, read_split, splits
from twelve.datasets.specs import TaskSpec, get_spec
from twelve.datasets.tasks import TaskData
from twelve.datasets.tokenizer import BertTokenizer
from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore

FEATURE_DIM = 8
IMAGE_SIZE = (640, 480)
WORDS = [
    "a",
    "man",
    "riding",
    "wave",
    "on",
    "top",
    "of",
    "surfboard",
    "two",
    "dogs",
    "playing",
    "in",
    "the",
    "snow",
    "bus",
    "parked",
    "next",
    "to",
    "building",
    "woman",
    "holding",
    "an",
    "umbrella",
    "rain",
    "plate",
    "food",
    "with",
    "broccoli",
    "and",
    "rice",
    "is",
    "sky",
    "blue",
    "how",
    "many",
    "are",
    "there",
    "what",
    "color",
    "start",
    "answer",
    "stop",
    "yes",
    "no",
    "it",
    "person",
    "animal",
    "left",
    "tall",
    "which",
    "object",
    "used",
    "cut",
    "cake",
    "boy",
    "skates",
    "sleeps",
    "image",
    "contains",
]


def write_vocab(path: Path) -> Path:
    """A tiny BERT-layout vocab.txt: [PAD]=0, specials, some words, and every character."""
    tokens = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += sorted(set(WORDS))
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens += [c for c in chars if c not in tokens]
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return path


def tokenizer(directory: Path) -> BertTokenizer:
    """The tiny-vocabulary tokenizer."""
    return BertTokenizer.from_vocab_file(write_vocab(directory / "vocab.txt"))


def region_record(
    image_id: str,
    rng: np.random.Generator,
    *,
    num_boxes: int,
    size: tuple[int, int] = IMAGE_SIZE,
    boxes: np.ndarray | None = None,
    dim: int = FEATURE_DIM,
) -> RegionFeatures:
    """Random features at random (or given) xyxy boxes inside the image."""
    width, height = size
    if boxes is None:
        x1 = rng.uniform(0, width * 0.6, num_boxes)
        y1 = rng.uniform(0, height * 0.6, num_boxes)
        boxes = np.stack(
            [
                x1,
                y1,
                x1 + rng.uniform(5, width * 0.4, num_boxes),
                y1 + rng.uniform(5, height * 0.4, num_boxes),
            ],
            axis=1,
        )
    return RegionFeatures(
        image_id=image_id,
        image_width=width,
        image_height=height,
        boxes=np.asarray(boxes, dtype=np.float32),
        features=rng.standard_normal((len(boxes), dim)).astype(np.float32),
    )


def write_store(
    path: Path,
    records: list[RegionFeatures],
    *,
    dtype: str = "float32",
    dim: int = FEATURE_DIM,
) -> Path:
    """A twelve feature store holding `records`."""
    with FeatureStore.create(
        path, extractor="test-random", feature_dim=dim, dtype=dtype, resume=False
    ) as writer:
        for record in records:
            writer.put(record)
    return path


def all_feature_keys(task: str, root: Path) -> list[str]:
    """Every feature-store key any official split of the task refers to."""
    keys: dict[str, None] = {}
    for split in splits(task):
        try:
            records = read_split(task, root, split)
        except Exception:  # splits the written files do not have (e.g. empty held-out splits)
            continue
        for record in records:
            for key in record.feature_keys:
                keys[key] = None
    return list(keys)


def _vocabulary(task: str, root: Path) -> AnswerVocabulary:
    if task == "vqa":
        questions = read_split(task, root, "train2014") + read_split(task, root, "val2014")
        return build_vqa_vocabulary(questions, min_count=1)
    if task == "gqa":
        return build_gqa_vocabulary(read_split(task, root, "train") + read_split(task, root, "val"))
    return build_vg_qa_vocabulary(read_split(task, root, "all"), min_count=1)


def build_world(
    task: str,
    root: Path,
    official_files: ModuleType,
    *,
    num_boxes: int = 10,
    missing: tuple[str, ...] = (),
    seed: int = 0,
) -> tuple[TaskSpec, TaskData]:
    """Official files + stores (+ vocabulary, pool) for `task` under `root`; `missing` ids are
    left out of the feature store."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    official_files.write_task(task, files)
    rng = np.random.default_rng(seed)
    keys = all_feature_keys(task, files)
    store = write_store(
        root / "features",
        [region_record(key, rng, num_boxes=num_boxes) for key in keys if key not in missing],
    )
    spec = get_spec(task)
    fields: dict[str, Any] = {"root": files, "features": store}
    overrides: dict[str, Any] = {}
    if spec.group == "grounding":
        images = annotated_images(task, files)
        gt_records = [
            region_record(
                key,
                rng,
                num_boxes=len(image.objects),
                boxes=np.array([obj.box for obj in image.objects], dtype=np.float32),
            )
            for key, image in images.items()
        ]
        fields["gt_features"] = write_store(root / "gt_features", gt_records)
    if spec.head == "answer":
        vocabulary = _vocabulary(task, files)
        fields["answer_vocab"] = vocabulary.save(root / "answers.json")
        overrides["num_labels"] = len(vocabulary)
    if spec.head == "alignment":
        train = read_split(task, files, "train")
        pool = compute_hard_negatives(
            task, FeatureStore.open(store), [str(r.image_id) for r in train], pool_size=100
        )
        pool.save(root / "hard_negatives.npz")
        fields["hard_negatives"] = root / "hard_negatives.npz"
    return spec.with_overrides(overrides) if overrides else spec, TaskData(**fields)
