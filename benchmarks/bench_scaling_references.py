"""Reference-training speed-up with workers: the local process pool and Ray, 1 and 2 workers.

K reference models of the default cnn on mnist5k (the run's "train" recipe: Adam for
evaluate.shadow_epochs epochs, each on a random half of the default candidate pool), trained from
scratch by each arm: local 1 worker, local 2, Ray 1 CPU, Ray 2 CPUs (a single-node cluster
started for the arm, `ray.init(num_cpus=workers)`). The arms are interleaved A B C D A B C D ...
for PRIVCOMP_BENCH_ROUNDS rounds (default 3), and each arm is reported as the median over the
rounds of its per-round speed-up over 1 local worker, with the min and max. The Ray cluster's
start is timed apart (it is paid once per run, not per map); the local pool's seconds include
spawning its workers (paid per map). PRIVCOMP_BENCH_SET overrides settings (`--set` syntax,
space separated), e.g. `evaluate.shadow_epochs=2` for a shorter run.
"""

from __future__ import annotations

import functools
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from benchmarks.interleave import interleaved

TITLE = "Reference-training speed-up: local process pool and Ray, 1 and 2 workers"
K = 8
ARMS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


def _context(overrides: list[str], run_dir: Path) -> Any:
    from pipelines.config import load_config
    from pipelines.progress import Reporter
    from pipelines.runner import build_context

    config = load_config(None, [f"evaluate.shadow_models={K}", *overrides])
    ctx = build_context(config, run_dir, Reporter(Console(file=io.StringIO())))
    ctx.history = ["train"]  # a non-private target: the references' "train" recipe
    return ctx


def _train(ctx: Any, kind: str, workers: int) -> tuple[float, float, np.ndarray]:
    """(seconds of the map, seconds of starting the executor, the references' logits)."""
    from benchmarks.bench_attacks import fresh_references
    from pipelines.executors import Executor, LocalExecutor, RayExecutor, close_executor

    executor: Executor
    start = time.perf_counter()
    if kind == "ray":
        executor = RayExecutor(workers)
        executor.connect()
    else:
        executor = LocalExecutor(workers)
    started = time.perf_counter() - start
    try:
        seconds, refs = fresh_references(ctx, executor)
    finally:
        close_executor(executor)
    return seconds, started, refs.logits


def run() -> str:
    overrides = os.environ.get("PRIVCOMP_BENCH_SET", "").split()
    rounds = int(os.environ.get("PRIVCOMP_BENCH_ROUNDS", "3"))
    with tempfile.TemporaryDirectory(prefix="privcomp-bench-scaling-ctx-") as home:
        ctx = _context(overrides, Path(home))
        cfg = ctx.config.evaluate
        starts: dict[tuple[str, int], list[float]] = {arm: [] for arm in ARMS}
        logits: dict[tuple[str, int], np.ndarray] = {}
        load_before = os.getloadavg()[0]

        def measure(arm: tuple[str, int]) -> float:
            wall, started, out = _train(ctx, *arm)
            starts[arm].append(started)
            logits.setdefault(arm, out)
            return wall

        timed = interleaved(
            {arm: functools.partial(measure, arm) for arm in ARMS}, baseline=ARMS[0], rounds=rounds
        )
        load_after = os.getloadavg()[0]
    deviation = max(float(np.max(np.abs(logits[a] - logits[ARMS[0]]))) for a in ARMS)
    lines = [
        f"{cfg.shadow_models} reference models of the {ctx.config.run.model} on "
        f"{ctx.config.run.dataset} (Adam, {cfg.shadow_epochs} epochs, each on a random half of "
        f"the default candidate pool of {len(candidate_indices(ctx))} examples)"
        + (f", with `{' '.join(overrides)}`" if overrides else "")
        + f"; one torch thread per worker; {rounds} rounds of the four arms interleaved "
        "(benchmarks/interleave.py: A B C D, B C D A, …). Speed-up: the median over the rounds "
        "of 1 local worker's seconds over the arm's in the same round [min, max]; seconds: the "
        "median of the arm's.",
        "",
        "| executor | workers | seconds (median) | speed-up vs 1 local worker | cluster start, s |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        t = timed[arm]  # cost ratios to 1 local worker: the speed-up is their reciprocal
        start = f"{statistics.median(starts[arm]):.1f}" if arm[0] == "ray" else "-"
        lines.append(
            f"| {arm[0]} | {arm[1]} | {t.seconds:.1f} | "
            f"{1 / t.ratio:.2f}x [{1 / t.high:.2f}, {1 / t.low:.2f}] | {start} |"
        )
    lines += [
        "",
        "Goal (issue 13): at least 1.7x with 2 workers on 2 cores, local and Ray. The largest "
        f"difference of any arm's reference logits from 1 local worker's: {deviation:.2g} (the "
        "same seeds give the same models through either executor). Load average of the machine "
        f"(1 min) before / after: {load_before:.1f} / {load_after:.1f} on {os.cpu_count()} cores.",
        "",
        "Command: `python benchmarks/run_all.py scaling_references`"
        + (f" with `PRIVCOMP_BENCH_SET='{' '.join(overrides)}'`" if overrides else "")
        + ".",
    ]
    return "\n".join(lines)


def candidate_indices(ctx: Any) -> np.ndarray:
    from pipelines.evaluation import candidate_pool

    return candidate_pool(ctx).indices
