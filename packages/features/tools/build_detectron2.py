#!/usr/bin/env python3
"""Build a pure-Python detectron2 wheel from PyPI's `pb1-detectron2==0.6` sdist, offline-friendly.

detectron2 is not on PyPI and its git repository may be out of reach. `pb1-detectron2==0.6` is
a re-upload of upstream v0.6's Python tree whose sdist lacks the C++ sources, so it does not
build as shipped. This script (standard library only) downloads that sdist from PyPI, checks its
sha256, applies our edits (listed in `EDITS` below, each checked to apply exactly once), and
writes a `py3-none-any` wheel named `detectron2` straight from the files: no setup.py, no
compiler, no torch at build time, a few seconds. The wheel is reproducible: sorted entries,
fixed timestamps (`SOURCE_DATE_EPOCH`, default the v0.6 release day) and fixed permissions, so
rebuilding gives the same bytes on the same zlib.

What the wheel lacks is `detectron2._C`: deformable convolution, rotated boxes, ROIAlignRotated
and the fast COCO evaluator raise a clear error; the Faster R-CNN path (NMS and ROIAlign come
from torchvision) works. With internet you may install upstream detectron2 instead.

    python3 packages/features/tools/build_detectron2.py      # build into .cache/detectron2
    uv run python packages/features/tools/build_detectron2.py --install
                            # build, then `uv pip install --no-deps` into this interpreter's env

Install detectron2's runtime dependencies first, from the lock: in the twelve workspace
`uv sync --all-packages --all-extras` (twelve-features' `detectron2` extra; elsewhere
`pip install 'twelve-features[detectron2]'`); the wheel itself goes in with `--no-deps`. A
later plain `uv sync` (exact) removes the wheel again, `uv run` (inexact) keeps it; rerunning
this script reuses the cached wheel and takes a second.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILENAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PYPI_JSON = "https://pypi.org/pypi/{name}/json"

# Bump RECIPE when an edit changes: it is the wheel's local version, so a rebuilt wheel with
# different contents never hides behind the same file name.
RECIPE = 1
WHEEL_VERSION = f"{SDIST_VERSION}+twelve.{RECIPE}"
WHEEL_NAME = f"detectron2-{WHEEL_VERSION}-py3-none-any.whl"
DEFAULT_EPOCH = 1637020800  # 2021-11-16, the day upstream v0.6 was released

# What detectron2 imports when it builds and runs a Faster R-CNN (measured: sys.modules after a
# forward pass). Upstream also lists matplotlib (its Visualizer), hydra-core (lazy configs),
# black (a formatter pinned to a 2021 beta), future/pydot (caffe2 export) and tensorboard
# (training logs); none is needed to extract features. Keep in sync with the `detectron2` extra
# of packages/features/pyproject.toml, which is what actually installs them (locked).
REQUIRES = (
    "cloudpickle",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "Pillow>=7.1",
    "pycocotools>=2.0.2",
    "tabulate",
    "termcolor>=1.1",
    "tqdm>4.29.0",
    "yacs>=0.1.8",
)

# Projects upstream installs under detectron2.projects (setup.py's package_dir).
PROJECTS = {
    "projects/PointRend/point_rend": "detectron2/projects/point_rend",
    "projects/DeepLab/deeplab": "detectron2/projects/deeplab",
    "projects/Panoptic-DeepLab/panoptic_deeplab": "detectron2/projects/panoptic_deeplab",
}

_GUARDED_C_IMPORT = (
    "try:\n"
    "    from detectron2 import _C\n"
    "except ImportError:  # twelve: pure-Python build, no C++ extension\n"
    "    from detectron2._c_missing import MISSING_C as _C\n"
)

# Written into the wheel: what `_C` is when the extension was not built.
C_MISSING_MODULE = '''\
"""Stand-in for detectron2._C in a pure-Python build (written by twelve's build_detectron2.py)."""


class _MissingExtension:
    """Raises a clear error when code reaches for an operator of the missing C++ extension."""

    def __getattr__(self, name):
        raise ImportError(
            f"detectron2._C.{name} is unavailable: this detectron2 was built without its C++ "
            "extension (deformable conv, rotated boxes, ROIAlignRotated, fast COCO eval). "
            "Install upstream detectron2 to use it."
        )


MISSING_C = _MissingExtension()
'''


@dataclass(frozen=True)
class Edit:
    """One exact text substitution in one file of the sdist, with the reason it is needed."""

    path: str
    old: str
    new: str
    why: str
    regex: bool = False


EDITS = (
    Edit(
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        "Pillow >= 10 removed Image.LINEAR, used as a default argument at import time",
    ),
    Edit(
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "",
        "setuptools >= 81 removed pkg_resources",
    ),
    Edit(
        "detectron2/model_zoo/model_zoo.py",
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", '
        'os.path.join("configs", config_path)\n    )',
        'cfg_file = os.path.join(os.path.dirname(__file__), "configs", config_path)',
        "model-zoo configs are package data next to this module",
    ),
    *(
        Edit(path, "from detectron2 import _C\n", _GUARDED_C_IMPORT, "no C++ extension")
        for path in (
            "detectron2/layers/deform_conv.py",
            "detectron2/layers/rotated_boxes.py",
            "detectron2/layers/roi_align_rotated.py",
            "detectron2/evaluation/fast_eval_api.py",
        )
    ),
    Edit(
        "detectron2/evaluation/coco_evaluation.py",
        "        self._use_fast_impl = use_fast_impl\n",
        "        from detectron2.evaluation.fast_eval_api import _C as _fast_eval_c\n\n"
        "        # twelve: fall back to pycocotools' COCOeval without the C++ extension\n"
        "        self._use_fast_impl = use_fast_impl and hasattr(_fast_eval_c, "
        '"COCOevalEvaluateImages")\n',
        "use pycocotools' COCOeval when the fast C++ evaluator is missing",
    ),
    Edit(
        "detectron2/evaluation/coco_evaluation.py",
        "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)",
        "    from detectron2.evaluation.fast_eval_api import _C as _fast_eval_c\n\n"
        '    use_fast_impl = use_fast_impl and hasattr(_fast_eval_c, "COCOevalEvaluateImages")\n'
        "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)",
        "use pycocotools' COCOeval when the fast C++ evaluator is missing",
    ),
)

# numpy >= 1.24 removed these aliases of builtins; applied to every .py file.
_NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|object|str)\b(?![_\d])")


def _log(message: str) -> None:
    print(f"build_detectron2: {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist_url(index_json: str = PYPI_JSON) -> str:
    """Ask PyPI's JSON API where the pinned sdist lives (the checksum is checked after)."""
    url = index_json.format(name=SDIST_NAME)
    with urllib.request.urlopen(url, timeout=60) as response:
        project = json.load(response)
    for entry in project["releases"].get(SDIST_VERSION, []):
        if entry["filename"] == SDIST_FILENAME:
            return str(entry["url"])
    raise SystemExit(f"build_detectron2: {url} lists no {SDIST_FILENAME}")


def fetch_sdist(cache: Path, sdist: Path | None) -> Path:
    """Return a verified copy of the sdist: the given file, the cached one, or a fresh download."""
    target = sdist if sdist is not None else cache / SDIST_FILENAME
    if not target.exists():
        if sdist is not None:
            raise SystemExit(f"build_detectron2: --sdist {sdist} does not exist")
        cache.mkdir(parents=True, exist_ok=True)
        url = sdist_url()
        _log(f"downloading {url}")
        partial = target.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
        partial.replace(target)
    actual = _sha256(target)
    if actual != SDIST_SHA256:
        raise SystemExit(
            f"build_detectron2: {target} has sha256 {actual}, expected {SDIST_SHA256}; "
            "delete it and run again (or pass the genuine sdist with --sdist)"
        )
    return target


def _read_sdist(sdist: Path) -> dict[str, bytes]:
    """Map each regular file of the sdist to its bytes, by path below the top folder."""
    files: dict[str, bytes] = {}
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            _, _, relative = member.name.partition("/")
            extracted = archive.extractfile(member)
            assert extracted is not None
            files[relative] = extracted.read()
    return files


def _apply_edits(files: dict[str, bytes]) -> dict[str, bytes]:
    """Apply every edit exactly once (failing loudly otherwise) and the numpy alias rewrite."""
    out = dict(files)
    for edit in EDITS:
        text = out[edit.path].decode()
        count = text.count(edit.old)
        if count != 1:
            raise SystemExit(
                f"build_detectron2: edit for {edit.path} ({edit.why}) matched {count} times"
            )
        out[edit.path] = text.replace(edit.old, edit.new).encode()
    for path, data in out.items():
        if path.endswith(".py"):
            out[path] = _NUMPY_ALIAS.sub(r"\1", data.decode()).encode()
    return out


def package_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """Select what upstream installs: the detectron2 tree, its zoo configs and three projects."""
    selected: dict[str, bytes] = {}
    for path, data in files.items():
        if path.startswith("detectron2/") and not path.endswith((".pyc", ".so")):
            selected[path] = data
        for source, destination in PROJECTS.items():
            if path.startswith(source + "/"):
                selected[destination + path[len(source) :]] = data
    selected["detectron2/_c_missing.py"] = C_MISSING_MODULE.encode()
    if not any(p.startswith("detectron2/model_zoo/configs/") for p in selected):
        raise SystemExit("build_detectron2: the sdist has no detectron2/model_zoo/configs")
    return selected


def _metadata() -> str:
    lines = [
        "Metadata-Version: 2.1",
        "Name: detectron2",
        f"Version: {WHEEL_VERSION}",
        "Summary: detectron2 v0.6 (pure Python, no C++ extension), built by twelve from "
        f"{SDIST_NAME}=={SDIST_VERSION}",
        "Home-page: https://github.com/facebookresearch/detectron2",
        "Author: FAIR",
        "License: Apache-2.0",
        "Requires-Python: >=3.8",
        *(f"Requires-Dist: {requirement}" for requirement in REQUIRES),
        "",
        "Built without the C++ extension; see twelve's packages/features/tools/build_detectron2.py.",
    ]
    return "\n".join(lines) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(files: dict[str, bytes], license_text: bytes, out_dir: Path, epoch: int) -> Path:
    """Write the wheel reproducibly (sorted entries, fixed times and modes) under a temp name."""
    dist_info = f"detectron2-{WHEEL_VERSION}.dist-info"
    entries = dict(sorted(files.items()))
    entries[f"{dist_info}/LICENSE"] = license_text
    entries[f"{dist_info}/METADATA"] = _metadata().encode()
    entries[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: twelve build_detectron2\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entries[f"{dist_info}/top_level.txt"] = b"detectron2\n"
    record = [_record_line(path, data) for path, data in entries.items()]
    record.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

    date_time = time.gmtime(max(epoch, 315532800))[:6]  # zip cannot store dates before 1980
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / WHEEL_NAME
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".part", delete=False) as handle:
        partial = Path(handle.name)
    try:
        with zipfile.ZipFile(partial, "w") as wheel:
            for path, data in entries.items():
                info = zipfile.ZipInfo(path, date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3  # unix, so the mode above is honoured everywhere
                wheel.writestr(info, data, compresslevel=9)
        partial.chmod(0o644)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def build(out_dir: Path, cache: Path, sdist: Path | None, epoch: int) -> Path:
    """Fetch, edit and package: return the path of the built wheel."""
    source = fetch_sdist(cache, sdist)
    files = _apply_edits(_read_sdist(source))
    return write_wheel(package_files(files), files["LICENSE"], out_dir, epoch)


def install(wheel: Path, python: str) -> None:
    """Install the wheel with `uv pip install --no-deps` (its dependencies come from the lock)."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("build_detectron2: --install needs `uv` on PATH")
    command = [uv, "pip", "install", "--no-deps", "--reinstall-package", "detectron2"]
    subprocess.run([*command, "--python", python, str(wheel)], check=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    repo = Path(__file__).resolve().parents[3]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=repo / ".cache" / "detectron2")
    parser.add_argument("--sdist", type=Path, default=None, help="use this sdist, no download")
    parser.add_argument("--install", action="store_true", help="uv pip install --no-deps it")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter to --install into (default: this one)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild an existing wheel")
    args = parser.parse_args(argv)

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    wheel = args.out / WHEEL_NAME
    if args.force or not wheel.exists():
        started = time.perf_counter()
        wheel = build(args.out, args.out, args.sdist, epoch)
        _log(f"built {wheel} in {time.perf_counter() - started:.1f} s")
    else:
        _log(f"reusing {wheel} (--force rebuilds)")
    _log(f"sha256 {_sha256(wheel)}")
    if args.install:
        install(wheel, args.python)
    print(wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
