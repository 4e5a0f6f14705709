"""SNLI-VE: misspelt image field, hypotheses, gold labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers import read_split
from twelve.datasets.records import SNLIVEExample


def test_records(tmp_path: Path, official_files) -> None:
    written = official_files.write_snli_ve(tmp_path)
    records = read_split("snli_ve", tmp_path, "train")
    assert len(records) == len(written["train"])
    for record, row in zip(records, written["train"], strict=True):
        assert isinstance(record, SNLIVEExample)
        assert record.image_id == int(row["Flikr30kID"].removesuffix(".jpg"))
        assert record.hypothesis == row["sentence2"]
        assert record.premise == row["sentence1"]
        assert record.gold_label == row["gold_label"]
        assert record.pair_id == row["pairID"]
    assert records[1].feature_keys == ("3637013",)


def test_generator_spelling_without_extension_and_no_majority(tmp_path: Path) -> None:
    row = {"Flickr30K_ID": "3637013", "pairID": "p", "sentence2": "h", "gold_label": "-"}
    (tmp_path / "snli_ve_dev.jsonl").write_text(json.dumps(row) + "\n")
    [record] = read_split("snli_ve", tmp_path, "dev")
    assert record.image_id == 3637013
    assert record.gold_label is None
    assert record.premise is None


def test_unknown_label(tmp_path: Path) -> None:
    row = {"Flikr30kID": "1.jpg", "pairID": "p", "sentence2": "h", "gold_label": "entails"}
    (tmp_path / "snli_ve_test.jsonl").write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(DataFormatError) as caught:
        read_split("snli_ve", tmp_path, "test")
    assert (caught.value.location, caught.value.field, caught.value.value) == (
        "line 2",
        "gold_label",
        "entails",
    )
