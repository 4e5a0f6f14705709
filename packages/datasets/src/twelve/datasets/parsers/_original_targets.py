"""The original repository's answer-target pickles (``cache/*_target.pkl``), shared by VQA v2,
GQA and Visual Genome QA: a list of dicts, each with ``labels`` and ``scores``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers._io import Fields, build, load_pickle
from twelve.datasets.records import AnswerTarget


def read_target_entries(path: Path) -> Iterator[tuple[Fields, AnswerTarget]]:
    """Each entry of a target pickle (for its other fields) with its answer target."""
    data = load_pickle(path)
    if not isinstance(data, list):
        raise DataFormatError(path, f"expected a list of targets, found {type(data).__name__}")
    for index, entry in enumerate(data):
        item = Fields(entry, path, f"targets[{index}]")
        target = build(
            AnswerTarget,
            path,
            item.location,
            labels=item.int_list("labels"),
            scores=item.number_list("scores"),
        )
        yield item, target
