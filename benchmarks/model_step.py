"""Benchmark of twelve.model on the CPU: training step and single-task inference, fp32 and bf16.

For a preset (default `12in1-base`), batch 8, 24 text tokens (+ the task token) and 101 regions:
- training-step throughput (forward + backward + AdamW step), fp32 and bf16 autocast;
- single-task inference throughput: fp32, bf16 autocast, and bf16 weights (`model.bfloat16()`);
- peak memory: peak resident set of a separate process running only that mode, next to its
  resident set once the model (and optimizer) is built;
- the analytic matrix-multiply FLOP count per example (`twelve.model.flops`);
- achieved FLOP/s as a fraction of a large `torch.mm` (4096², fp32) measured in the same process.

The machine is shared, so the measurement is paired: every round runs a reference matmul right
before and right after each mode (the reference rate is that of the two together), and the modes
one after another (in reverse order every other round, so that
a slow drift of the machine does not favour the modes that run first); each ratio (fraction of
the matmul's FLOP/s, bf16 speed-up over fp32) is computed within a round and the table shows
the median and the best round. The reference matmul writes into a preallocated output, so it
measures the kernel and not the page faults of a fresh 64 MiB result. Python's garbage
collector is collected before and paused during the timed rounds (as `timeit` does).

    uv run python benchmarks/model_step.py                       # the full run (~5 minutes)
    uv run python benchmarks/model_step.py --preset tiny --rounds 2 --no-memory   # smoke run

Environment: `THP_MEM_ALLOC_ENABLE=1` (a PyTorch setting, read at import) backs large CPU
tensors with transparent huge pages. Eager PyTorch allocates every activation, gradient and
autocast weight copy afresh each step and glibc returns large blocks to the kernel on free, so
a 12in1-base training step takes ~100k page faults (~4 % of the step) without it. The benchmark
runs with it set, as we recommend for CPU training (it re-executes itself with the variable
when it is unset; `--no-thp` measures without); the header says which.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F  # noqa: N812 (the universal torch idiom)

from twelve.model import MultiTaskViLBERT, ViLBERTConfig, ViLBERTInputs
from twelve.model.flops import count_flops

MODES = ("train-fp32", "train-bf16", "infer-fp32", "infer-bf16-autocast", "infer-bf16-weights")
MM_SIZE = 4096
TARGETS = {
    "fp32 fwd+bwd FLOP/s / fp32 mm FLOP/s": 0.75,
    "bf16 autocast training step speed-up": 1.8,
    "bf16 autocast inference speed-up": 2.0,
    "bf16 weights inference speed-up": 2.0,
}


@dataclass(frozen=True)
class Setup:
    config: ViLBERTConfig
    batch: int
    text: int
    regions: int
    task: str


def make_inputs(setup: Setup, dtype: torch.dtype = torch.float32) -> ViLBERTInputs:
    """Random inputs of the benchmark's shape (all tokens and regions real)."""
    generator = torch.Generator().manual_seed(0)
    b, t, r = setup.batch, setup.text, setup.regions
    features = torch.randn(b, r, setup.config.vision.feature_size, generator=generator)
    return ViLBERTInputs(
        input_ids=torch.randint(1000, 2000, (b, t), generator=generator),
        token_type_ids=torch.zeros(b, t, dtype=torch.long),
        text_mask=torch.ones(b, t, dtype=torch.long),
        region_features=features.to(dtype),
        region_locations=torch.rand(b, r, 5, generator=generator).to(dtype),
        region_mask=torch.ones(b, r, dtype=torch.long),
    )


