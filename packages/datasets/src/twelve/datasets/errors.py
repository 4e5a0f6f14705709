"""Errors raised while reading dataset files, each naming what was wrong and where.

Every error is a `DatasetError`; the CLI catches that one class, prints the message and exits
non-zero. Messages name the file, the line or record, the field and the offending value, so a
user can open the file at the right place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_MAX_VALUE_CHARS = 80


def _shorten(value: object) -> str:
    """`repr(value)` cut to a readable length, so a huge JSON object does not flood the terminal."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


class DatasetError(Exception):
    """Base class of every error about dataset files, so callers can catch them together."""


class DataFormatError(DatasetError, ValueError):
    """A file exists but its content does not match the documented format.

    `location` says where in the file: ``"line 17"`` for JSON-lines and TSV files, a record path
    such as ``"questions[3]"`` or ``"refs[12].sentences[0]"`` for JSON documents and pickles.
    """

    _NO_VALUE = object()

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        location: str | None = None,
        field: str | None = None,
        value: object = _NO_VALUE,
    ) -> None:
        self.path = Path(path)
        self.problem = problem
        self.location = location
        self.field = field
        self.value = None if value is self._NO_VALUE else value
        parts = [str(self.path)]
        if location is not None:
            parts.append(location)
        if field is not None:
            parts.append(f"field {field!r}")
        message = ": ".join(parts) + f": {problem}"
        if value is not self._NO_VALUE:
            message += f" (got {_shorten(value)})"
        super().__init__(message)


class MissingDataError(DatasetError, FileNotFoundError):
    """A file the requested task/split needs is not where the official release puts it."""

    def __init__(self, paths: Sequence[str | Path], what: str, hint: str | None = None) -> None:
        self.paths = tuple(Path(path) for path in paths)
        self.what = what
        listed = " or ".join(str(path) for path in self.paths)
        message = f"{what}: expected {listed}, which does not exist"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class EmptySplitError(DatasetError):
    """A split was read successfully but holds no example, which is almost always a wrong file."""

    def __init__(self, task: str, split: str, source: str | Path) -> None:
        self.task = task
        self.split = split
        self.source = source
        super().__init__(
            f"{task}: split {split!r} has no examples in {source}; check that the file is the "
            "complete official release and that the split name is right"
        )


class UnknownTaskError(DatasetError, KeyError):
    """A task name that no parser knows; the message lists the known names."""

    def __init__(self, task: str, known: Sequence[str]) -> None:
        self.task = task
        super().__init__(f"unknown task {task!r}; known tasks: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class UnknownSplitError(DatasetError, ValueError):
    """A split name the dataset does not have; the message lists the dataset's own names."""

    def __init__(self, task: str, split: str, known: Sequence[str]) -> None:
        self.task = task
        self.split = split
        super().__init__(f"{task}: unknown split {split!r}; known splits: {', '.join(known)}")


class VocabularyError(DatasetError, ValueError):
    """An answer vocabulary cannot be built from the given examples (no answers, none frequent)."""
