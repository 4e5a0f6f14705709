"""Visual Genome QA: ``question_answers.json``, a list of images with their QA pairs (§4).

Visual Genome has no official split: ``all`` is every QA pair; ``train`` and ``val`` are the
12-in-1 split (pairs sorted by id, the last 5,000 are ``val``). Cleaning against test images is
the task dataset's job, not the parser's.

Second layout: the original repository's ``cache/trainval_target.pkl`` (question, VG image id,
labels and scores in the order of the VQA ``trainval_ans2label.pkl``).
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
from twelve.datasets.records import VGQAPair

TASK = "vg_qa"
OFFICIAL_SPLITS = ("all", "train", "val")
ORIGINAL_SPLITS = OFFICIAL_SPLITS
VAL_SIZE = 5000


def questions_path(root: Path) -> Path:
    """The official QA file."""
    return root / "question_answers.json"


def original_target_path(root: Path) -> Path:
    """The original repository's precomputed targets."""
    return root / "cache" / "trainval_target.pkl"


def _read_official(path: Path) -> list[VGQAPair]:
    """Every QA pair of ``question_answers.json``."""
    document = load_json(path)
    if not isinstance(document, list):
        raise DataFormatError(
            path,
            f"expected a list of images, found {type(document).__name__}",
            location="document",
        )
    records = []
    for index, entry in enumerate(document):
        image = Fields(entry, path, f"images[{index}]")
        image_id = image.int(image.first_present("id", "image_id"))
        for qa in image.items("qas"):
            qa_image_id = qa.int("image_id") if qa.has("image_id") else image_id
            if qa_image_id != image_id:
                raise qa.error("image_id", f"differs from its image's id {image_id}", qa_image_id)
            records.append(
                build(
                    VGQAPair,
                    path,
                    qa.location,
                    qa_id=qa.int(qa.first_present("qa_id", "id")),
                    image_id=image_id,
                    question=qa.str("question"),
                    answer=qa.str("answer"),
                )
            )
    return records


def _read_original(path: Path) -> list[VGQAPair]:
    """The original ``trainval_target.pkl``."""
    records = []
    for item, target in read_target_entries(path):
        records.append(
            build(
                VGQAPair,
                path,
                item.location,
                qa_id=item.int_like("question_id"),
                image_id=item.int_like("image_id"),
                question=item.str("question"),
                target=target,
            )
        )
    return records


def read(root: Path, split: str, layout: Layout | None = None) -> list[VGQAPair]:
    """QA pairs of a split, sorted by QA id (the order the 12-in-1 split is cut in)."""
    if split not in OFFICIAL_SPLITS:
        raise UnknownSplitError(TASK, split, OFFICIAL_SPLITS)
    chosen = choose_layout(
        TASK,
        split,
        layout,
        official=[questions_path(root)],
        original=[original_target_path(root)],
        known_splits=OFFICIAL_SPLITS,
    )
    if chosen == "official":
        records = _read_official(questions_path(root))
    else:
        records = _read_original(original_target_path(root))
    records.sort(key=lambda record: record.qa_id)
    if split == "train":
        return records[:-VAL_SIZE]
    if split == "val":
        return records[-VAL_SIZE:]
    return records
