"""Reading helpers shared by the parsers: files, JSON, JSON-lines, pickles and typed field access.

Everything here turns a low-level failure (bad JSON, wrong type, missing field, unsafe pickle)
into a `DataFormatError` or `MissingDataError` that names the file, the line or record and the
field, so each parser only states what it expects.
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from twelve.datasets.errors import DataFormatError, MissingDataError, UnknownSplitError

Layout = Literal["official", "original"]
"""Where the files come from: the dataset's own release, or the original 12-in-1 repository's
preprocessed files (reference/dataset-formats.md §13)."""

_GZIP_MAGIC = b"\x1f\x8b"
_MISSING = object()
ModelT = TypeVar("ModelT", bound=BaseModel)


def require_file(path: Path, what: str, hint: str | None = None) -> Path:
    """Return `path` if it is a file, else raise `MissingDataError` describing what it should be."""
    if not path.is_file():
        raise MissingDataError([path], what, hint)
    return path


def _open_text(path: Path) -> Any:
    """Open a text file, transparently decompressing gzip (detected by content, not by name)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def load_json(path: Path) -> Any:
    """Parse a whole JSON document; a syntax error names the file, line and column."""
    try:
        with _open_text(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            path,
            f"not valid JSON: {error.msg} (column {error.colno})"
            + (" — is this a JSON-lines file?" if error.msg == "Extra data" else ""),
            location=f"line {error.lineno}",
        ) from error
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise DataFormatError(path, f"cannot be read as UTF-8 JSON: {error}") from error


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of a JSON-lines file (gzip or not)."""
    line_number = 0
    try:
        with _open_text(path) as file:
            for line_number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    yield line_number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataFormatError(
                        path,
                        f"not a valid JSON line: {error.msg} (column {error.colno})",
                        location=f"line {line_number}",
                    ) from error
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise DataFormatError(
            path, f"cannot be read as UTF-8 text: {error}", location=f"line {line_number + 1}"
        ) from error


def python2_text(text: str) -> str:
    """Undo the latin-1 decoding of a Python 2 byte string that held UTF-8 text.

    The restricted unpickler decodes Python 2 ``str`` values as latin-1, so UTF-8 bytes come out
    as mojibake (``"cafÃ©"``); re-encoding and decoding as UTF-8 restores them. Text that is not
    such mojibake (ASCII, or real latin-1 text from a Python 2 ``unicode``) is returned unchanged.
    """
    if text.isascii() or max(text) > "\xff":
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return text


def _repair_text(value: Any) -> Any:
    """Apply `python2_text` to every string inside lists, tuples and dicts (keys included)."""
    if isinstance(value, str):
        return python2_text(value)
    if isinstance(value, list):
        return [_repair_text(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_repair_text(item) for item in value)
    if isinstance(value, dict):
        return {_repair_text(key): _repair_text(item) for key, item in value.items()}
    return value


def load_pickle(path: Path, *, allow_numpy: bool = False) -> Any:
    """Read one of the original project's pickles through the restricted unpickler.

    Only builtin containers and scalars are admitted (and numpy arrays if `allow_numpy`).
    Strings are returned as Python 3 text, with Python 2 UTF-8 byte strings decoded as UTF-8.
    """
    from twelve.features.safe_pickle import restricted_load

    try:
        data = restricted_load(path, allow_numpy=allow_numpy)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        kind = "builtins-and-numpy" if allow_numpy else "builtins-only"
        raise DataFormatError(path, f"cannot be read as a {kind} pickle: {error}") from error
    return _repair_text(data)


def build(model: type[ModelT], path: Path, location: str, **fields: Any) -> ModelT:
    """Construct a record, turning a validation failure into a `DataFormatError` at `location`."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise DataFormatError(
            path, first["msg"], location=location, field=field, value=first.get("input")
        ) from error


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Fields:
    """Typed access to the fields of one JSON object (or pickled dict) found at `location`.

    Each getter checks the field's presence and type and raises a `DataFormatError` naming the
    file, the record, the field and the value it found.
    """

    __slots__ = ("data", "location", "path")

    def __init__(self, data: object, path: Path, location: str) -> None:
        if not isinstance(data, dict) and not isinstance(data, Mapping):
            raise DataFormatError(
                path, f"expected an object, found {_type_name(data)}", location=location, value=data
            )
        self.data: Mapping[str, Any] = data
        self.path = path
        self.location = location

    def error(self, field: str, problem: str, value: object = _MISSING) -> DataFormatError:
        """An error about `field` of this record."""
        if value is _MISSING:
            return DataFormatError(self.path, problem, location=self.location, field=field)
        return DataFormatError(self.path, problem, location=self.location, field=field, value=value)

    def has(self, field: str) -> bool:
        """Whether the field is present and not null."""
        return self.data.get(field) is not None

    def raw(self, field: str) -> Any:
        """The field's value as it is; a missing field is an error."""
        try:
            return self.data[field]
        except KeyError:
            present = ", ".join(sorted(map(str, self.data))[:12])
            raise self.error(field, f"missing (fields present: {present})") from None

    def first_present(self, *fields: str) -> str:
        """The first of `fields` present in the record (for files whose versions renamed a field)."""
        for field in fields:
            if field in self.data:
                return field
        raise self.error(" or ".join(fields), "missing")

    def int(self, field: str) -> int:
        """An integer field (a bool is not an integer; an integral float such as 3.0 is)."""
        value = self.raw(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise self.error(field, f"expected an integer, found {_type_name(value)}", value)

    def int_like(self, field: str) -> int:
        """An integer field that some releases store as a decimal string (``"42"``)."""
        value = self.raw(field)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return self.int(field)

    def str(self, field: str) -> str:
        """A string field."""
        value = self.raw(field)
        if isinstance(value, bytes):  # a Python 2 `str` read from a pickle without decoding
            return value.decode("utf-8", errors="replace")
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, found {_type_name(value)}", value)
        return value

    def optional_str(self, field: str) -> str | None:
        """A string field that may be absent or null."""
        return self.str(field) if self.has(field) else None

    def optional_int(self, field: str) -> int | None:
        """An integer field that may be absent or null."""
        return self.int(field) if self.has(field) else None

    def number(self, field: str) -> float:
        """A numeric field (int or float; not bool)."""
        value = self.raw(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise self.error(field, f"expected a number, found {_type_name(value)}", value)

    def bool(self, field: str) -> bool:
        """A JSON boolean field."""
        value = self.raw(field)
        if not isinstance(value, bool):
            raise self.error(field, f"expected true or false, found {_type_name(value)}", value)
        return value

    def list(self, field: str) -> list[Any]:
        """A list field (JSON array, or a tuple from a pickle)."""
        value = self.raw(field)
        if not isinstance(value, list | tuple):
            raise self.error(field, f"expected a list, found {_type_name(value)}", value)
        return list(value)

    def int_list(self, field: str) -> list[int]:
        """A list of integers."""
        values = self.list(field)
        for index, value in enumerate(values):
            if not isinstance(value, int) or isinstance(value, bool):
                raise self.error(
                    f"{field}[{index}]", f"expected an integer, found {_type_name(value)}", value
                )
        return values

    def number_list(self, field: str) -> list[float]:
        """A list of numbers."""
        values = self.list(field)
        for index, value in enumerate(values):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise self.error(
                    f"{field}[{index}]", f"expected a number, found {_type_name(value)}", value
                )
        return [float(value) for value in values]

    def xywh(self, field: str) -> tuple[float, float, float, float]:
        """A ``[x, y, w, h]`` box field (COCO style): four numbers."""
        values = self.number_list(field)
        if len(values) != 4:
            raise self.error(field, f"expected 4 numbers [x, y, w, h], found {len(values)}", values)
        return values[0], values[1], values[2], values[3]

    def strings_in(self, field: str, key: str) -> tuple[str, ...]:
        """The string `key` of every object in a list field (fast path for long answer lists)."""
        values = []
        for index, item in enumerate(self.list(field)):
            value = item.get(key) if isinstance(item, dict) else None
            if not isinstance(value, str):
                Fields(item, self.path, f"{self.location}.{field}[{index}]").str(key)
            values.append(value)
        return tuple(values)

    def object(self, field: str) -> Fields:
        """A nested object field, with a location that extends this one."""
        return Fields(self.raw(field), self.path, f"{self.location}.{field}")

    def items(self, field: str) -> Iterator[Fields]:
        """The elements of a list-of-objects field, each with its own location."""
        for index, item in enumerate(self.list(field)):
            yield Fields(item, self.path, f"{self.location}.{field}[{index}]")


def choose_layout(
    task: str,
    split: str,
    layout: Layout | None,
    *,
    official: Sequence[Path] | None,
    original: Sequence[Path] | None,
    known_splits: Sequence[str],
) -> Layout:
    """Decide which layout serves `split`: the requested one, or the first whose files all exist.

    `official`/`original` list the files each layout needs for this split (None: the layout has
    no such split). Official files win when both are present.
    """
    candidates: dict[Layout, Sequence[Path] | None] = {"official": official, "original": original}
    if layout is not None:
        needed = candidates[layout]
        if needed is None:
            available = [name for name, paths in candidates.items() if paths is not None]
            raise UnknownSplitError(
                task, split, [f"{s} (layout {', '.join(available)})" for s in known_splits]
            )
        missing = [path for path in needed if not path.is_file()]
        if missing:
            raise MissingDataError(missing, f"{task} {split} ({layout} layout)")
        return layout
    for name in ("official", "original"):
        needed = candidates[name]
        if needed is not None and all(path.is_file() for path in needed):
            return name
    first: Layout = "official" if official is not None else "original"
    other: Layout = "original" if first == "official" else "official"
    missing = [path for path in candidates[first] or () if not path.is_file()]
    hint = None
    if candidates[other] is not None and set(candidates[other] or ()) != set(
        candidates[first] or ()
    ):
        listed = ", ".join(str(path) for path in candidates[other] or ())
        hint = f"the original repository's files ({listed}) were not found either"
    raise MissingDataError(missing, f"{task} {split}", hint)
