"""Parsers of the official annotation files of the 12 tasks (and Conceptual Captions), by task name.

The registry is the one entry point the rest of twelve uses::

    from twelve.datasets.parsers import read_split, splits, example_unit
    records = read_split("vqa", Path("data/vqa"), "val2014")

`root` is the folder that directly holds the dataset's files under their official names (for
RefCOCO the folder with ``refs(unc).p`` and ``instances.json``). Split names are the dataset's own.
Each dataset family also accepts the original 12-in-1 repository's preprocessed files
(``layout="original"``; reference/dataset-formats.md §13); by default the official files are used
when present and the original ones otherwise. Pure Python: nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twelve.datasets.errors import EmptySplitError, UnknownSplitError, UnknownTaskError
from twelve.datasets.parsers import (
    conceptual_captions,
    gqa,
    guesswhat,
    karpathy,
    nlvr2,
    refer,
    snli_ve,
    vg_qa,
    visual7w,
    vqa,
)
from twelve.datasets.parsers._io import Layout
from twelve.datasets.records import AnnotatedImage, AnyRecord, CaptionImage

__all__ = [
    "DatasetParser",
    "Layout",
    "annotated_images",
    "count_examples",
    "count_images",
    "example_unit",
    "parser",
    "read_split",
    "splits",
    "tasks",
]

Reader = Callable[[Path, str, Layout | None], Sequence[AnyRecord]]


@dataclass(frozen=True, slots=True)
class DatasetParser:
    """How to read one task's files: its split names per layout, its unit of example, its reader."""

    task: str
    splits: tuple[str, ...]
    """Split names of the official files (plus 12-in-1 splits derived from them)."""
    original_splits: tuple[str, ...]
    """Split names the original repository's preprocessed files provide."""
    example_unit: str
    """What one example is: "question", "QA pair", "caption", "(ref, sentence) pair", "game",
    "record" or "row"."""
    reader: Reader


def _same_files(read: Callable[[Path, str], Sequence[AnyRecord]]) -> Reader:
    """A reader for datasets whose original layout is the official files themselves."""
    return lambda root, split, layout: read(root, split)


def _refer(task: str) -> DatasetParser:
    return DatasetParser(
        task=task,
        splits=refer.splits(task),
        original_splits=refer.splits(task),
        example_unit="(ref, sentence) pair",
        reader=lambda root, split, layout: refer.read(task, root, split),
    )


def _retrieval(task: str, official: tuple[str, ...]) -> DatasetParser:
    return DatasetParser(
        task=task,
        splits=official,
        original_splits=karpathy.ORIGINAL_SPLITS,
        example_unit="caption",
        reader=lambda root, split, layout: karpathy.read(task, root, split, layout),
    )


_PARSERS: dict[str, DatasetParser] = {
    parser.task: parser
    for parser in (
        DatasetParser("vqa", vqa.OFFICIAL_SPLITS, vqa.ORIGINAL_SPLITS, "question", vqa.read),
        DatasetParser("vg_qa", vg_qa.OFFICIAL_SPLITS, vg_qa.ORIGINAL_SPLITS, "QA pair", vg_qa.read),
        DatasetParser(
            "visual7w",
            visual7w.SPLITS,
            visual7w.SPLITS,
            "QA pair",
            _same_files(visual7w.read),
        ),
        _retrieval("retrieval_coco", karpathy.COCO_SPLITS),
        _retrieval("retrieval_flickr30k", karpathy.FLICKR30K_SPLITS),
        _refer("refcoco"),
        _refer("refcoco+"),
        _refer("refcocog"),
        DatasetParser("nlvr2", nlvr2.OFFICIAL_SPLITS, nlvr2.ORIGINAL_SPLITS, "record", nlvr2.read),
        DatasetParser(
            "snli_ve", snli_ve.SPLITS, snli_ve.SPLITS, "record", _same_files(snli_ve.read)
        ),
        DatasetParser("gqa", gqa.OFFICIAL_SPLITS, gqa.ORIGINAL_SPLITS, "question", gqa.read),
        DatasetParser(
            "guesswhat",
            guesswhat.SPLITS,
            guesswhat.SPLITS,
            "game",
            lambda root, split, layout: guesswhat.read(root, split, layout),
        ),
        DatasetParser(
            "conceptual_captions",
            conceptual_captions.SPLITS,
            conceptual_captions.SPLITS,
            "row",
            conceptual_captions.read,
        ),
    )
}


def tasks() -> tuple[str, ...]:
    """Every task name a parser exists for: the 12 tasks and ``conceptual_captions``."""
    return tuple(_PARSERS)


def parser(task: str) -> DatasetParser:
    """The registry entry of a task; an unknown name lists the known ones."""
    try:
        return _PARSERS[task]
    except KeyError:
        raise UnknownTaskError(task, tuple(_PARSERS)) from None


def splits(task: str, layout: Layout = "official") -> tuple[str, ...]:
    """The split names of `task` in the given layout (official by default)."""
    entry = parser(task)
    return entry.splits if layout == "official" else entry.original_splits


def example_unit(task: str) -> str:
    """What one example of `task` is ("question", "QA pair", "caption", …), for reports."""
    return parser(task).example_unit


def read_split(
    task: str, root: Path | str, split: str, *, layout: Layout | None = None
) -> list[AnyRecord]:
    """Parse one split of a task from the folder holding its files into typed records.

    Raises `MissingDataError` if a needed file is absent, `DataFormatError` naming the file,
    line/record, field and value if one is malformed, `UnknownSplitError` for a split the
    dataset does not have, and `EmptySplitError` if the split holds no example.
    Retrieval tasks return one `CaptionImage` per image (see `count_examples`).
    """
    entry = parser(task)
    if split not in entry.splits and split not in entry.original_splits:
        raise UnknownSplitError(
            task, split, tuple(dict.fromkeys(entry.splits + entry.original_splits))
        )
    root = Path(root)
    records = list(entry.reader(root, split, layout))
    if not records or count_examples(task, records) == 0:
        raise EmptySplitError(task, split, root)
    return records


def count_examples(task: str, records: Sequence[AnyRecord]) -> int:
    """Number of examples in `records`: captions for retrieval, records otherwise."""
    if parser(task).example_unit == "caption":
        return sum(len(record.sentences) for record in records if isinstance(record, CaptionImage))
    return len(records)


def count_images(records: Iterable[AnyRecord]) -> int:
    """Number of distinct images (feature-store keys) the records refer to."""
    return len({key for record in records for key in record.feature_keys})


def annotated_images(
    task: str, root: Path | str, split: str | None = None, *, layout: Layout | None = None
) -> dict[str, AnnotatedImage]:
    """Ground-truth objects per image of a grounding task, keyed by feature-store key.

    Objects are sorted by id: RefCOCO* every ``instances.json`` annotation of the image (`split`
    is ignored: the file is shared); Visual7W the boxes its QA pairs refer to; GuessWhat the
    union of its games' objects, or the original's cached per-image object lists
    (`guesswhat.read_images`). This is the box order of ground-truth-box features.
    """
    root = Path(root)
    if task in refer.SPLIT_BY:
        return {str(key): image for key, image in refer.read_images(root).items()}
    if task == "visual7w":
        return {f"v7w_{key}": image for key, image in visual7w.read_images(root, split).items()}
    if task == "guesswhat":
        images = guesswhat.read_images(root, split, layout)
        return {str(key): image for key, image in images.items()}
    parser(task)  # an unknown task gets the list of known ones
    raise ValueError(f"{task} has no ground-truth boxes; only grounding tasks do")
