"""Answer vocabularies: threshold, order, soft targets, JSON storage, original pickle import."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from twelve.datasets.answers import (
    AnswerVocabulary,
    build_gqa_vocabulary,
    build_vg_qa_vocabulary,
    build_vqa_vocabulary,
    single_answer_target,
    soft_score,
    vocabulary_from_counts,
    vqa_target,
)
from twelve.datasets.errors import DataFormatError, MissingDataError, VocabularyError
from twelve.datasets.parsers import read_split
from twelve.datasets.records import AnswerTarget, GQAQuestion, VGQAPair, VQAQuestion


def _question(question_id: int, mc: str) -> VQAQuestion:
    return VQAQuestion(question_id=question_id, image_id=1, question="?", multiple_choice_answer=mc)


def test_soft_scores() -> None:
    assert [soft_score(k) for k in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="negative"):
        soft_score(-1)


def test_threshold_counts_distinct_questions_of_normalised_answers() -> None:
    questions = (
        [_question(i, "Two") for i in range(5)]
        + [_question(i + 10, "2") for i in range(4)]  # "Two" and "2" are the same answer
        + [_question(20 + i, "yes") for i in range(9)]
        + [_question(40 + i, "no") for i in range(8)]  # one short of the threshold
        + [_question(40, "no")] * 3  # repeated question ids do not count twice
        + [_question(60 + i, "the") for i in range(9)]  # normalises to the empty string
    )
    vocabulary = build_vqa_vocabulary(questions, min_count=9)
    assert vocabulary.answers == ("", "2", "yes")  # most frequent first, ties alphabetical
    assert vocabulary.counts == (9, 9, 9)
    assert "no" not in vocabulary
    assert build_vqa_vocabulary(questions, min_count=8).answers == ("", "2", "yes", "no")


def test_frequency_order() -> None:
    vocabulary = vocabulary_from_counts(
        [(1, "b"), (2, "b"), (3, "a"), (4, "c"), (5, "c"), (6, "c")],
        min_count=1,
        name="x",
        source="test",
    )
    assert vocabulary.answers == ("c", "b", "a")
    with pytest.raises(VocabularyError, match="no answer occurs"):
        vocabulary_from_counts([(1, "a")], min_count=2, name="x", source="test")


def test_vocabulary_from_parsed_vqa_files(tmp_path: Path, official_files) -> None:
    official_files.write_vqa(tmp_path)
    questions = read_split("vqa", tmp_path, "train2014") + read_split("vqa", tmp_path, "val2014")
    vocabulary = build_vqa_vocabulary(questions, min_count=1)
    assert set(vocabulary.answers) == {"yes", "2", "maroon", "no"}
    with pytest.raises(VocabularyError, match="annotated splits"):
        build_vqa_vocabulary(read_split("vqa", tmp_path, "test2015"))


def test_vqa_target_counts_raw_answers_like_the_original() -> None:
    vocabulary = AnswerVocabulary(name="vqa", answers=("yes", "2", "red", "no"), source="test")
    answers = ["2"] * 5 + ["two"] * 2 + ["red"] * 3
    assert vqa_target(answers, vocabulary) == AnswerTarget(labels=(1, 2), scores=(1.0, 0.9))
    # the raw string "Red." is not looked up as "red" unless asked to normalise
    answers = ["red"] * 2 + ["Red."] + ["maroon"] * 7
    assert vqa_target(answers, vocabulary) == AnswerTarget(labels=(2,), scores=(0.6,))
    assert vqa_target(answers, vocabulary, normalize=True) == AnswerTarget(
        labels=(2,), scores=(0.9,)
    )
    assert vqa_target(["maroon"] * 10, vocabulary) == AnswerTarget(labels=(), scores=())


def test_single_answer_targets() -> None:
    vocabulary = AnswerVocabulary(name="x", answers=("green", "Green.", "2"), source="test")
    assert single_answer_target("Green.", vocabulary, normalize=True).labels == (0,)
    assert single_answer_target("Green.", vocabulary, normalize=False).labels == (1,)
    assert single_answer_target("Two.", vocabulary, normalize=True) == AnswerTarget(
        labels=(2,), scores=(1.0,)
    )
    assert single_answer_target("blue", vocabulary, normalize=False).labels == ()
    assert single_answer_target(None, vocabulary, normalize=False).labels == ()


def test_gqa_and_vg_vocabularies() -> None:
    gqa = [
        GQAQuestion(question_id=f"0{i}", image_id="1", question="?", answer=a)
        for i, a in enumerate(["yes", "yes", "white", "Yes"])
    ]
    assert build_gqa_vocabulary(gqa).answers == ("yes", "Yes", "white")  # not normalised
    assert build_gqa_vocabulary(gqa, min_count=2).answers == ("yes",)
    vg = [
        VGQAPair(qa_id=i, image_id=1, question="?", answer=a)
        for i, a in enumerate(["Green.", "green", "Two.", "2"])
    ]
    assert build_vg_qa_vocabulary(vg, min_count=2).answers == ("2", "green")


def test_json_round_trip_is_atomic(tmp_path: Path) -> None:
    vocabulary = AnswerVocabulary(
        name="vqa", answers=("yes", "", "café"), counts=(9, 9, 9), source="test"
    )
    path = vocabulary.save(tmp_path / "sub" / "vqa.json")
    assert [p.name for p in path.parent.iterdir()] == ["vqa.json"]  # no temporary left behind
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "twelve-answer-vocabulary"
    assert data["answers"] == ["yes", "", "café"]
    loaded = AnswerVocabulary.load(path)
    assert loaded == vocabulary
    assert loaded.label("café") == 2
    assert loaded.answer(0) == "yes"


def test_load_rejects_wrong_files(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError):
        AnswerVocabulary.load(tmp_path / "absent.json")
    other = tmp_path / "other.json"
    other.write_text('{"answers": ["a"]}')
    with pytest.raises(DataFormatError, match="not a twelve answer vocabulary"):
        AnswerVocabulary.load(other)
    duplicate = tmp_path / "duplicate.json"
    duplicate.write_text(
        json.dumps(
            {
                "format": "twelve-answer-vocabulary",
                "name": "x",
                "source": "s",
                "answers": ["a", "a"],
            }
        )
    )
    with pytest.raises(DataFormatError, match="appears twice"):
        AnswerVocabulary.load(duplicate)


ORIGINAL_ANSWERS = ("net", "pitcher", "orange", "yes", "", "2", "café")


def test_import_python2_protocol2_pickles_keeps_label_order(tmp_path: Path, official_files) -> None:
    ans2label, label2ans = official_files.write_original_vocabulary(
        tmp_path / "cache", ORIGINAL_ANSWERS
    )
    assert ans2label.read_bytes()[:2] == b"\x80\x02"
    for kwargs in (
        {"ans2label_path": ans2label},
        {"label2ans_path": label2ans},
        {"ans2label_path": ans2label, "label2ans_path": label2ans},
    ):
        vocabulary = AnswerVocabulary.from_original(**kwargs, name="vqa")
        assert vocabulary.answers == ORIGINAL_ANSWERS
        assert vocabulary.counts is None
        assert "imported from" in vocabulary.source


def test_import_protocol0_unicode_pickle(tmp_path: Path) -> None:
    path = tmp_path / "trainval_ans2label.pkl"
    path.write_bytes(pickle.dumps({a: i for i, a in enumerate(ORIGINAL_ANSWERS)}, protocol=0))
    assert AnswerVocabulary.from_original(path, name="vqa").answers == ORIGINAL_ANSWERS


def test_import_rejects_bad_pickles(tmp_path: Path, official_files) -> None:
    gap = official_files.write_python2_pickle(tmp_path / "gap.pkl", {"a": 0, "b": 2})
    with pytest.raises(DataFormatError, match="label outside"):
        AnswerVocabulary.from_original(gap, name="x")
    twice = official_files.write_python2_pickle(tmp_path / "twice.pkl", {"a": 0, "b": 0})
    with pytest.raises(DataFormatError, match="also used by"):
        AnswerVocabulary.from_original(twice, name="x")
    ans2label = official_files.write_python2_pickle(tmp_path / "a.pkl", {"a": 0, "b": 1})
    label2ans = official_files.write_python2_pickle(tmp_path / "l.pkl", ["b", "a"])
    with pytest.raises(DataFormatError, match=r"disagrees .* at label 0"):
        AnswerVocabulary.from_original(ans2label, label2ans, name="x")
    code = tmp_path / "code.pkl"
    code.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(DataFormatError, match="refusing to unpickle"):
        AnswerVocabulary.from_original(code, name="x")
    with pytest.raises(MissingDataError):
        AnswerVocabulary.from_original(tmp_path / "absent.pkl", name="x")
