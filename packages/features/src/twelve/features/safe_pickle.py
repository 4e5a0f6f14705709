"""A restricted unpickler for the original project's pickled files, which users must opt in to read.

Pickle can run arbitrary code, so the original vilbert-multi-task files (LMDB records, REFER
`refs(unc).p`, `ans2label` vocabularies) are only ever read through this loader: it builds
builtin containers and scalars, plus numpy arrays when asked, and refuses every other global.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path

# Globals that only construct data, by their Python 3 names (Python 2 names are mapped first).
_BUILTIN_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell `bytes`
    }
)
_NUMPY_GLOBALS = frozenset(
    {
        (f"{package}.{module}", name)
        for package in ("numpy.core", "numpy._core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),  # protocol 5
        )
    }
    | {("numpy", "ndarray"), ("numpy", "dtype")}
)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Map a Python 2 global (as written by cPickle or protocol < 3) to its Python 3 name."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowlist (it could run code), so reading stopped."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, *, allow_numpy: bool, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = _BUILTIN_GLOBALS | (_NUMPY_GLOBALS if allow_numpy else frozenset())
        self._source = source

    def find_class(self, module: str, name: str) -> object:
        module, name = _python3_name(module, name)
        if (module, name) not in self._allowed:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle global {module}.{name}; only builtin "
                "containers/scalars"
                + (" and numpy arrays" if self._allowed >= _NUMPY_GLOBALS else "")
                + " are allowed"
            )
        if module.startswith("numpy"):
            import importlib

            import numpy as np

            if module.startswith("numpy.core") and hasattr(np, "_core"):
                module = "numpy._core" + module.removeprefix("numpy.core")  # numpy 2 renamed it
            return getattr(importlib.import_module(module), name)
        return super().find_class(module, name)  # base class resolves the allowed builtin


def restricted_loads(data: bytes, *, allow_numpy: bool, source: str = "<bytes>") -> object:
    """Unpickle `data` admitting only builtin data (and numpy arrays if `allow_numpy`)."""
    return _RestrictedUnpickler(io.BytesIO(data), allow_numpy=allow_numpy, source=source).load()


def restricted_load(path: str | Path, *, allow_numpy: bool) -> object:
    """Unpickle the file at `path` with `restricted_loads`; errors name the file."""
    path = Path(path)
    with path.open("rb") as file:
        return _RestrictedUnpickler(file, allow_numpy=allow_numpy, source=str(path)).load()
