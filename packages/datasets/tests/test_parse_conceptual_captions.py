"""Conceptual Captions: two-column TSV, CRC32 image ids, the original caption JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers import read_split
from twelve.datasets.records import CaptionRow


def test_rows(tmp_path: Path, official_files) -> None:
    written = official_files.write_conceptual_captions(tmp_path)
    records = read_split("conceptual_captions", tmp_path, "train")
    assert [(r.caption, r.url) for r in records] == written["train"]
    assert [r.row for r in records] == [0, 1, 2, 3]
    assert all(isinstance(r, CaptionRow) for r in records)
    assert records[0].image_id == official_files.crc32_id(written["train"][0][1])
    assert records[0].feature_keys == (records[0].image_id,)
    assert len(read_split("conceptual_captions", tmp_path, "val")) == 2


def test_image_id_is_the_unsigned_crc32_in_decimal() -> None:
    from twelve.datasets.parsers.conceptual_captions import url_image_id

    # Standard CRC-32 check values (0x414FA339, 0x3610A686).
    assert url_image_id("The quick brown fox jumps over the lazy dog") == "1095738169"
    assert url_image_id("hello") == "907060870"


def test_row_with_three_columns(tmp_path: Path) -> None:
    (tmp_path / "Validation_GCC-1.1.0-Validation.tsv").write_text("a\thttp://x\nb\tc\td\n")
    with pytest.raises(DataFormatError) as caught:
        read_split("conceptual_captions", tmp_path, "val")
    assert caught.value.location == "line 2"
    assert "2 tab-separated columns" in str(caught.value)


def test_original_caption_json(tmp_path: Path) -> None:
    (tmp_path / "caption_val.json").write_text(json.dumps({"123": "a dog", "456": "a cat"}))
    records = read_split("conceptual_captions", tmp_path, "val")
    assert [(r.image_id, r.caption, r.url) for r in records] == [
        ("123", "a dog", None),
        ("456", "a cat", None),
    ]
