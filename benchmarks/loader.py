"""Examples per second the VQA loader delivers at the original's scale, with 0 and 2 workers.

Builds a synthetic VQA v2 split in the official file format, a twelve feature store of 100
regions × 2048 float16 features per image (101 rows with the global token, as 12-in-1), and
streams batches of 128 through `TaskLoader`: inline, 2 worker processes and 2 worker threads.
The first batch of each run (worker start-up) is timed separately from the steady state.

    uv run python benchmarks/loader.py [--images 384] [--epochs 2] [--train-examples-per-second X]

Compare the steady-state figure with the examples/s at which `12in1-base` trains on the same
machine (`benchmarks/model_step.py`); pass it as --train-examples-per-second to print the ratio
(the target is at least 5×, so that loading never bounds training).
"""

from __future__ import annotations

import argparse
import json
import string
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from twelve.datasets.answers import build_vqa_vocabulary
from twelve.datasets.loaders import LoaderConfig, TaskLoader
from twelve.datasets.parsers import read_split
from twelve.datasets.specs import get_spec
from twelve.datasets.tasks import TaskData, open_task_dataset
from twelve.datasets.tokenizer import BertTokenizer
from twelve.features.record import RegionFeatures
from twelve.features.store import FeatureStore

QUESTIONS = (
    "What color is the bus parked next to the building?",
    "How many dogs are playing in the snow?",
    "Is the man riding a wave on top of a surfboard?",
)
ANSWERS = ("red", "2", "yes", "no", "blue", "white", "3", "snow")


def write_vqa_split(root: Path, image_ids: list[int], per_image: int) -> None:
    """train2014 question and annotation files in the official VQA v2 format."""
    questions, annotations = [], []
    rng = np.random.default_rng(0)
    for image_id in image_ids:
        for k in range(per_image):
            question_id = image_id * 1000 + k
            questions.append(
                {"image_id": image_id, "question": QUESTIONS[k % 3], "question_id": question_id}
            )
            answers = [str(a) for a in rng.choice(ANSWERS, size=10)]
            annotations.append(
                {
                    "question_id": question_id,
                    "image_id": image_id,
                    "question_type": "what color is the",
                    "answer_type": "other",
                    "multiple_choice_answer": max(set(answers), key=answers.count),
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)
                    ],
                }
            )
    head = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "train2014"}
    (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(
        json.dumps({**head, "task_type": "Open-Ended", "questions": questions})
    )
    (root / "v2_mscoco_train2014_annotations.json").write_text(
        json.dumps({**head, "annotations": annotations})
    )


def write_features(path: Path, image_ids: list[int], boxes: int, dim: int) -> None:
    """A float16 store with `boxes` random regions of `dim` features per image."""
    rng = np.random.default_rng(1)
    with FeatureStore.create(
        path, extractor="benchmark-random", feature_dim=dim, dtype="float16", resume=False
    ) as writer:
        for image_id in image_ids:
            x1 = rng.uniform(0, 400, boxes)
            y1 = rng.uniform(0, 300, boxes)
            writer.put(
                RegionFeatures(
                    image_id=str(image_id),
                    image_width=640,
                    image_height=480,
                    boxes=np.stack([x1, y1, x1 + 200, y1 + 150], axis=1),
                    features=rng.standard_normal((boxes, dim)).astype(np.float16),
                )
            )


def write_vocab(path: Path) -> Path:
    """A small BERT-layout vocabulary (the real one only changes the ids, not the work)."""
    words = sorted({w.strip("?").lower() for q in QUESTIONS for w in q.split()})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "?"]
    tokens += [c for c in string.ascii_lowercase + string.digits if c not in tokens]
    tokens += ["##" + c for c in string.ascii_lowercase]
    path.write_text("".join(t + "\n" for t in tokens))
    return path


def measure(loader: TaskLoader, epochs: int) -> tuple[float, float, int]:
    """(first-batch seconds, steady examples/s, batches) over `epochs` epochs."""
    examples, batches, first = 0, 0, 0.0
    start = time.perf_counter()
    steady_start = start
    for epoch in range(epochs):
        for batch in loader:
            if epoch == 0 and batches == 0:
                first = time.perf_counter() - start
                steady_start = time.perf_counter()
            else:
                examples += batch.batch_size
            batches += 1
            assert batch.region_features.shape[1:] == (101, 2048)
    return first, examples / (time.perf_counter() - steady_start), batches


def main() -> None:
    """Build the data, run each loader configuration, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--questions-per-image", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--vocab", type=Path, help="a real bert-base-uncased vocab.txt")
    parser.add_argument("--train-examples-per-second", type=float)
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory(prefix="twelve-loader-bench-") as tmp:
        root = Path(tmp)
        image_ids = list(range(1, args.images + 1))
        started = time.perf_counter()
        write_vqa_split(root, image_ids, args.questions_per_image)
        write_features(root / "features", image_ids, boxes=100, dim=2048)
        vocabulary = build_vqa_vocabulary(read_split("vqa", root, "train2014"), min_count=1)
        vocabulary.save(root / "answers.json")
        tokenizer = BertTokenizer.load(args.vocab or write_vocab(root / "vocab.txt"))
        spec = get_spec("vqa", {"num_labels": len(vocabulary)})
        data = TaskData(root=root, features=root / "features", answer_vocab=root / "answers.json")
        dataset = open_task_dataset(spec, data, "train2014", tokenizer, training=True)
        print(
            f"data: {len(dataset)} questions over {args.images} images, 100 regions x 2048 "
            f"float16 per image (+ global = 101), batch {args.batch_size}; built in "
            f"{time.perf_counter() - started:.1f} s"
        )
        runs = {
            "0 workers": LoaderConfig(batch_size=args.batch_size, num_workers=0, prefetch=0),
            "2 worker processes": LoaderConfig(
                batch_size=args.batch_size, num_workers=2, worker_method="process", prefetch=4
            ),
            "2 worker threads": LoaderConfig(
                batch_size=args.batch_size, num_workers=2, worker_method="thread", prefetch=4
            ),
        }
        for name, config in runs.items():
            first, rate, batches = measure(TaskLoader(dataset, config), args.epochs)
            line = (
                f"{name:>20}: {rate:8.0f} examples/s steady ({batches} batches; first batch "
                f"{first:.2f} s)"
            )
            if args.train_examples_per_second:
                line += f"; {rate / args.train_examples_per_second:.1f}x training's rate"
            print(line)


if __name__ == "__main__":
    main()
