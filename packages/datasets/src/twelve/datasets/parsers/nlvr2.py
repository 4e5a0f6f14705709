"""NLVR2: JSON-lines files named ``.json`` (``train``, ``dev``, ``test1``, ``test2``) (§10).

Labels are the strings ``"True"``/``"False"``. The image pair is derived from the identifier as the
original did: drop the last ``-<sentence>`` part, append ``-img0`` and ``-img1``.

Second layout: the original repository renamed ``test1.json`` to ``test.json`` (split ``test``).
"""

from __future__ import annotations

from pathlib import Path

from twelve.datasets.errors import UnknownSplitError
from twelve.datasets.parsers._io import Fields, Layout, build, choose_layout, iter_json_lines
from twelve.datasets.records import NLVR2Example

TASK = "nlvr2"
OFFICIAL_SPLITS = ("train", "dev", "test1", "test2")
ORIGINAL_SPLITS = ("train", "dev", "test")


def split_path(root: Path, split: str) -> Path:
    """The JSON-lines file of a split (official name, or the original's ``test.json``)."""
    return root / f"{split}.json"


def pair_image_ids(identifier: str) -> tuple[str, str]:
    """The two image ids of a statement (``"dev-850-0-1"`` -> ``"dev-850-0-img0"``, ``…-img1``)."""
    stem, separator, _ = identifier.rpartition("-")
    if not separator or not stem:
        raise ValueError(f"identifier {identifier!r} has no '-<sentence>' suffix")
    return f"{stem}-img0", f"{stem}-img1"


def _label(item: Fields) -> bool | None:
    """``"True"``/``"False"`` (any case, or a JSON boolean) as a bool; absent as None."""
    if not item.has("label"):
        return None
    value = item.raw("label")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise item.error("label", "expected 'True' or 'False'", value)


def _directory(item: Fields) -> int | None:
    """The train bucket folder, released as an int or a digit string."""
    return item.int_like("directory") if item.has("directory") else None


def read(root: Path, split: str, layout: Layout | None = None) -> list[NLVR2Example]:
    """Statements of a split, in file order."""
    if split not in OFFICIAL_SPLITS and split not in ORIGINAL_SPLITS:
        raise UnknownSplitError(TASK, split, (*OFFICIAL_SPLITS, "test"))
    # Both layouts hold the same records; only the test file's name differs.
    choose_layout(
        TASK,
        split,
        layout,
        official=[split_path(root, split)] if split in OFFICIAL_SPLITS else None,
        original=[split_path(root, split)] if split in ORIGINAL_SPLITS else None,
        known_splits=(*OFFICIAL_SPLITS, "test"),
    )
    path = split_path(root, split)
    records = []
    for line_number, value in iter_json_lines(path):
        item = Fields(value, path, f"line {line_number}")
        identifier = item.str("identifier")
        try:
            left, right = pair_image_ids(identifier)
        except ValueError as error:
            raise item.error("identifier", str(error), identifier) from None
        records.append(
            build(
                NLVR2Example,
                path,
                item.location,
                identifier=identifier,
                sentence=item.str("sentence"),
                label=_label(item),
                left_image_id=left,
                right_image_id=right,
                directory=_directory(item),
                left_url=item.optional_str("left_url"),
                right_url=item.optional_str("right_url"),
            )
        )
    return records
