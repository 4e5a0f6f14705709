"""Fixtures of twelve-datasets tests: the official-format file writers of `official_files.py`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_MODULE_NAME = "twelve_datasets_tests_official_files"


def _load_official_files() -> ModuleType:
    """Import `official_files.py` by path (tests run with --import-mode=importlib)."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    spec = importlib.util.spec_from_file_location(
        _MODULE_NAME, Path(__file__).with_name("official_files.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def official_files() -> ModuleType:
    """The module that writes small dataset files in their official formats."""
    return _load_official_files()
