"""Benchmark of twelve.model on the CPU: training step and single-task inference, fp32 and bf16.

For a preset (default `12in1-base`), batch 8, 24 text tokens (+ the task token) and 101 regions:
- training-step throughput (forward + backward + AdamW step), fp32 and bf16 autocast;
- single-task inference throughput, fp32, bf16 autocast and bf16 weights;
- peak memory: the peak resident set of a separate process running only that mode, next to its
  resident set once the model (and optimizer) is built;
- the analytic matrix-multiply FLOP count per example;
- achieved FLOP/s as a fraction of a large `torch.mm` (4096², fp32 and bf16) measured in the
  same process, interleaved with the model runs.

All timings interleave the modes and the reference matmuls round by round and keep each one's
best round (the machine is shared; the best round is the least disturbed), and the medians are
printed next to them. Ratios are what to compare across machines.

    uv run python benchmarks/model_step.py            # full run (a few minutes)
    uv run python benchmarks/model_step.py --rounds 2 --preset tiny   # smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model import MultiTaskViLBERT, ViLBERTConfig, ViLBERTInputs
from twelve.model.flops import count_flops

TRAIN_MODES = ("train-fp32", "train-bf16")
INFER_MODES = ("infer-fp32", "infer-bf16-autocast", "infer-bf16-weights")
MODES = TRAIN_MODES + INFER_MODES
MM_SIZE = 4096


@dataclass
class Setup:
    config: ViLBERTConfig
    batch: int
    text: int
    regions: int
    task: str


def make_inputs(setup: Setup, seed: int = 0) -> ViLBERTInputs:
    """Random inputs of the benchmark's shape (all tokens and regions real)."""
    generator = torch.Generator().manual_seed(seed)
    b, t, r = setup.batch, setup.text, setup.regions
    return ViLBERTInputs(
        input_ids=torch.randint(1000, 2000, (b, t), generator=generator),
        token_type_ids=torch.zeros(b, t, dtype=torch.long),
        text_mask=torch.ones(b, t, dtype=torch.long),
        region_features=torch.randn(b, r, setup.config.vision.feature_size, generator=generator),
        region_locations=torch.rand(b, r, 5, generator=generator),
        region_mask=torch.ones(b, r, dtype=torch.long),
    )


class Runner:
    """Holds the model, optimizer and inputs, and runs one iteration of any mode."""

    def __init__(self, setup: Setup, modes: tuple[str, ...]) -> None:
        torch.manual_seed(0)
        self.setup = setup
        self.model = MultiTaskViLBERT(setup.config)
        self.inputs = make_inputs(setup)
        logits = self.model.eval()(self.inputs, setup.task).logits
        self.target = torch.rand_like(logits)
        self.optimizer = None
        if any(mode.startswith("train") for mode in modes):
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(
                params, lr=1e-5, eps=1e-6, weight_decay=0.01, fused=True
            )
        self.bf16_model = None
        if "infer-bf16-weights" in modes:
            self.bf16_model = MultiTaskViLBERT(setup.config).to(torch.bfloat16).eval()
            self.bf16_model.load_state_dict(self.model.state_dict())

    def train(self, bf16: bool) -> tuple[float, float]:
        """One training step; returns (forward+backward seconds, optimizer seconds)."""
        assert self.optimizer is not None
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = self.model(self.inputs, self.setup.task).logits
        loss = F.binary_cross_entropy_with_logits(logits.float(), self.target)
        loss.backward()
        middle = time.perf_counter()
        self.optimizer.step()
        return middle - start, time.perf_counter() - middle

    def infer(self, kind: str) -> float:
        """One single-task forward in inference mode; returns seconds."""
        model = self.bf16_model if kind == "infer-bf16-weights" else self.model
        assert model is not None
        model.eval()
        inputs = self.inputs
        if kind == "infer-bf16-weights":
            inputs = ViLBERTInputs(
                input_ids=inputs.input_ids,
                token_type_ids=inputs.token_type_ids,
                text_mask=inputs.text_mask,
                region_features=inputs.region_features.bfloat16(),
                region_locations=inputs.region_locations.bfloat16(),
                region_mask=inputs.region_mask,
            )
        start = time.perf_counter()
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "infer-bf16-autocast"),
        ):
            model(inputs, self.setup.task)
        return time.perf_counter() - start

    def run(self, mode: str) -> dict[str, float]:
        """One iteration of `mode`, as named timings."""
        if mode.startswith("train"):
            compute, update = self.train(bf16=mode == "train-bf16")
            return {"fwd_bwd": compute, "optimizer": update, "step": compute + update}
        return {"forward": self.infer(mode)}


