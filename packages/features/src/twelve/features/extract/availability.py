"""Whether detectron2 can be imported, and the one error that tells users how to install it."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "detectron2 is not installed. It is not on PyPI; without internet access build it from "
    "PyPI's pb1-detectron2 sdist (seconds, no compiler): in the twelve workspace run "
    "`uv sync --all-packages --all-extras` (its dependencies, the locked "
    "twelve-features[detectron2] extra), then "
    "`uv run python packages/features/tools/build_detectron2.py --install`. With internet you "
    "may instead `pip install 'git+https://github.com/facebookresearch/detectron2.git'`. "
    "A plain `uv sync` removes detectron2 again (`uv run` keeps it)."
)


class Detectron2MissingError(ImportError):
    """Extraction needs detectron2 and it is not installed (reading stores never does)."""


def detectron2_available() -> bool:
    """True when `import detectron2` would find a package (nothing is imported)."""
    return importlib.util.find_spec("detectron2") is not None


def require_detectron2() -> None:
    """Raise `Detectron2MissingError` with install instructions when detectron2 is missing."""
    if not detectron2_available():
        raise Detectron2MissingError(INSTALL_HINT)
