"""The detectron2 wheel builder: reproducible wheels, valid RECORDs, edits that apply and compile.

The full build runs only when the pinned sdist is already cached (CI builds it before the
tests); nothing here downloads.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "packages" / "features" / "tools" / "build_detectron2.py"
CACHED_SDIST = ROOT / ".cache" / "detectron2" / "pb1-detectron2-0.6.tar.gz"


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_detectron2", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _check_record(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for line in archive.read(record_name).decode().splitlines():
            path, digest, size = line.split(",")
            if path == record_name:
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={expected.decode()}", path
            assert int(size) == len(data), path
    return names


def test_wheels_are_byte_identical_and_sorted(builder: ModuleType, tmp_path: Path) -> None:
    files = {
        "detectron2/__init__.py": b"__version__ = '0.6'\n",
        "detectron2/model_zoo/configs/Base.yaml": b"MODEL: {}\n",
        "detectron2/layers/a.py": b"x = 1\n",
    }
    first = builder.write_wheel(files, b"license", tmp_path / "one", 1637020800)
    second = builder.write_wheel(
        dict(reversed(files.items())), b"license", tmp_path / "two", 1637020800
    )
    assert first.name == builder.WHEEL_NAME
    assert first.read_bytes() == second.read_bytes()
    names = _check_record(first)
    package_files = [n for n in names if n.startswith("detectron2/")]
    assert package_files == sorted(package_files)
    with zipfile.ZipFile(first) as archive:
        assert b"Tag: py3-none-any" in archive.read(
            f"detectron2-{builder.WHEEL_VERSION}.dist-info/WHEEL"
        )
        metadata = archive.read(f"detectron2-{builder.WHEEL_VERSION}.dist-info/METADATA").decode()
    assert "Name: detectron2" in metadata
    assert "black" not in metadata


def test_numpy_alias_rewrite_leaves_real_dtypes_alone(builder: ModuleType) -> None:
    source = (
        "a = np.float(x); b = np.float32; c = np.bool_; d = np.int; e = np.int64; f = np.object\n"
    )
    assert builder._NUMPY_ALIAS.sub(r"\1", source) == (
        "a = float(x); b = np.float32; c = np.bool_; d = int; e = np.int64; f = object\n"
    )


@pytest.mark.skipif(not CACHED_SDIST.exists(), reason="pinned sdist not cached (CI caches it)")
def test_full_build_from_the_cached_sdist(builder: ModuleType, tmp_path: Path) -> None:
    wheel = builder.build(tmp_path, tmp_path, CACHED_SDIST, builder.DEFAULT_EPOCH)
    names = _check_record(wheel)
    assert any(n.startswith("detectron2/model_zoo/configs/COCO-Detection/") for n in names)
    assert "detectron2/projects/point_rend/__init__.py" in names
    with zipfile.ZipFile(wheel) as archive:
        sources = {n: archive.read(n).decode() for n in names if n.endswith(".py")}
    for name, text in sources.items():
        compile(text, name, "exec")  # every edited file is still valid Python
    assert "Image.LINEAR" not in sources["detectron2/data/transforms/transform.py"]
    assert "pkg_resources" not in sources["detectron2/model_zoo/model_zoo.py"]
    assert "_c_missing" in sources["detectron2/layers/deform_conv.py"]
    assert not any("np.float(" in text or "np.bool)" in text for text in sources.values())