class Runner:
    """Holds the models, the optimizer and the inputs; runs one iteration of a mode.

    Training and inference use separate models with the same initial weights: inference is
    measured as a deployed model runs, on weights no optimizer step changes between calls (so
    autocast's cast weights are kept from one call to the next, `twelve.model.reused_memory`)."""

    def __init__(self, setup: Setup, modes: tuple[str, ...]) -> None:
        torch.manual_seed(0)
        self.setup = setup
        self.inputs = make_inputs(setup)
        self.bf16_inputs = make_inputs(setup, torch.bfloat16)
        roles = [
            role
            for role, needed in (
                ("train", any(mode.startswith("train") for mode in modes)),
                ("infer", bool({"infer-fp32", "infer-bf16-autocast"} & set(modes))),
                ("bf16", "infer-bf16-weights" in modes),
            )
            if needed
        ]
        # The first role takes the model itself and the others copies of its initial weights,
        # so a run of one mode (the peak-memory runs) holds one model only.
        source = MultiTaskViLBERT(setup.config)
        models = {
            role: source if index == 0 else self._copy(source) for index, role in enumerate(roles)
        }
        self.train_model = models.get("train")
        self.infer_model = models["infer"].eval() if "infer" in models else None
        self.bf16_model = models["bf16"].bfloat16().eval() if "bf16" in models else None
        self.optimizer: torch.optim.Optimizer | None = None
        if self.train_model is not None:
            with torch.no_grad():
                logits = self.train_model.eval()(self.inputs, setup.task).logits
            self.target = torch.rand_like(logits)
            trainable = [p for p in self.train_model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(
                trainable, lr=1e-5, eps=1e-6, weight_decay=0.01, fused=True
            )

    def _copy(self, source: MultiTaskViLBERT) -> MultiTaskViLBERT:
        model = MultiTaskViLBERT(self.setup.config)
        model.load_state_dict(source.state_dict())
        return model

    def train(self, bf16: bool) -> dict[str, float]:
        """One training step: forward, BCE loss, backward, AdamW step."""
        assert self.optimizer is not None
        assert self.train_model is not None
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = self.train_model(self.inputs, self.setup.task).logits
        F.binary_cross_entropy_with_logits(logits.float(), self.target).backward()
        middle = time.perf_counter()
        self.optimizer.step()
        end = time.perf_counter()
        return {"fwd_bwd": middle - start, "optimizer": end - middle, "seconds": end - start}

    def infer(self, mode: str) -> dict[str, float]:
        """One single-task forward in inference mode."""
        weights = mode == "infer-bf16-weights"
        model = self.bf16_model if weights else self.infer_model
        assert model is not None
        inputs = self.bf16_inputs if weights else self.inputs
        autocast = mode == "infer-bf16-autocast"
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            model(inputs, self.setup.task)
        return {"seconds": time.perf_counter() - start}

    def run(self, mode: str) -> dict[str, float]:
        """One iteration of `mode`, as named timings."""
        if mode.startswith("train"):
            return self.train(bf16=mode == "train-bf16")
        return self.infer(mode)


class Reference:
    """A large fp32 matmul: the machine's matrix-multiply throughput right now."""

    def __init__(self) -> None:
        self.a = torch.randn(MM_SIZE, MM_SIZE)
        self.b = torch.randn(MM_SIZE, MM_SIZE)
        self.out = torch.mm(self.a, self.b)

    def seconds(self) -> float:
        """Time of one matmul."""
        start = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        return time.perf_counter() - start

    def flops_per_second(self, *seconds: float) -> float:
        """FLOP/s over the given matmul times (one fresh matmul when none are given)."""
        times = seconds or (self.seconds(),)
        return 2 * MM_SIZE**3 * len(times) / sum(times)


def measure(
    setup: Setup, modes: tuple[str, ...], rounds: int, warmup: int
) -> tuple[list[dict], dict[str, float]]:
    """Per round: for each mode, its timings and the reference matmul's FLOP/s over one matmul
    right before and one right after it (the machine's rate while the mode ran). Also the
    seconds of each mode's first call (warm-up: allocations, autocast's weight casts)."""
    runner, reference = Runner(setup, modes), Reference()
    first: dict[str, float] = {}
    for _ in range(warmup):
        reference.flops_per_second()
        for mode in modes:
            first.setdefault(mode, runner.run(mode)["seconds"])
    results = []
    for index in range(rounds):
        current = {}
        gc.collect()
        gc.disable()
        try:
            for mode in modes if index % 2 == 0 else reversed(modes):
                before = reference.seconds()
                timings = runner.run(mode)
                mm = reference.flops_per_second(before, reference.seconds())
                current[mode] = {**timings, "mm": mm}
        finally:
            gc.enable()
        results.append(current)
        print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results, first


def resident_gib(field: str = "VmRSS") -> float:
    """Resident set size of this process (`VmRSS`) or its peak (`VmHWM`), GiB. (Not
    `ru_maxrss`, which a child inherits from its parent across exec.)"""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_of(setup_args: list[str], mode: str) -> tuple[float, float]:
    """(peak, once built) resident memory, GiB, of a fresh process that builds the model (and
    optimizer) and runs two iterations of `mode`."""
    command = [sys.executable, __file__, *setup_args, "--memory-of", mode]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run of {mode} failed:\n{result.stderr}")
    peak, built = result.stdout.strip().splitlines()[-1].split()
    return float(peak), float(built)


def summarise(rounds: list[dict], modes: tuple[str, ...], flops) -> tuple[dict, dict]:
    """Median and best timings per mode, and every paired ratio (median and best over rounds)."""
    figures = {}
    for mode in modes:
        runs = [r[mode] for r in rounds]
        fastest = min(runs, key=lambda run: run["seconds"])
        entry = {
            "seconds_best": fastest["seconds"],
            "seconds_median": statistics.median(run["seconds"] for run in runs),
        }
        if mode.startswith("train"):
            entry["fwd_bwd_seconds_median"] = statistics.median(run["fwd_bwd"] for run in runs)
            entry["optimizer_seconds_median"] = statistics.median(run["optimizer"] for run in runs)
        figures[mode] = entry
    ratios: dict[str, list[float]] = {}

    def add(name: str, values: list[float]) -> None:
        if values:
            ratios[name] = values

    if "train-fp32" in modes:
        add(
            "fp32 fwd+bwd FLOP/s / fp32 mm FLOP/s",
            [flops.training / r["train-fp32"]["fwd_bwd"] / r["train-fp32"]["mm"] for r in rounds],
        )
        add(
            "fp32 training step FLOP/s / fp32 mm FLOP/s",
            [flops.training / r["train-fp32"]["seconds"] / r["train-fp32"]["mm"] for r in rounds],
        )
    if "infer-fp32" in modes:
        add(
            "fp32 inference FLOP/s / fp32 mm FLOP/s",
            [flops.forward / r["infer-fp32"]["seconds"] / r["infer-fp32"]["mm"] for r in rounds],
        )
    pairs = (
        ("bf16 autocast training step speed-up", "train-fp32", "train-bf16", "seconds"),
        ("bf16 autocast fwd+bwd speed-up", "train-fp32", "train-bf16", "fwd_bwd"),
        ("bf16 autocast inference speed-up", "infer-fp32", "infer-bf16-autocast", "seconds"),
        ("bf16 weights inference speed-up", "infer-fp32", "infer-bf16-weights", "seconds"),
    )
    for name, slow, fast, key in pairs:
        if slow in modes and fast in modes:
            add(name, [r[slow][key] / r[fast][key] for r in rounds])
    summary = {
        name: {"median": statistics.median(values), "best": max(values), "rounds": values}
        for name, values in ratios.items()
    }
    return figures, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="12in1-base")
    parser.add_argument("--task", default="vqa")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=24, help="text tokens before the task token")
    parser.add_argument("--regions", type=int, default=101)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument(
        "--no-thp", action="store_true", help="keep THP_MEM_ALLOC_ENABLE as the environment has it"
    )
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.no_thp and "THP_MEM_ALLOC_ENABLE" not in os.environ:
        # PyTorch reads the variable once, when it loads: start again with it set.
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}
        )

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
        built = resident_gib()
        for _ in range(2):
            runner.run(args.memory_of)
        print(f"{resident_gib('VmHWM')} {built}")
        return

    modes = tuple(mode for mode in args.modes.split(",") if mode)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {list(MODES)}")
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
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.rounds} rounds, "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}",
        flush=True,
    )
    rounds, first_calls = measure(setup, modes, args.rounds, args.warmup)
    figures, ratios = summarise(rounds, modes, flops)
    if not args.no_memory:
        setup_args = [
            f"--preset={args.preset}",
            f"--task={args.task}",
            f"--batch={args.batch}",
            f"--text={args.text}",
            f"--regions={args.regions}",
            f"--threads={args.threads}",
            "--no-thp",
        ]
        for mode in modes:
            figures[mode]["peak_gib"], figures[mode]["built_gib"] = memory_of(setup_args, mode)

    mm_values = [r[mode]["mm"] for r in rounds for mode in modes]
    print()
    print(
        f"analytic matmul FLOPs per example: forward {flops.forward / setup.batch / 1e9:.2f} G, "
        f"forward+backward {flops.training / setup.batch / 1e9:.2f} G"
    )
    print(
        f"reference fp32 torch.mm {MM_SIZE}x{MM_SIZE}: median "
        f"{statistics.median(mm_values) / 1e9:.1f} GFLOP/s, best {max(mm_values) / 1e9:.1f} GFLOP/s"
    )
    print()
    header = (
        f"{'mode':<21}{'ex/s':>7}{'median s':>9}{'best s':>8}{'fwd+bwd':>9}{'AdamW':>7}"
        f"{'GFLOP/s':>9}{'peak GiB':>10}{'built':>7}"
    )
    print(header)
    print("-" * len(header))
    nan = float("nan")
    for mode in modes:
        entry = figures[mode]
        busy = entry.get("fwd_bwd_seconds_median", entry["seconds_median"])
        work = flops.training if mode.startswith("train") else flops.forward
        print(
            f"{mode:<21}{setup.batch / entry['seconds_median']:>7.2f}"
            f"{entry['seconds_median']:>9.3f}{entry['seconds_best']:>8.3f}"
            f"{entry.get('fwd_bwd_seconds_median', nan):>9.3f}"
            f"{entry.get('optimizer_seconds_median', nan):>7.3f}{work / busy / 1e9:>9.1f}"
            f"{entry.get('peak_gib', nan):>10.2f}{entry.get('built_gib', nan):>7.2f}"
        )
    print(
        "(ex/s, fwd+bwd, AdamW, GFLOP/s: median rounds; GFLOP/s: analytic FLOPs over forward+backward "
        "time for training, forward for inference)"
    )
    if first_calls:
        print(
            "first call (warm-up, not in the table), s: "
            + ", ".join(f"{mode} {seconds:.3f}" for mode, seconds in first_calls.items())
        )
    print()
    print(f"{'paired ratio (within a round)':<46}{'median':>8}{'best':>8}   target")
    for name, values in ratios.items():
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f">= {target}: " + (
                "met"
                if values["median"] >= target
                else "met in the best round only"
                if values["best"] >= target
                else "NOT met"
            )
        print(f"{name:<46}{values['median']:>8.3f}{values['best']:>8.3f}   {verdict}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "setup": {k: v for k, v in vars(args).items() if k != "memory_of"},
                    "flops_per_example": {
                        "forward": flops.forward / setup.batch,
                        "training": flops.training / setup.batch,
                    },
                    "modes": figures,
                    "first_call_seconds": first_calls,
                    "ratios": ratios,
                    "rounds": rounds,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
