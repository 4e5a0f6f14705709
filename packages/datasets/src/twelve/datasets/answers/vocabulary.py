"""Answer vocabularies: the label order of an answer head, built from data or imported, kept as JSON.

A vocabulary is an ordered list of answer strings; an answer's label is its position. Building
one keeps the answers given for at least N distinct questions (VQA v2 train+val with N=9: 3,129
answers) in a fixed order (most frequent first, ties alphabetical). Released 12-in-1 heads need
the original label order, which only the original ``trainval_label2ans.pkl`` /
``trainval_ans2label.pkl`` pickles hold: `AnswerVocabulary.from_original` imports them through the
restricted unpickler.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from twelve.datasets.answers.normalize import normalize_answer
from twelve.datasets.errors import DataFormatError, MissingDataError, VocabularyError
from twelve.datasets.records import GQAQuestion, VGQAPair, VQAQuestion

FORMAT = "twelve-answer-vocabulary"
FORMAT_VERSION = 1
VQA_MIN_COUNT = 9
"""The bottom-up recipe's threshold: 3,129 answers on VQA v2 train2014 + val2014."""


class AnswerVocabulary(BaseModel):
    """An ordered answer list (label = position) with where it came from, stored as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["twelve-answer-vocabulary"] = FORMAT
    version: Literal[1] = FORMAT_VERSION
    name: str
    """Which head it labels, e.g. ``"vqa"`` (shared with vg_qa) or ``"gqa"``."""
    answers: tuple[str, ...] = Field(min_length=1)
    source: str
    """How it was made: the recipe and threshold, or the imported file."""
    counts: tuple[int, ...] | None = None
    """Distinct questions per answer when built from data (absent when imported)."""

    @model_validator(mode="after")
    def _valid(self) -> Self:
        seen: set[str] = set()
        for label, answer in enumerate(self.answers):
            if answer in seen:
                raise ValueError(f"answer {answer!r} appears twice (again at label {label})")
            seen.add(answer)
        if self.counts is not None and len(self.counts) != len(self.answers):
            raise ValueError(f"{len(self.counts)} counts for {len(self.answers)} answers")
        return self

    @cached_property
    def ans2label(self) -> dict[str, int]:
        """Answer -> label, the lookup targets are built with."""
        return {answer: label for label, answer in enumerate(self.answers)}

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return answer in self.ans2label

    def label(self, answer: str) -> int | None:
        """The label of `answer` (exact string), or None if it is not in the vocabulary."""
        return self.ans2label.get(answer)

    def answer(self, label: int) -> str:
        """The answer string a head's output `label` stands for."""
        return self.answers[label]

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON, atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.model_dump(mode="json"), ensure_ascii=False, indent=1) + "\n"
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocabulary:
        """Read a vocabulary written by `save`; a wrong file names the problem and the field."""
        path = Path(path)
        if not path.is_file():
            raise MissingDataError([path], "answer vocabulary")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataFormatError(path, f"not a JSON answer vocabulary: {error}") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataFormatError(
                path,
                f'not a twelve answer vocabulary (expected "format": {FORMAT!r})',
                field="format",
                value=data.get("format") if isinstance(data, dict) else data,
            )
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            raise DataFormatError(
                path,
                first["msg"],
                field=".".join(map(str, first["loc"])) or None,
                value=first.get("input"),
            ) from error

    @classmethod
    def from_original(
        cls,
        ans2label_path: str | Path | None = None,
        label2ans_path: str | Path | None = None,
        *,
        name: str,
    ) -> AnswerVocabulary:
        """Import the original's ``ans2label`` and/or ``label2ans`` pickle, keeping its label order.

        Either file suffices; given both, they must agree. Read through the restricted unpickler
        (builtin containers and strings only).
        """
        if ans2label_path is None and label2ans_path is None:
            raise ValueError("give the original ans2label pickle, the label2ans pickle, or both")
        answers = _read_ans2label(Path(ans2label_path)) if ans2label_path else None
        if label2ans_path is not None:
            listed = _read_label2ans(Path(label2ans_path))
            if answers is not None and listed != answers:
                label = next(
                    (i for i, (a, b) in enumerate(zip(answers, listed, strict=False)) if a != b),
                    min(len(answers), len(listed)),
                )
                raise DataFormatError(
                    label2ans_path,
                    f"disagrees with {ans2label_path} at label {label} "
                    f"({len(listed)} vs {len(answers)} answers)",
                    location=f"label2ans[{label}]",
                )
            answers = listed
        sources = [str(path) for path in (ans2label_path, label2ans_path) if path]
        return cls(
            name=name, answers=tuple(answers or ()), source="imported from " + ", ".join(sources)
        )


def _load_original(path: Path) -> object:
    from twelve.datasets.parsers._io import load_pickle, require_file

    return load_pickle(require_file(path, "original answer vocabulary pickle"))


