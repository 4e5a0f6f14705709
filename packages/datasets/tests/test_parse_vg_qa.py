"""Visual Genome QA parser: every pair, the 12-in-1 train/val cut, original targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError
from twelve.datasets.parsers import read_split, vg_qa
from twelve.datasets.records import AnswerTarget, VGQAPair


def test_all_pairs_sorted_by_qa_id(tmp_path: Path, official_files) -> None:
    written = official_files.write_vg_qa(tmp_path)
    records = read_split("vg_qa", tmp_path, "all")
    expected = sorted((qa for image in written for qa in image["qas"]), key=lambda qa: qa["qa_id"])
    assert [r.qa_id for r in records] == [qa["qa_id"] for qa in expected]
    for record, qa in zip(records, expected, strict=True):
        assert isinstance(record, VGQAPair)
        assert (record.image_id, record.question, record.answer) == (
            qa["image_id"],
            qa["question"],
            qa["answer"],
        )
        assert record.feature_keys == (str(qa["image_id"]),)


def test_train_val_cut_the_last_pairs(tmp_path: Path, official_files, monkeypatch) -> None:
    official_files.write_vg_qa(tmp_path)
    monkeypatch.setattr(vg_qa, "VAL_SIZE", 2)
    everything = read_split("vg_qa", tmp_path, "all")
    assert read_split("vg_qa", tmp_path, "train") == everything[:-2]
    assert read_split("vg_qa", tmp_path, "val") == everything[-2:]


def test_original_targets(tmp_path: Path, official_files) -> None:
    targets = [
        {"question_id": 7, "image_id": 10, "question": "What?", "labels": [2], "scores": [1.0]},
        {"question_id": 4, "image_id": 1, "question": "Who?", "labels": [], "scores": []},
    ]
    official_files.write_original_targets(tmp_path / "cache" / "trainval_target.pkl", targets)
    records = read_split("vg_qa", tmp_path, "all")
    assert [r.qa_id for r in records] == [4, 7]
    assert records[1].target == AnswerTarget(labels=(2,), scores=(1.0,))
    assert records[1].answer is None


def test_missing_answer_is_named(tmp_path: Path, official_files) -> None:
    written = official_files.write_vg_qa(tmp_path)
    del written[1]["qas"][0]["answer"]
    (tmp_path / "question_answers.json").write_text(json.dumps(written))
    with pytest.raises(DataFormatError) as caught:
        read_split("vg_qa", tmp_path, "all")
    assert caught.value.location == "images[1].qas[0]"
    assert caught.value.field == "answer"
    assert "missing" in str(caught.value)
