"""Workspace contracts: one `twelve` command gathering every package, and one-way dependencies."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"

# import name -> workspace packages it may import (ARCHITECTURE.md §2):
# features <- datasets <- train -> model; serve -> model, datasets, features.
ALLOWED = {
    "features": set(),
    "datasets": {"features"},
    "model": set(),
    "train": {"model", "datasets", "features"},
    "serve": {"model", "datasets", "features"},
}
DIST = {name: f"twelve-{name}" for name in ALLOWED}
# The command groups packages contribute today (train and serve add theirs with their commands).
GROUPS = {"features": "features", "datasets": "data", "model": "model"}
ROOT_CLI_COPIES = ("features", "model")


def _workspace_imports(path: Path) -> set[tuple[str, str]]:
    """Return (package, module) pairs for every `twelve.<package>...` import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "twelve":
                names = [f"twelve.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "twelve" and len(parts) > 1:
                found.add((parts[1], name))
    return found


def _python_files(package: str) -> list[Path]:
    base = PACKAGES / package
    return sorted(p for sub in ("src", "tests") for p in (base / sub).rglob("*.py"))


def _pyproject(package: str) -> dict:
    return tomllib.loads((PACKAGES / package / "pyproject.toml").read_text())


def test_members_are_the_five_packages() -> None:
    members = sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists())
    assert members == sorted(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_layout(package: str) -> None:
    meta = _pyproject(package)
    assert meta["project"]["name"] == DIST[package]
    assert meta["project"]["version"]
    assert meta["project"]["description"]
    assert (PACKAGES / package / "README.md").is_file()
    assert (PACKAGES / package / "tests").is_dir()
    assert meta["tool"]["uv"]["build-backend"]["module-name"] == f"twelve.{package}"
    assert (PACKAGES / package / "src" / "twelve" / package / "__init__.py").is_file()
    # `twelve` is a namespace package shared by every member.
    assert not (PACKAGES / package / "src" / "twelve" / "__init__.py").exists()


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_dependency_direction(package: str) -> None:
    offending = []
    for path in _python_files(package):
        for imported, module in _workspace_imports(path):
            if imported == package:
                continue
            if imported not in ALLOWED[package]:
                offending.append(f"{path.relative_to(ROOT)} imports {module}")
            elif module.split(".")[2:3] in (["cli"], ["_twelve_cli"]):
                offending.append(f"{path.relative_to(ROOT)} imports another package's CLI {module}")
    assert not offending, "\n".join(offending)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_declared_dependencies_follow_the_direction(package: str) -> None:
    deps = _pyproject(package)["project"].get("dependencies", [])
    declared = {d.split(";")[0].split("[")[0].strip() for d in deps}
    workspace = {name for name, dist in DIST.items() if dist in declared}
    assert workspace <= ALLOWED[package]
    # Whatever the code imports from the workspace must be declared (directly).
    imported = {
        imp
        for path in (PACKAGES / package / "src").rglob("*.py")
        for imp, _ in _workspace_imports(path)
    } - {package}
    assert imported <= workspace, f"{package} imports {imported - workspace} without declaring them"


def test_the_import_check_catches_a_wrong_direction(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import twelve.train.loop\nfrom twelve import serve\nfrom twelve.model import x\n"
    )
    assert _workspace_imports(bad) == {
        ("train", "twelve.train.loop"),
        ("serve", "twelve.serve"),
        ("model", "twelve.model"),
    }


def test_root_cli_copies_are_identical() -> None:
    texts = {
        (PACKAGES / p / "src" / "twelve" / p / "_twelve_cli.py").read_text()
        for p in ROOT_CLI_COPIES
    }
    assert len(texts) == 1, "the _twelve_cli.py copies in features and model have drifted apart"


def _twelve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-c", "from twelve.model._twelve_cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_help_lists_every_package_group() -> None:
    result = _twelve("--help")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:")[1]
    listed = {line.split()[0] for line in commands.strip().splitlines() if line.strip()}
    assert set(GROUPS.values()) <= listed
    # Each group lives in its own package's cli module.
    from importlib.metadata import entry_points

    for ep in entry_points(group="twelve.cli"):
        assert ep.value.startswith(f"twelve.{ep.value.split('.')[1]}.cli:")
        assert ep.dist is not None
        assert ep.dist.name == DIST[ep.value.split(".")[1]]


def test_version_lists_every_installed_package() -> None:
    result = _twelve("--version")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split() for line in result.stdout.strip().splitlines())
    assert set(lines) == set(DIST.values())
    for package, dist in DIST.items():
        assert lines[dist] == _pyproject(package)["project"]["version"]


def test_help_does_not_import_heavy_modules() -> None:
    probe = (
        "import sys; from twelve.model._twelve_cli import build_root; build_root(); "
        "print(','.join(m for m in ('torch', 'detectron2', 'torchvision', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