def matmul_flops_per_second(dtype: torch.dtype, a: torch.Tensor, b: torch.Tensor) -> float:
    """FLOP/s of one large square matmul."""
    start = time.perf_counter()
    torch.mm(a, b)
    return 2 * MM_SIZE**3 / (time.perf_counter() - start)


def measure(setup: Setup, modes: tuple[str, ...], rounds: int, warmup: int) -> dict:
    """Interleaved timings of every mode and of the reference matmuls."""
    runner = Runner(setup, modes)
    refs = {
        dtype: (
            torch.randn(MM_SIZE, MM_SIZE, dtype=dtype),
            torch.randn(MM_SIZE, MM_SIZE, dtype=dtype),
        )
        for dtype in (torch.float32, torch.bfloat16)
    }
    for _ in range(warmup):
        for mode in modes:
            runner.run(mode)
        for dtype, (a, b) in refs.items():
            matmul_flops_per_second(dtype, a, b)
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    mm: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for index in range(rounds):
        for mode in modes:
            mm["fp32"].append(matmul_flops_per_second(torch.float32, *refs[torch.float32]))
            samples[mode].append(runner.run(mode))
        mm["bf16"].append(matmul_flops_per_second(torch.bfloat16, *refs[torch.bfloat16]))
        print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {"samples": samples, "mm": mm}


