"""The official VQA normalisation, case by case (dataset-formats.md §2.4)."""

from __future__ import annotations

import pytest

from twelve.datasets.answers import normalize_answer, process_digit_article, process_punctuation
from twelve.datasets.answers.normalize import CONTRACTIONS, PUNCTUATION


def test_tables_match_the_evaluator() -> None:
    assert len(PUNCTUATION) == 21
    assert not {"'", ":", "."} & set(PUNCTUATION)
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["dont"] == "don't"
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the table's one reversed entry
    assert all("’" not in key + value for key, value in CONTRACTIONS.items())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "yes"),
        ("Yes!", "Yes "),  # no space next to "!": replaced by a space
        ("hi !", "hi "),  # "!" next to a space: deleted everywhere
        ("well-done", "well done"),
        ("x- y-z", "x yz"),  # one "- " occurrence deletes every "-"
        ("1,000-2", "10002"),  # a digit-comma-digit deletes every mark
        ("red, white", "red white"),
        ("3.5", "3.5"),  # a decimal point stays
        ("Green.", "Green"),
        ("a.b.", "ab"),
        ("it's 5:30", "it's 5:30"),  # apostrophe and colon are not punctuation
        ("(cat)", " cat "),
    ],
)
def test_process_punctuation(text: str, expected: str) -> None:
    assert process_punctuation(text) == expected


def test_at_most_32_periods_are_removed() -> None:
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),
        ("a dog", "dog"),
        ("The   Red  Bus", "red bus"),
        ("an apple and the pear", "apple and pear"),
        ("dont", "don't"),
        ("whats up", "what's up"),
        ("Im", "im"),  # capitalised table keys never match after lower-casing
        ("somebody'd", "somebodyd"),
        ("", ""),
    ],
)
def test_process_digit_article(text: str, expected: str) -> None:
    assert process_digit_article(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Green.", "green"),
        ("A dog, a cat", "dog cat"),
        ("1,000", "1000"),
        ("two", "2"),
        ("the", ""),  # the vocabulary's empty-string answer comes from here
        ("isnt", "isn't"),
        ("3.5 ft", "3.5 ft"),
        ("Yes ", "yes"),
    ],
)
def test_normalize_answer(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected
