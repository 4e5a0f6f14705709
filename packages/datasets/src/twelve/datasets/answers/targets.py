"""Answer targets: the soft scores the answer head's BCE is trained against.

VQA (bottom-up recipe, as the original's ``*_target.pkl``): count how many of the 10 humans gave
each answer string and score it 0 / 0.3 / 0.6 / 0.9 / 1.0 for 0 / 1 / 2 / 3 / ≥4 of them; answers
outside the vocabulary are dropped (a question may end with no label at all). The recipe counts
the raw strings, not normalised ones (its docstring said otherwise); ``normalize=True`` applies
the vocabulary's normalisation first, a deliberate departure from the original.
GQA and Visual Genome QA: one answer per question, score 1.0 if it is in the vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from twelve.datasets.answers.normalize import normalize_answer
from twelve.datasets.answers.vocabulary import AnswerVocabulary
from twelve.datasets.records import AnswerTarget

SOFT_SCORES = (0.0, 0.3, 0.6, 0.9, 1.0)
"""Score for 0, 1, 2, 3 and 4-or-more matching human answers."""


def soft_score(count: int) -> float:
    """The VQA soft score of an answer given by `count` of the human annotators."""
    if count < 0:
        raise ValueError(f"an answer count cannot be negative, got {count}")
    return SOFT_SCORES[min(count, len(SOFT_SCORES) - 1)]


def vqa_target(
    answers: Sequence[str], vocabulary: AnswerVocabulary, *, normalize: bool = False
) -> AnswerTarget:
    """Soft target of one VQA question from its human answers (labels in first-seen order)."""
    counted = (
        Counter(normalize_answer(answer) for answer in answers) if normalize else Counter(answers)
    )
    labels: list[int] = []
    scores: list[float] = []
    for answer, count in counted.items():
        label = vocabulary.label(answer)
        if label is not None:
            labels.append(label)
            scores.append(soft_score(count))
    return AnswerTarget(labels=tuple(labels), scores=tuple(scores))


def single_answer_target(
    answer: str | None, vocabulary: AnswerVocabulary, *, normalize: bool
) -> AnswerTarget:
    """Target of a one-answer question: score 1.0 on its label, empty if out of vocabulary.

    GQA answers are looked up as released (``normalize=False``); Visual Genome answers
    (``"Green."``) are VQA-normalised first (``normalize=True``), as the published VG recipe did.
    """
    if answer is None:
        return AnswerTarget(labels=(), scores=())
    label = vocabulary.label(normalize_answer(answer) if normalize else answer)
    if label is None:
        return AnswerTarget(labels=(), scores=())
    return AnswerTarget(labels=(label,), scores=(1.0,))
