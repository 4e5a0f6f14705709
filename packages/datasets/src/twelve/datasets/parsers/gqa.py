"""GQA balanced question files: one JSON object keyed by question id (dataset-formats.md §3).

Question and image ids stay strings end to end. Official splits read
``<split>_balanced_questions.json``; test and challenge carry no answers. ``trainval`` and
``minval`` are the 12-in-1 splits: balanced train + val sorted by question id, without / with only
the last 3,000.

Second layout: the original repository's ``cache/trainval_target.pkl`` (question, image id,
labels and scores in the order of its 1,533-answer ``trainval_ans2label.pkl``) serves
``trainval`` and ``minval``.
"""

from __future__ import annotations

from pathlib import Path

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers._io import (
    Fields,
    Layout,
    build,
    choose_layout,
    load_json,
)
from twelve.datasets.parsers._original_targets import read_target_entries
from twelve.datasets.records import GQAQuestion

TASK = "gqa"
OFFICIAL_SPLITS = ("train", "val", "testdev", "test", "challenge", "trainval", "minval")
ORIGINAL_SPLITS = ("trainval", "minval")
MINVAL_SIZE = 3000


def questions_path(root: Path, split: str) -> Path:
    """Official balanced question file of a GQA split."""
    return root / f"{split}_balanced_questions.json"


def original_target_path(root: Path) -> Path:
    """The original repository's precomputed train+val targets."""
    return root / "cache" / "trainval_target.pkl"


def question_order(question_id: str) -> tuple[int, str]:
    """Sort key of GQA question ids: numerically (as the original's ``int()``), then as text."""
    return (int(question_id), question_id) if question_id.isdigit() else (-1, question_id)


def _read_balanced(path: Path) -> list[GQAQuestion]:
    """Every question of one official balanced question file, in file order."""
    document = load_json(path)
    if not isinstance(document, dict):
        raise DataFormatError(
            path,
            f"expected an object keyed by question id, found {type(document).__name__}",
            location="document",
        )
    records = []
    for question_id, entry in document.items():
        item = Fields(entry, path, f"question {question_id!r}")
        structural = None
        if item.has("types"):
            structural = item.object("types").optional_str("structural")
        records.append(
            build(
                GQAQuestion,
                path,
                item.location,
                question_id=question_id,
                image_id=item.str("imageId"),
                question=item.str("question"),
                answer=item.optional_str("answer"),
                full_answer=item.optional_str("fullAnswer"),
                is_balanced=item.bool("isBalanced") if item.has("isBalanced") else True,
                structural_type=structural,
            )
        )
    return records


def _read_original(path: Path) -> list[GQAQuestion]:
    """The original ``trainval_target.pkl``: questions with precomputed targets."""
    records = []
    for item, target in read_target_entries(path):
        question_id = item.raw("question_id")
        if isinstance(question_id, bool) or not isinstance(question_id, int | str):
            raise item.error("question_id", "expected a string or integer", question_id)
        image_id = item.raw("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int | str):
            raise item.error("image_id", "expected a string or integer", image_id)
        records.append(
            build(
                GQAQuestion,
                path,
                item.location,
                question_id=str(question_id),
                image_id=str(image_id),
                question=item.str("question"),
                target=target,
            )
        )
    return records


def read(root: Path, split: str, layout: Layout | None = None) -> list[GQAQuestion]:
    """Questions of a GQA split (file order for official splits, id order for trainval/minval)."""
    if split not in OFFICIAL_SPLITS:
        raise UnknownSplitError(TASK, split, OFFICIAL_SPLITS)
    derived = split in ("trainval", "minval")
    official = (
        [questions_path(root, "train"), questions_path(root, "val")]
        if derived
        else [questions_path(root, split)]
    )
    chosen = choose_layout(
        TASK,
        split,
        layout,
        official=official,
        original=[original_target_path(root)] if derived else None,
        known_splits=OFFICIAL_SPLITS,
    )
    if not derived:
        return _read_balanced(official[0])
    if chosen == "official":
        records = _read_balanced(official[0]) + _read_balanced(official[1])
    else:
        records = _read_original(original_target_path(root))
    records.sort(key=lambda record: question_order(record.question_id))
    return records[:-MINVAL_SIZE] if split == "trainval" else records[-MINVAL_SIZE:]
