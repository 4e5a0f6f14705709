"""VQA v2: question files joined with annotation files on ``question_id`` (dataset-formats.md §2).

Official splits are the release's subtypes (``train2014``, ``val2014``, ``test-dev2015``,
``test2015``); ``trainval`` and ``minval`` are the 12-in-1 splits built from them (all of train2014
plus val2014 without its last 3,000 questions by id; and those last 3,000). Records come sorted by
question id, as the original sorted every question file.

Second layout: the original repository kept the official question files but replaced the
annotation files by ``cache/{train,val}_target.pkl`` (labels and soft scores in the order of its
``trainval_ans2label.pkl``); those fill `VQAQuestion.target` instead of `answers`.
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
from twelve.datasets.records import AnswerTarget, VQAQuestion

TASK = "vqa"
OFFICIAL_SPLITS = ("train2014", "val2014", "test-dev2015", "test2015", "trainval", "minval")
ORIGINAL_SPLITS = ("train2014", "val2014", "trainval", "minval")
MINVAL_SIZE = 3000
_ANNOTATED = ("train2014", "val2014")


def questions_path(root: Path, subtype: str) -> Path:
    """Official question file of a VQA v2 subtype."""
    return root / f"v2_OpenEnded_mscoco_{subtype}_questions.json"


def annotations_path(root: Path, subtype: str) -> Path:
    """Official annotation file of a VQA v2 subtype (train2014 and val2014 only)."""
    return root / f"v2_mscoco_{subtype}_annotations.json"


def original_target_path(root: Path, subtype: str) -> Path:
    """The original repository's precomputed targets for train2014 or val2014."""
    return root / "cache" / f"{subtype.removesuffix('2014')}_target.pkl"


def read_questions(path: Path) -> dict[int, tuple[int, str]]:
    """Read an official question file into ``{question_id: (image_id, question)}``."""
    document = Fields(load_json(path), path, "document")
    questions: dict[int, tuple[int, str]] = {}
    for item in document.items("questions"):
        question_id = item.int("question_id")
        if question_id in questions:
            raise item.error("question_id", "duplicate question id", question_id)
        questions[question_id] = (item.int("image_id"), item.str("question"))
    return questions


def _read_annotations(path: Path) -> dict[int, dict[str, object]]:
    """Read an official annotation file into per-question answer fields."""
    document = Fields(load_json(path), path, "document")
    annotations: dict[int, dict[str, object]] = {}
    for item in document.items("annotations"):
        question_id = item.int("question_id")
        annotations[question_id] = {
            "image_id": item.int("image_id"),
            "answers": item.strings_in("answers", "answer"),
            "multiple_choice_answer": item.str("multiple_choice_answer"),
            "question_type": item.optional_str("question_type"),
            "answer_type": item.optional_str("answer_type"),
            "location": item.location,
        }
    return annotations


def _read_original_targets(path: Path) -> dict[int, tuple[int, AnswerTarget]]:
    """Read ``cache/*_target.pkl`` into ``{question_id: (image_id, target)}``."""
    targets: dict[int, tuple[int, AnswerTarget]] = {}
    for item, target in read_target_entries(path):
        targets[item.int("question_id")] = (item.int("image_id"), target)
    return targets


def _read_subtype(root: Path, subtype: str, layout: Layout) -> list[VQAQuestion]:
    """All questions of one release subtype, with answers (official) or targets (original)."""
    qpath = questions_path(root, subtype)
    questions = read_questions(qpath)
    records: list[VQAQuestion] = []
    if subtype not in _ANNOTATED:
        for question_id in sorted(questions):
            image_id, text = questions[question_id]
            records.append(
                build(
                    VQAQuestion,
                    qpath,
                    f"question_id {question_id}",
                    question_id=question_id,
                    image_id=image_id,
                    question=text,
                )
            )
        return records
    if layout == "official":
        apath = annotations_path(root, subtype)
        annotations = _read_annotations(apath)
        for question_id in sorted(questions):
            image_id, text = questions[question_id]
            fields = annotations.get(question_id)
            if fields is None:
                raise DataFormatError(
                    apath,
                    f"no annotation for question {question_id} of {qpath.name}",
                    field="question_id",
                    value=question_id,
                )
            location = str(fields.pop("location"))
            if fields["image_id"] != image_id:
                raise DataFormatError(
                    apath,
                    f"image id differs from the question file's {image_id}",
                    location=location,
                    field="image_id",
                    value=fields["image_id"],
                )
            fields.pop("image_id")
            records.append(
                build(
                    VQAQuestion,
                    apath,
                    location,
                    question_id=question_id,
                    image_id=image_id,
                    question=text,
                    **fields,
                )
            )
        return records
    tpath = original_target_path(root, subtype)
    targets = _read_original_targets(tpath)
    for question_id in sorted(questions):
        image_id, text = questions[question_id]
        found = targets.get(question_id)
        if found is None:
            raise DataFormatError(
                tpath,
                f"no target for question {question_id} of {qpath.name}",
                field="question_id",
                value=question_id,
            )
        records.append(
            build(
                VQAQuestion,
                tpath,
                f"question_id {question_id}",
                question_id=question_id,
                image_id=image_id,
                question=text,
                target=found[1],
            )
        )
    return records


def _files(root: Path, subtypes: tuple[str, ...], layout: Layout) -> list[Path]:
    paths = [questions_path(root, subtype) for subtype in subtypes]
    for subtype in subtypes:
        if subtype in _ANNOTATED:
            if layout == "official":
                paths.append(annotations_path(root, subtype))
            else:
                paths.append(original_target_path(root, subtype))
    return paths


def read(root: Path, split: str, layout: Layout | None = None) -> list[VQAQuestion]:
    """Questions of a VQA v2 split, sorted by question id; train/val carry answers or targets."""
    if split not in OFFICIAL_SPLITS:
        raise UnknownSplitError(TASK, split, OFFICIAL_SPLITS)
    subtypes: tuple[str, ...] = {
        "trainval": ("train2014", "val2014"),
        "minval": ("val2014",),
    }.get(split, (split,))
    chosen = choose_layout(
        TASK,
        split,
        layout,
        official=_files(root, subtypes, "official"),
        original=_files(root, subtypes, "original") if split in ORIGINAL_SPLITS else None,
        known_splits=OFFICIAL_SPLITS,
    )
    if split == "trainval":
        return (
            _read_subtype(root, "train2014", chosen)
            + _read_subtype(root, "val2014", chosen)[:-MINVAL_SIZE]
        )
    if split == "minval":
        return _read_subtype(root, "val2014", chosen)[-MINVAL_SIZE:]
    return _read_subtype(root, split, chosen)