def resident_gib() -> float:
    """Current resident set size of this process, GiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_memory(setup_args: list[str], mode: str) -> tuple[float, float]:
    """(peak, before the first iteration) resident memory in GiB of a fresh process that builds
    the model (and optimizer) and runs two iterations of `mode`."""
    command = [sys.executable, __file__, *setup_args, "--memory-of", mode]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run of {mode} failed:\n{result.stderr}")
    peak, before = result.stdout.strip().splitlines()[-1].split()
    return float(peak), float(before)


def best(values: list[float], key: Callable[[float], float] = lambda v: v) -> float:
    return min(values, key=key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="12in1-base")
    parser.add_argument("--task", default="vqa")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=24, help="text tokens before the task token")
    parser.add_argument("--regions", type=int, default=101)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    setup = Setup(
        config=ViLBERTConfig.preset(args.preset),
        batch=args.batch,
        text=args.text,
        regions=args.regions,
        task=args.task,
    )
    if args.memory_of:
        runner = Runner(setup, (args.memory_of,))
        before = resident_gib()
        for _ in range(2):
            runner.run(args.memory_of)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{peak} {before}")
        return

    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    flops = count_flops(
        setup.config,
        batch=setup.batch,
        text_length=setup.text,
        regions=setup.regions,
        task=setup.task,
    )
    print(
        f"twelve.model benchmark: preset {args.preset}, task {args.task}, batch {args.batch}, "
        f"{args.text} text tokens (+1 task token), {args.regions} regions, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        flush=True,
    )
    measured = measure(setup, modes, args.rounds, args.warmup)
    samples, mm = measured["samples"], measured["mm"]
    mm32, mm16 = max(mm["fp32"]), max(mm["bf16"])
    memory: dict[str, tuple[float, float]] = {}
    if not args.no_memory:
        setup_args = [
            f"--preset={args.preset}",
            f"--task={args.task}",
            f"--batch={args.batch}",
            f"--text={args.text}",
            f"--regions={args.regions}",
            f"--threads={args.threads}",
        ]
        for mode in modes:
            memory[mode] = peak_memory(setup_args, mode)

    per_example_fwd = flops.forward / setup.batch
    per_example_train = flops.training / setup.batch
    rows = []
    figures: dict[str, dict[str, float]] = {}
    for mode in modes:
        runs = samples[mode]
        key = "step" if mode.startswith("train") else "forward"
        best_run = min(runs, key=lambda r: r[key])
        median = statistics.median(r[key] for r in runs)
        entry = {
            "seconds_best": best_run[key],
            "seconds_median": median,
            "examples_per_second": setup.batch / best_run[key],
        }
        if mode.startswith("train"):
            fwd_bwd = min(r["fwd_bwd"] for r in runs)
            entry["fwd_bwd_seconds"] = fwd_bwd
            entry["optimizer_seconds"] = min(r["optimizer"] for r in runs)
            entry["fwd_bwd_flops_per_second"] = flops.training / fwd_bwd
        else:
            entry["forward_flops_per_second"] = flops.forward / best_run[key]
        if mode in memory:
            entry["peak_memory_gib"], entry["memory_before_first_step_gib"] = memory[mode]
        figures[mode] = entry
        rows.append(mode)

    print()
    print(
        f"analytic matmul FLOPs per example: forward {per_example_fwd / 1e9:.2f} G, "
        f"forward+backward {per_example_train / 1e9:.2f} G"
    )
    print(
        f"reference torch.mm {MM_SIZE}x{MM_SIZE} (best of {len(mm['fp32'])}): "
        f"fp32 {mm32 / 1e9:.1f} GFLOP/s, bf16 {mm16 / 1e9:.1f} GFLOP/s"
    )
    print()
    header = (
        f"{'mode':<22}{'s/iter best':>12}{'median':>9}{'ex/s':>8}{'fwd+bwd s':>11}"
        f"{'AdamW s':>9}{'GFLOP/s':>9}{'of mm32':>9}{'peak GiB':>10}{'(built)':>9}"
    )
    print(header)
    print("-" * len(header))
    for mode in rows:
        e = figures[mode]
        rate = e.get("fwd_bwd_flops_per_second", e.get("forward_flops_per_second", 0.0))
        print(
            f"{mode:<22}{e['seconds_best']:>12.3f}{e['seconds_median']:>9.3f}"
            f"{e['examples_per_second']:>8.2f}"
            f"{e.get('fwd_bwd_seconds', float('nan')):>11.3f}"
            f"{e.get('optimizer_seconds', float('nan')):>9.3f}"
            f"{rate / 1e9:>9.1f}{rate / mm32:>9.3f}"
            f"{e.get('peak_memory_gib', float('nan')):>10.2f}"
            f"{e.get('memory_before_first_step_gib', float('nan')):>9.2f}"
        )
    print()
    checks = []
    if "train-fp32" in figures:
        fraction = figures["train-fp32"]["fwd_bwd_flops_per_second"] / mm32
        checks.append(("fp32 forward+backward / fp32 mm FLOP/s", fraction, 0.75))
    if "train-fp32" in figures and "train-bf16" in figures:
        speedup = figures["train-fp32"]["seconds_best"] / figures["train-bf16"]["seconds_best"]
        checks.append(("bf16 training step speed-up over fp32", speedup, 1.8))
    for kind in ("infer-bf16-autocast", "infer-bf16-weights"):
        if "infer-fp32" in figures and kind in figures:
            speedup = figures["infer-fp32"]["seconds_best"] / figures[kind]["seconds_best"]
            checks.append((f"{kind} inference speed-up over fp32", speedup, 2.0))
    for name, value, target in checks:
        verdict = "met" if value >= target else "NOT met"
        print(f"{name:<48}{value:>7.3f}   target >= {target}: {verdict}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "setup": vars(args),
                    "flops_per_example": {
                        "forward": per_example_fwd,
                        "training": per_example_train,
                    },
                    "mm_flops_per_second": {"fp32": mm32, "bf16": mm16},
                    "modes": figures,
                    "checks": {name: value for name, value, _ in checks},
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
