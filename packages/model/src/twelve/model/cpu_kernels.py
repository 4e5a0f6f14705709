"""The package's C kernels for the CPU: compiled on first use, cached, loaded with ctypes.

The kernels (`kernels/*.c`, sharing `kernels/*.h`) are plain C with OpenMP: no PyTorch headers,
so they compile in about a second with the system C compiler (`$CC`, else `cc` or `gcc`) and
load into the OpenMP runtime PyTorch already loaded. A build is cached under
`$TWELVE_KERNEL_CACHE`, else `$XDG_CACHE_HOME/twelve/kernels` (`~/.cache/twelve/kernels`), in a
file named by a hash of the source (with the folder's headers), the compiler, the flags and the
CPU, written to a temporary name and renamed, so concurrent processes never load a half-written
library.

Nothing here is required: without a compiler, on a platform other than Linux, with a PyTorch
whose parallel backend is not OpenMP, or with `TWELVE_CPU_KERNELS=0`, `load` returns None (the
reason is logged once) and callers use their PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = Path(__file__).with_name("kernels")
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fopenmp", "-std=c11")
LINK_FLAGS = ("-shared", "-fPIC")
DISABLE_VARIABLE = "TWELVE_CPU_KERNELS"


class KernelBuildError(RuntimeError):
    """A kernel's source failed to compile (the compiler's output is in the message)."""


def cache_dir() -> Path:
    """Where built kernels are kept."""
    if explicit := os.environ.get("TWELVE_KERNEL_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "twelve" / "kernels"


def find_compiler() -> str | None:
    """The C compiler to use: `$CC`, else `cc` or `gcc` on the PATH."""
    if explicit := os.environ.get("CC"):
        return shutil.which(explicit)
    return shutil.which("cc") or shutil.which("gcc")


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used in this process, or None when they can."""
    if os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in ("0", "false", "off", "no"):
        return f"{DISABLE_VARIABLE} turns them off"
    if sys.platform != "linux":
        return f"built on Linux only (this is {sys.platform})"
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return "this PyTorch's parallel backend is not OpenMP"
    if find_compiler() is None:
        return "no C compiler found (set CC, or install cc/gcc)"
    return None


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def build(name: str, compiler: str, directory: Path) -> Path:
    """Compile `kernels/<name>.c` into `directory` (unless built already); the library's path."""
    source = SOURCES / f"{name}.c"
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n", 1)[0]
    headers = "".join(header.read_text() for header in sorted(SOURCES.glob("*.h")))
    key = hashlib.sha256(
        "\0".join(
            (source.read_text(), headers, compiler, version, " ".join(FLAGS), _cpu_signature())
        ).encode()
    ).hexdigest()[:16]
    target = directory / f"{name}-{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=directory)
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *FLAGS, *LINK_FLAGS, "-o", temporary, str(source), "-lm"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KernelBuildError(
                f"{compiler} failed on {source} (exit {result.returncode}):\n{result.stderr}"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The kernel library `name` (built if needed), or None when the kernels are unavailable
    or fail to build (logged once per process)."""
    reason = unavailable_reason()
    if reason is None:
        compiler = find_compiler()
        assert compiler is not None
        try:
            return ctypes.CDLL(str(build(name, compiler, cache_dir())))
        except (OSError, KernelBuildError) as error:
            reason = str(error)
    log.info("twelve CPU kernel %r not used, PyTorch path instead: %s", name, reason)
    return None
