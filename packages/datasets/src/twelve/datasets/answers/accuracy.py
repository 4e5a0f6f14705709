"""The official VQA accuracy of one predicted answer against the 10 human answers (master evaluator).

This is the pure-Python core of the VQA metric: callers average it over questions (and by answer
type) and report 100 × the mean rounded to 2 decimals, as the evaluation server does.
"""

from __future__ import annotations

from collections.abc import Sequence

from twelve.datasets.answers.normalize import process_digit_article, process_punctuation

MATCHES_FOR_FULL_CREDIT = 3


def _clean(text: str) -> str:
    """The evaluator's first step: newlines and tabs become spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """min(#matching humans / 3, 1) averaged over the leave-one-out subsets of the human answers.

    Answers and prediction are normalised only when the humans disagree (when all their answers
    are identical the comparison is on the stripped raw strings), exactly as the official
    evaluator does. With 10 answers of which k match: 0, 0.3, 0.6, 0.9, 1.0 for k = 0..≥4.
    """
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    cleaned = [_clean(answer) for answer in answers]
    predicted = _clean(prediction)
    if len(set(cleaned)) > 1:
        cleaned = [process_digit_article(process_punctuation(answer)) for answer in cleaned]
        predicted = process_digit_article(process_punctuation(predicted))
    matches = sum(answer == predicted for answer in cleaned)
    total = 0.0
    for answer in cleaned:
        others = matches - (answer == predicted)
        total += min(1.0, others / MATCHES_FOR_FULL_CREDIT)
    return total / len(cleaned)
