"""VQA v2 parser: question/annotation join, test files without answers, 12-in-1 splits, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twelve.datasets.errors import DataFormatError, MissingDataError
from twelve.datasets.parsers import read_split, vqa
from twelve.datasets.records import AnswerTarget, VQAQuestion


def test_train_questions_are_joined_with_their_annotations(tmp_path: Path, official_files) -> None:
    written = official_files.write_vqa(tmp_path)
    records = read_split("vqa", tmp_path, "train2014")

    annotations = {a["question_id"]: a for a in written["train2014"]["annotations"]}
    assert [r.question_id for r in records] == sorted(annotations)
    for record in records:
        assert isinstance(record, VQAQuestion)
        annotation = annotations[record.question_id]
        assert record.image_id == annotation["image_id"]
        assert record.answers == tuple(a["answer"] for a in annotation["answers"])
        assert len(record.answers) == 10
        assert record.multiple_choice_answer == annotation["multiple_choice_answer"]
        assert record.answer_type == annotation["answer_type"]
        assert record.target is None
        assert record.feature_keys == (str(record.image_id),)
    questions = {q["question_id"]: q["question"] for q in written["train2014"]["questions"]}
    assert {r.question_id: r.question for r in records} == questions


@pytest.mark.parametrize("split", ["test2015", "test-dev2015"])
def test_test_splits_have_questions_but_no_answers(tmp_path: Path, official_files, split) -> None:
    written = official_files.write_vqa(tmp_path)
    records = read_split("vqa", tmp_path, split)
    assert len(records) == len(written[split]["questions"])
    assert all(r.answers is None and r.multiple_choice_answer is None for r in records)


def test_trainval_and_minval_cut_the_last_questions_of_val(
    tmp_path: Path, official_files, monkeypatch
) -> None:
    official_files.write_vqa(tmp_path)
    monkeypatch.setattr(vqa, "MINVAL_SIZE", 3)
    val = read_split("vqa", tmp_path, "val2014")
    train = read_split("vqa", tmp_path, "train2014")
    minval = read_split("vqa", tmp_path, "minval")
    trainval = read_split("vqa", tmp_path, "trainval")
    assert minval == val[-3:]
    assert trainval == train + val[:-3]


def test_original_layout_reads_targets_instead_of_annotations(
    tmp_path: Path, official_files
) -> None:
    written = official_files.write_vqa(tmp_path, annotations=False)
    questions = written["val2014"]["questions"]
    targets = [
        {
            "question_id": q["question_id"],
            "image_id": q["image_id"],
            "labels": [3, 1],
            "scores": [1.0, 0.3],
        }
        for q in reversed(questions)
    ]
    official_files.write_original_targets(tmp_path / "cache" / "val_target.pkl", targets)

    records = read_split("vqa", tmp_path, "val2014")
    assert [r.question_id for r in records] == sorted(q["question_id"] for q in questions)
    assert all(r.target == AnswerTarget(labels=(3, 1), scores=(1.0, 0.3)) for r in records)
    assert all(r.answers is None for r in records)
    with pytest.raises(MissingDataError, match=r"v2_mscoco_val2014_annotations\.json"):
        read_split("vqa", tmp_path, "val2014", layout="official")


def test_missing_annotation_file_names_both_layouts(tmp_path: Path, official_files) -> None:
    official_files.write_vqa(tmp_path, annotations=False)
    with pytest.raises(MissingDataError) as caught:
        read_split("vqa", tmp_path, "train2014")
    message = str(caught.value)
    assert "v2_mscoco_train2014_annotations.json" in message
    assert "train_target.pkl" in message


def test_question_without_annotation_is_named(tmp_path: Path, official_files) -> None:
    official_files.write_vqa(tmp_path)
    path = tmp_path / "v2_mscoco_train2014_annotations.json"
    document = json.loads(path.read_text())
    dropped = document["annotations"].pop(1)["question_id"]
    path.write_text(json.dumps(document))
    with pytest.raises(DataFormatError, match=f"no annotation for question {dropped}"):
        read_split("vqa", tmp_path, "train2014")


def test_wrong_field_type_names_record_field_and_value(tmp_path: Path, official_files) -> None:
    official_files.write_vqa(tmp_path)
    path = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    document = json.loads(path.read_text())
    document["questions"][1]["image_id"] = "forty-two"
    path.write_text(json.dumps(document))
    with pytest.raises(DataFormatError) as caught:
        read_split("vqa", tmp_path, "val2014")
    error = caught.value
    assert error.path == path
    assert error.location == "document.questions[1]"
    assert error.field == "image_id"
    assert error.value == "forty-two"
    assert "expected an integer" in str(error)


def test_truncated_json_reports_line(tmp_path: Path, official_files) -> None:
    official_files.write_vqa(tmp_path)
    path = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"
    path.write_text('{"questions": [\n{"question_id": 1,\n')
    with pytest.raises(DataFormatError, match=r"line 3: not valid JSON"):
        read_split("vqa", tmp_path, "test2015")
