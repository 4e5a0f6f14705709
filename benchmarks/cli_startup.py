"""Time `twelve --help` and `twelve --version`: the CLI must start fast (target: under 2 s)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def time_command(argv: list[str], repeats: int) -> list[float]:
    """Run a command `repeats` times and return the wall-clock seconds of each run."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    twelve = shutil.which("twelve") or sys.exit("`twelve` is not on PATH: run with `uv run`")
    python = [sys.executable, "-c", "pass"]
    for label, argv in (
        ("python -c pass", python),
        ("twelve --help", [twelve, "--help"]),
        ("twelve --version", [twelve, "--version"]),
    ):
        runs = time_command(argv, args.repeats)
        print(
            f"{label:<18} median {statistics.median(runs) * 1000:7.1f} ms"
            f"  max {max(runs) * 1000:7.1f} ms  ({args.repeats} runs)"
        )


if __name__ == "__main__":
    main()
