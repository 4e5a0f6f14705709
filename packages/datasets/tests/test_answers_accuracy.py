"""The official per-question VQA accuracy."""

from __future__ import annotations

import pytest

from twelve.datasets.answers import vqa_accuracy


@pytest.mark.parametrize(
    ("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)
def test_leave_one_out_values(matches: int, expected: float) -> None:
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    if matches == 10:
        answers = ["cat"] * 10
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_identical_answers_compare_raw_strings() -> None:
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy(" 2\n", ["2"] * 10) == 1.0


def test_disagreeing_answers_are_normalised() -> None:
    answers = ["2"] * 3 + ["Two."] + ["3"] * 6
    assert vqa_accuracy("two", answers) == pytest.approx(1.0)  # 4 humans after normalisation
    assert vqa_accuracy("A Dog", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(0.6)


def test_needs_answers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("yes", [])