def _read_ans2label(path: Path) -> list[str]:
    """The answers of an ``ans2label`` dict ordered by label; labels must be exactly 0..n-1."""
    data = _load_original(path)
    if not isinstance(data, dict):
        raise DataFormatError(path, f"expected a dict answer -> label, found {type(data).__name__}")
    answers: list[str | None] = [None] * len(data)
    for answer, label in data.items():
        if not isinstance(answer, str):
            raise DataFormatError(path, "expected a string answer", location="key", value=answer)
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataFormatError(
                path, "expected an integer label", location=repr(answer), value=label
            )
        if not 0 <= label < len(data):
            raise DataFormatError(
                path, f"label outside 0..{len(data) - 1}", location=repr(answer), value=label
            )
        if answers[label] is not None:
            raise DataFormatError(
                path, f"label also used by {answers[label]!r}", location=repr(answer), value=label
            )
        answers[label] = answer
    return [answer for answer in answers if answer is not None]


def _read_label2ans(path: Path) -> list[str]:
    """The answers of a ``label2ans`` list, in label order."""
    data = _load_original(path)
    if not isinstance(data, list):
        raise DataFormatError(path, f"expected a list of answers, found {type(data).__name__}")
    for label, answer in enumerate(data):
        if not isinstance(answer, str):
            raise DataFormatError(
                path, "expected a string", location=f"label2ans[{label}]", value=answer
            )
    return data


def vocabulary_from_counts(
    keyed_answers: Iterable[tuple[Hashable, str]], *, min_count: int, name: str, source: str
) -> AnswerVocabulary:
    """Keep answers given for at least `min_count` distinct keys; most frequent first, then A-Z."""
    if min_count < 1:
        raise VocabularyError(f"min_count must be at least 1, got {min_count}")
    keys: defaultdict[str, set[Hashable]] = defaultdict(set)
    for key, answer in keyed_answers:
        keys[answer].add(key)
    kept = sorted(
        ((answer, len(ids)) for answer, ids in keys.items() if len(ids) >= min_count),
        key=lambda item: (-item[1], item[0]),
    )
    if not kept:
        raise VocabularyError(
            f"no answer occurs for {min_count} or more questions among {len(keys)} distinct "
            "answers; lower min_count or give more data"
        )
    return AnswerVocabulary(
        name=name,
        answers=tuple(answer for answer, _ in kept),
        counts=tuple(count for _, count in kept),
        source=source,
    )


def build_vqa_vocabulary(
    questions: Iterable[VQAQuestion], *, min_count: int = VQA_MIN_COUNT, name: str = "vqa"
) -> AnswerVocabulary:
    """The VQA answer vocabulary: normalised ``multiple_choice_answer`` for ≥ `min_count` questions.

    Give it train2014 + val2014 to get the 3,129 answers of 12-in-1 (with min_count=9); it
    includes the empty string, as the original did.
    """

    def keyed() -> Iterable[tuple[Hashable, str]]:
        for question in questions:
            if question.multiple_choice_answer is None:
                raise VocabularyError(
                    f"VQA question {question.question_id} has no multiple_choice_answer: build "
                    "the vocabulary from annotated splits (train2014, val2014)"
                )
            yield question.question_id, normalize_answer(question.multiple_choice_answer)

    return vocabulary_from_counts(
        keyed(),
        min_count=min_count,
        name=name,
        source=f"VQA multiple_choice_answer, normalised, min_count={min_count}",
    )


def build_gqa_vocabulary(
    questions: Iterable[GQAQuestion], *, min_count: int = 1, name: str = "gqa"
) -> AnswerVocabulary:
    """A GQA answer vocabulary: the released ``answer`` strings (already lower-case, not normalised).

    The original 1,533-answer list has no published recipe; import it with
    `AnswerVocabulary.from_original` to reuse released heads.
    """

    def keyed() -> Iterable[tuple[Hashable, str]]:
        for question in questions:
            if question.answer is None:
                raise VocabularyError(
                    f"GQA question {question.question_id} has no answer: build the vocabulary "
                    "from train/val"
                )
            yield question.question_id, question.answer

    return vocabulary_from_counts(
        keyed(), min_count=min_count, name=name, source=f"GQA answer, min_count={min_count}"
    )


def build_vg_qa_vocabulary(
    pairs: Iterable[VGQAPair], *, min_count: int = VQA_MIN_COUNT, name: str = "vg_qa"
) -> AnswerVocabulary:
    """A Visual Genome QA vocabulary of VQA-normalised answers (12-in-1 itself reused VQA's)."""

    def keyed() -> Iterable[tuple[Hashable, str]]:
        for pair in pairs:
            if pair.answer is None:
                raise VocabularyError(f"VG QA pair {pair.qa_id} has no answer text")
            yield pair.qa_id, normalize_answer(pair.answer)

    return vocabulary_from_counts(
        keyed(),
        min_count=min_count,
        name=name,
        source=f"Visual Genome QA answer, normalised, min_count={min_count}",
    )
