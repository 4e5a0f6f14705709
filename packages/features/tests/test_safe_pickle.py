"""The restricted unpickler: builtin data and (when allowed) numpy arrays load; code does not."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from twelve.features.safe_pickle import UnsafePickleError, restricted_load, restricted_loads

DATA = {
    "list": [1, 2.5, None, True],
    "tuple": ("a", b"bytes"),
    "set": {1, 2},
    "frozenset": frozenset({"x"}),
    "nested": {"k": [{"deep": complex(1, 2)}]},
    "bytearray": bytearray(b"ab"),
    "ordered": collections.OrderedDict(a=1),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_builtin_data_round_trips_at_every_protocol(protocol: int) -> None:
    assert restricted_loads(pickle.dumps(DATA, protocol=protocol), allow_numpy=False) == DATA


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_need_allow_numpy(protocol: int) -> None:
    value = {"features": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.int64(3)}
    data = pickle.dumps(value, protocol=protocol)
    with pytest.raises(UnsafePickleError, match=r"numpy.*only builtin"):
        restricted_loads(data, allow_numpy=False)
    loaded = restricted_loads(data, allow_numpy=True)
    assert isinstance(loaded, dict)
    np.testing.assert_array_equal(loaded["features"], value["features"])
    assert loaded["features"].dtype == np.float32
    assert loaded["n"] == 3


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_code_execution_is_refused_even_with_numpy(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"x": _RunsCode(marker)})
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        restricted_loads(data, allow_numpy=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    "global_name", [b"builtins\neval", b"builtins\ngetattr", b"__builtin__\nopen"]
)
def test_dangerous_builtins_are_refused(global_name: bytes) -> None:
    data = b"c" + global_name + b"\n(S'1'\ntR."
    with pytest.raises(UnsafePickleError, match="refusing"):
        restricted_loads(data, allow_numpy=True)


def test_python2_names_are_mapped() -> None:
    # Protocol 2 with fix_imports writes Python 2 names (__builtin__.set), as cPickle did.
    data = pickle.dumps({1, 2, 3}, protocol=2, fix_imports=True)
    assert b"__builtin__" in data
    assert restricted_loads(data, allow_numpy=False) == {1, 2, 3}


def test_restricted_load_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.p"
    good.write_bytes(pickle.dumps({"a": [1]}))
    assert restricted_load(good, allow_numpy=False) == {"a": [1]}
    bad = tmp_path / "bad.p"
    bad.write_bytes(pickle.dumps(np.zeros(2)))
    with pytest.raises(UnsafePickleError, match=str(bad)):
        restricted_load(bad, allow_numpy=False)


def test_unsafe_pickle_error_is_an_unpickling_error() -> None:
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)
