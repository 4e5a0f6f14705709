"""SNLI-VE: JSON-lines ``snli_ve_<split>.jsonl`` (§11); the original read these same files.

The image field is the misspelt ``Flikr30kID`` (``"3637013.jpg"``); the generator script's
``Flickr30K_ID`` spelling and a value without extension are accepted too. A ``gold_label`` of
``"-"`` (no annotator majority) is kept with label None.
"""

from __future__ import annotations

from pathlib import Path

from twelve.datasets.errors import UnknownSplitError
from twelve.datasets.parsers._io import Fields, build, iter_json_lines, require_file
from twelve.datasets.records import SNLIVE_LABELS, SNLIVEExample

TASK = "snli_ve"
SPLITS = ("train", "dev", "test")
_IMAGE_FIELDS = ("Flikr30kID", "Flickr30K_ID", "Flickr30kID")


def split_path(root: Path, split: str) -> Path:
    """The official JSON-lines file of a split."""
    return root / f"snli_ve_{split}.jsonl"


def _image_id(item: Fields) -> int:
    """Flickr30k id from ``Flikr30kID`` (``"3637013.jpg"`` or ``"3637013"``)."""
    field = item.first_present(*_IMAGE_FIELDS)
    value = item.raw(field)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        stem = value.rsplit(".", 1)[0] if "." in value else value
        if stem.isdigit():
            return int(stem)
    raise item.error(field, "expected a Flickr30k file name such as '3637013.jpg'", value)


def _gold_label(item: Fields) -> str | None:
    label = item.str("gold_label")
    if label == "-":
        return None
    if label not in SNLIVE_LABELS:
        raise item.error("gold_label", f"expected one of {', '.join(SNLIVE_LABELS)} or '-'", label)
    return label


def read(root: Path, split: str) -> list[SNLIVEExample]:
    """Hypothesis-image pairs of a split, in file order."""
    if split not in SPLITS:
        raise UnknownSplitError(TASK, split, SPLITS)
    path = require_file(split_path(root, split), f"{TASK} {split}")
    records = []
    for line_number, value in iter_json_lines(path):
        item = Fields(value, path, f"line {line_number}")
        records.append(
            build(
                SNLIVEExample,
                path,
                item.location,
                pair_id=item.str("pairID"),
                image_id=_image_id(item),
                hypothesis=item.str("sentence2"),
                premise=item.optional_str("sentence1"),
                gold_label=_gold_label(item),
            )
        )
    return records
