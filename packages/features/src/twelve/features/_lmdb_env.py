"""Read-only LMDB environments shared within a process.

LMDB allows one open environment per file per process (py-lmdb refuses a second open), yet
several readers may want the same store (tasks sharing the COCO features, `FeatureStore.open`
called twice). Readers therefore borrow environments from this per-process table: opened on
first use, reference-counted, and forgotten in a forked child, which opens its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import lmdb

_MAX_DBS: Final = 2


def _file_identity(path: Path) -> tuple[int, int]:
    data_file = path / "data.mdb" if path.is_dir() else path
    stat = data_file.stat()
    return stat.st_dev, stat.st_ino


class SharedEnvironments:
    """Per-process table of read-only environments (no locks, no read-ahead), keyed by file."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], tuple[lmdb.Environment, int]] = {}

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():
            # The parent's handles must not be used (or closed) here; start afresh.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._open = {}

    def acquire(self, path: Path) -> lmdb.Environment:
        """Open (or share) the environment at `path`; pair every call with `release`."""
        self._reset_after_fork()
        identity = _file_identity(path)
        with self._lock:
            env, count = self._open.get(identity, (None, 0))
            if env is None:
                env = lmdb.open(
                    str(path),
                    readonly=True,
                    lock=False,
                    readahead=False,
                    meminit=False,
                    max_dbs=_MAX_DBS,
                    subdir=path.is_dir(),
                )
            self._open[identity] = (env, count + 1)
            return env

    def is_open(self, path: Path) -> bool:
        """True when this process holds the environment at `path` open for reading."""
        self._reset_after_fork()
        try:
            identity = _file_identity(path)
        except OSError:
            return False
        with self._lock:
            return identity in self._open

    def release(self, env: lmdb.Environment) -> None:
        """Give back an environment from `acquire`; the last release closes it."""
        self._reset_after_fork()
        with self._lock:
            for identity, (held, count) in self._open.items():
                if held is env:
                    if count == 1:
                        del self._open[identity]
                        env.close()
                    else:
                        self._open[identity] = (held, count - 1)
                    return

    @contextmanager
    def borrowed(self, path: Path) -> Iterator[lmdb.Environment]:
        """The environment at `path` for the duration of a `with` block."""
        env = self.acquire(path)
        try:
            yield env
        finally:
            self.release(env)


ENVIRONMENTS: Final = SharedEnvironments()
