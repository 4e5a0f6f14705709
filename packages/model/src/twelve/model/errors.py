"""Error types of twelve.model; each message names the file, key or value that was wrong."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of the errors twelve.model raises on bad input."""


class ConfigError(ModelError, ValueError):
    """A model config (twelve or original JSON) is unreadable or invalid."""


class CheckpointError(ModelError, ValueError):
    """A checkpoint does not fit the model: missing, unexpected or wrongly shaped tensors."""


class UnknownTaskError(ModelError, KeyError):
    """A model was asked for a task its config does not define."""

    def __init__(self, task: str, known: list[str]) -> None:
        super().__init__(task)
        self.task = task
        self.known = known

    def __str__(self) -> str:
        return f"unknown task {self.task!r}; this model knows {self.known}"
