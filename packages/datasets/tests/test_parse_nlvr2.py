"""NLVR2: JSON-lines named .json, string labels, image ids derived from the identifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers import count_images, nlvr2, read_split
from twelve.datasets.records import NLVR2Example


def test_records_and_image_pairs(tmp_path: Path, official_files) -> None:
    written = official_files.write_nlvr2(tmp_path)
    records = read_split("nlvr2", tmp_path, "train")
    assert len(records) == len(written["train"])
    for record, row in zip(records, written["train"], strict=True):
        assert isinstance(record, NLVR2Example)
        assert record.identifier == row["identifier"]
        assert record.sentence == row["sentence"]
        assert record.label is (row["label"] == "True")
        stem = row["identifier"].rsplit("-", 1)[0]
        assert record.feature_keys == (f"{stem}-img0", f"{stem}-img1")
        assert record.directory == row["directory"]
    assert count_images(records) == 4  # 2 pairs, 2 sentences each


def test_pair_ids() -> None:
    assert nlvr2.pair_image_ids("dev-850-0-1") == ("dev-850-0-img0", "dev-850-0-img1")
    with pytest.raises(ValueError, match="suffix"):
        nlvr2.pair_image_ids("nodash")


def test_original_test_json(tmp_path: Path, official_files) -> None:
    official_files.write_nlvr2(tmp_path, splits=("test1",))
    (tmp_path / "test1.json").rename(tmp_path / "test.json")
    assert len(read_split("nlvr2", tmp_path, "test")) == 4


def test_bad_label(tmp_path: Path) -> None:
    (tmp_path / "dev.json").write_text(
        '{"identifier": "dev-1-0-0", "sentence": "x", "label": "True"}\n'
        '{"identifier": "dev-1-0-1", "sentence": "y", "label": "maybe"}\n'
    )
    with pytest.raises(DataFormatError) as caught:
        read_split("nlvr2", tmp_path, "dev")
    assert (caught.value.location, caught.value.field, caught.value.value) == (
        "line 2",
        "label",
        "maybe",
    )
