"""GQA parser: string ids, answers absent in test files, 12-in-1 splits, original targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError, UnknownSplitError
from twelve.datasets.parsers import gqa, read_split
from twelve.datasets.records import AnswerTarget, GQAQuestion


def test_balanced_questions_keep_string_ids(tmp_path: Path, official_files) -> None:
    written = official_files.write_gqa(tmp_path)
    records = read_split("gqa", tmp_path, "train")
    assert [r.question_id for r in records] == list(written["train"])
    assert all(r.question_id.startswith("0") for r in records)  # leading zeros kept
    first = records[0]
    entry = written["train"][first.question_id]
    assert isinstance(first, GQAQuestion)
    assert first.image_id == entry["imageId"] == "2354786"
    assert first.answer == entry["answer"]
    assert first.full_answer == entry["fullAnswer"]
    assert first.structural_type == entry["types"]["structural"]
    assert first.is_balanced is True
    assert first.feature_keys == ("2354786",)


def test_testdev_has_answers_and_n_image_ids(tmp_path: Path, official_files) -> None:
    official_files.write_gqa(tmp_path)
    records = read_split("gqa", tmp_path, "testdev")
    assert {r.image_id for r in records} == {"n161313", "n15740"}
    assert all(r.answer is not None for r in records)


@pytest.mark.parametrize("split", ["test", "challenge"])
def test_test_and_challenge_have_no_answers(tmp_path: Path, official_files, split) -> None:
    official_files.write_gqa(tmp_path)
    records = read_split("gqa", tmp_path, split)
    assert records
    assert all(r.answer is None and r.full_answer is None for r in records)


def test_trainval_minval_sorted_numerically(tmp_path: Path, official_files, monkeypatch) -> None:
    official_files.write_gqa(tmp_path)
    monkeypatch.setattr(gqa, "MINVAL_SIZE", 2)
    everything = read_split("gqa", tmp_path, "train") + read_split("gqa", tmp_path, "val")
    ordered = sorted(everything, key=lambda r: int(r.question_id))
    assert read_split("gqa", tmp_path, "trainval") == ordered[:-2]
    assert read_split("gqa", tmp_path, "minval") == ordered[-2:]


def test_original_trainval_targets(tmp_path: Path, official_files, monkeypatch) -> None:
    monkeypatch.setattr(gqa, "MINVAL_SIZE", 1)
    targets = [
        {
            "question_id": 20,
            "image_id": "2354786",
            "question": "Is it?",
            "labels": [5],
            "scores": [1.0],
        },
        {"question_id": 3, "image_id": "2375429", "question": "What?", "labels": [], "scores": []},
        {"question_id": 100, "image_id": "1", "question": "Who?", "labels": [0], "scores": [1.0]},
    ]
    official_files.write_original_targets(tmp_path / "cache" / "trainval_target.pkl", targets)
    trainval = read_split("gqa", tmp_path, "trainval")
    assert [r.question_id for r in trainval] == ["3", "20"]
    assert trainval[1].target == AnswerTarget(labels=(5,), scores=(1.0,))
    assert [r.question_id for r in read_split("gqa", tmp_path, "minval")] == ["100"]
    with pytest.raises(UnknownSplitError):
        read_split("gqa", tmp_path, "train", layout="original")


def test_wrong_type_names_the_question(tmp_path: Path, official_files) -> None:
    written = official_files.write_gqa(tmp_path)
    question_id = next(iter(written["val"]))
    written["val"][question_id]["imageId"] = 2417997
    path = tmp_path / "val_balanced_questions.json"
    path.write_text(json.dumps(written["val"]))
    with pytest.raises(DataFormatError) as caught:
        read_split("gqa", tmp_path, "val")
    assert caught.value.location == f"question {question_id!r}"
    assert caught.value.field == "imageId"
    assert caught.value.value == 2417997


def test_a_list_instead_of_an_object_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "val_balanced_questions.json").write_text("[]")
    with pytest.raises(DataFormatError, match="keyed by question id"):
        read_split("gqa", tmp_path, "val")
