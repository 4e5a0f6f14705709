"""Conceptual Captions: two-column TSV files, ``caption<TAB>url``, no header (§12).

The image id is ``zlib.crc32(url) & 0xffffffff`` in decimal, the file name the community download
script gives each image. The file has millions of rows, so `iter_rows` streams it.

Second layout: the original's ``caption_train.json`` / ``caption_val.json``, one object
``{image_id: caption}``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers._io import Layout, build, choose_layout, load_json
from twelve.datasets.records import CaptionRow

TASK = "conceptual_captions"
SPLITS = ("train", "val")
_TSV_NAMES = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}


def tsv_path(root: Path, split: str) -> Path:
    """The official TSV file of a split."""
    return root / _TSV_NAMES[split]


def original_path(root: Path, split: str) -> Path:
    """The original repository's ``{image_id: caption}`` file of a split."""
    return root / f"caption_{split}.json"


def url_image_id(url: str) -> str:
    """The community image id of a URL: its CRC32 as an unsigned decimal string."""
    return str(zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF)


def iter_rows(path: Path) -> Iterator[CaptionRow]:
    """Stream the rows of an official TSV file; a row without exactly 2 columns is an error."""
    try:
        with path.open("r", encoding="utf-8", newline="") as file:
            for index, line in enumerate(file):
                text = line.rstrip("\r\n")
                if not text:
                    continue
                columns = text.split("\t")
                if len(columns) != 2:
                    raise DataFormatError(
                        path,
                        f"expected 2 tab-separated columns (caption, url), found {len(columns)}",
                        location=f"line {index + 1}",
                        value=text,
                    )
                caption, url = columns
                if not url.strip():
                    raise DataFormatError(
                        path, "empty", location=f"line {index + 1}", field="url", value=text
                    )
                yield CaptionRow(row=index, caption=caption, url=url, image_id=url_image_id(url))
    except UnicodeDecodeError as error:
        raise DataFormatError(path, f"not UTF-8 text: {error}") from error


def _read_original(path: Path) -> list[CaptionRow]:
    document = load_json(path)
    if not isinstance(document, dict):
        raise DataFormatError(
            path,
            f"expected an object {{image_id: caption}}, found {type(document).__name__}",
            location="document",
        )
    return [
        build(
            CaptionRow,
            path,
            f"image {image_id!r}",
            row=row,
            caption=caption,
            image_id=str(image_id),
        )
        for row, (image_id, caption) in enumerate(document.items())
    ]


def read(root: Path, split: str, layout: Layout | None = None) -> list[CaptionRow]:
    """Every row of a split, in file order."""
    if split not in SPLITS:
        raise UnknownSplitError(TASK, split, SPLITS)
    chosen = choose_layout(
        TASK,
        split,
        layout,
        official=[tsv_path(root, split)],
        original=[original_path(root, split)],
        known_splits=SPLITS,
    )
    if chosen == "official":
        return list(iter_rows(tsv_path(root, split)))
    return _read_original(original_path(root, split))
