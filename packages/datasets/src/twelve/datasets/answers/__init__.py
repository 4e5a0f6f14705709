"""Answers of the VQA-style tasks: normalisation, vocabularies, soft targets and VQA accuracy.

Public API::

    normalize_answer(text)                      # vocabulary normalisation (bottom-up recipe)
    process_punctuation(text), process_digit_article(text)   # the official evaluator's steps
    vqa_accuracy(prediction, human_answers)     # official per-question accuracy
    soft_score(count), vqa_target(answers, vocabulary), single_answer_target(answer, vocabulary)
    AnswerVocabulary (.save / .load / .from_original / .label / .answer)
    build_vqa_vocabulary(questions), build_gqa_vocabulary(questions), build_vg_qa_vocabulary(pairs)
"""

from twelve.datasets.answers.accuracy import vqa_accuracy
from twelve.datasets.answers.normalize import (
    normalize_answer,
    process_digit_article,
    process_punctuation,
)
from twelve.datasets.answers.targets import (
    SOFT_SCORES,
    single_answer_target,
    soft_score,
    vqa_target,
)
from twelve.datasets.answers.vocabulary import (
    VQA_MIN_COUNT,
    AnswerVocabulary,
    build_gqa_vocabulary,
    build_vg_qa_vocabulary,
    build_vqa_vocabulary,
    vocabulary_from_counts,
)

__all__ = [
    "SOFT_SCORES",
    "VQA_MIN_COUNT",
    "AnswerVocabulary",
    "build_gqa_vocabulary",
    "build_vg_qa_vocabulary",
    "build_vqa_vocabulary",
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
    "single_answer_target",
    "soft_score",
    "vocabulary_from_counts",
    "vqa_accuracy",
    "vqa_target",
]
