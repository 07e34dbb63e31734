"""LADP step time side by side: non-private SGD, LADP fast / reference path, three Opacus modes.

The cnn (mnist shape 1x28x28, 10 classes, the zoo defaults) on random data at batch 64 and 256
(PRIVCOMP_BENCH_LADP_BATCHES), one fixed batch per method so that only the step is timed:
forward, backward, per-example clipping, noise, optimizer step. PRIVCOMP_BENCH_LADP_ROUNDS
rounds (default 5) with the methods interleaved (benchmarks/interleave.py), each measurement the
median of PRIVCOMP_BENCH_LADP_REPEATS steps (default 5) after 2 warm-ups; ratios are medians of
per-round ratios; all methods in one process, one torch thread. Opacus 1.6 through
PrivacyEngine.make_private (no Poisson sampling, so the batch is fixed): flat clipping with
hooks, per-layer clipping with hooks, ghost clipping (flat; Opacus has
no per-layer ghost mode). Peak memory (PRIVCOMP_BENCH_LADP_MEMORY, default on): peak RSS over two
steps minus RSS before them (Linux VmHWM after a reset through /proc/self/clear_refs), one fresh
process per method and batch (tracemalloc does not see torch's allocator). resnet18 at batch 32
with PRIVCOMP_BENCH_LADP_RESNET=1.

Accuracy (ε 1, 3, 8 × 3 seeds against train-dpsgd) is a separate study: bench_accuracy.py.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.interleave import Interleaved, interleaved

TITLE = "LADP: time per DP step (fast path, reference path, Opacus)"
SHAPE = (1, 28, 28)


def _model(arch: str) -> nn.Module:
    from models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(arch, in_shape=SHAPE, num_classes=10)
    for module in model.modules():  # Opacus's module backward hooks refuse in-place ReLU
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def _time(step: Callable[[], None], repeats: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _plain(x: torch.Tensor, y: torch.Tensor, arch: str) -> Callable[[], None]:
    model = _model(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)

    def step() -> None:
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _ladp(x: torch.Tensor, y: torch.Tensor, arch: str, fast: bool) -> Callable[[], None]:
    from privacy.clipping import clipped_grad_sums
    from privacy.fastpath import fast_clipped_grad_sums
    from privacy.groups import layer_groups
    from privacy.randomness import mechanism_rngs
    from privacy.step import ladp_step

    model = _model(arch)
    groups = layer_groups(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    rng = mechanism_rngs(None)[0]  # the pipeline's secure generator
    sums = fast_clipped_grad_sums if fast else clipped_grad_sums

    def step() -> None:
        ladp_step(
            model,
            opt,
            x,
            y,
            groups=groups,
            sigma_eff=1.0,
            expected_batch_size=len(x),
            rng=rng,
            clipped_sums=sums,
        )

    return step


def _opacus(x: torch.Tensor, y: torch.Tensor, arch: str, mode: str) -> Callable[[], None]:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = _model(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    n_params = len([p for p in model.parameters() if p.requires_grad])
    kwargs: dict = {"max_grad_norm": 1.0}
    if mode == "per_layer":
        kwargs = {"max_grad_norm": [1.0] * n_params, "clipping": "per_layer"}
    if mode == "ghost":
        kwargs["grad_sample_mode"] = "ghost"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = PrivacyEngine(secure_mode=False).make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=1.0,
            poisson_sampling=False,
            criterion=nn.CrossEntropyLoss(),
            **kwargs,
        )
    private, dp_opt = made[0], made[1]
    criterion = made[2] if mode == "ghost" else nn.CrossEntropyLoss()

    def step() -> None:
        loss = criterion(private(x), y)
        loss.backward()
        dp_opt.step()
        dp_opt.zero_grad(set_to_none=True)

    return step


Maker = Callable[[torch.Tensor, torch.Tensor, str], Callable[[], None]]
METHODS: dict[str, Maker] = {
    "non-private SGD": _plain,
    "LADP fast path": lambda x, y, arch: _ladp(x, y, arch, fast=True),
    "LADP reference (vmap)": lambda x, y, arch: _ladp(x, y, arch, fast=False),
    "Opacus flat (hooks)": lambda x, y, arch: _opacus(x, y, arch, "flat"),
    "Opacus per-layer (hooks)": lambda x, y, arch: _opacus(x, y, arch, "per_layer"),
    "Opacus ghost (flat)": lambda x, y, arch: _opacus(x, y, arch, "ghost"),
}


def _batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    return torch.randn(batch, *SHAPE, generator=gen), torch.randint(0, 10, (batch,), generator=gen)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def child(name: str, batch: int, arch: str) -> None:
    """In a fresh process: print peak RSS over two steps of one method minus RSS before (MiB)."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    x, y = _batch(batch)
    step = METHODS[name](x, y, arch)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to now
    before = _status_kib("VmRSS")
    step()
    step()
    print((_status_kib("VmHWM") - before) / 1024)


def _peak_mib(name: str, batch: int, arch: str) -> float:
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); from benchmarks.bench_ladp import child; "
        f"child({name!r}, {batch}, {arch!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def _steps(x: torch.Tensor, y: torch.Tensor, arch: str) -> dict[str, Callable[[], None]]:
    """Every method's step, built once; a method that refuses the model (Opacus: torchvision's
    in-place `out += identity`) is left out and reported as failing."""
    steps = {}
    for name, make in METHODS.items():
        try:
            step = make(x, y, arch)
            step()
        except RuntimeError:
            continue
        steps[name] = step
    return steps


def _table(arch: str, batches: list[int], repeats: int, memory: bool, rounds: int) -> str:
    results: dict[int, dict[str, float]] = {}
    spread: dict[int, dict[str, Interleaved]] = {}
    peaks: dict[int, dict[str, float]] = {}
    for batch in batches:
        x, y = _batch(batch)
        with warnings.catch_warnings():  # Opacus's hook warnings, once per step
            warnings.simplefilter("ignore")
            steps = _steps(x, y, arch)
            timed = {n: (lambda s=s: _time(s, repeats)) for n, s in steps.items()}
            spread[batch] = interleaved(timed, baseline="non-private SGD", rounds=rounds)
        results[batch] = {n: spread[batch][n].seconds if n in steps else math.nan for n in METHODS}
        if memory:
            peaks[batch] = {
                n: _peak_mib(n, batch, arch) if math.isfinite(results[batch][n]) else math.nan
                for n in METHODS
            }
    head = "| method | " + " | ".join(
        f"{arch}, batch {b}: ms / step (× non-private [min, max])" for b in batches
    )
    if memory:
        head += " | " + " | ".join(f"batch {b}: peak RSS over the step, MiB" for b in batches)
    cols = len(batches) * (2 if memory else 1)
    lines = [head + " |", "|---|" + "---|" * cols]
    for name in METHODS:
        cells = []
        for b in batches:
            t = results[b][name]
            cells.append(
                f"{1e3 * t:.1f} ({spread[b][name].cell()}×)" if math.isfinite(t) else "fails"
            )
        if memory:
            cells += [
                f"{peaks[b][name]:.0f}" if math.isfinite(peaks[b][name]) else "-" for b in batches
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for b in batches:
        r, fast = results[b], results[b]["LADP fast path"]
        ratios = [
            f"{r[other] / fast:.2f}× faster than {other}"
            for other in (
                "LADP reference (vmap)",
                "Opacus per-layer (hooks)",
                "Opacus ghost (flat)",
            )
            if math.isfinite(r[other])
        ]
        lines.append(f"- {arch}, batch {b}: the fast path is " + ", ".join(ratios))
    return "\n".join(lines)


def run() -> str:
    torch.set_num_threads(1)
    batches = [int(b) for b in os.environ.get("PRIVCOMP_BENCH_LADP_BATCHES", "64,256").split(",")]
    repeats = int(os.environ.get("PRIVCOMP_BENCH_LADP_REPEATS", "5"))
    memory = os.environ.get("PRIVCOMP_BENCH_LADP_MEMORY", "1") == "1"
    resnet = os.environ.get("PRIVCOMP_BENCH_LADP_RESNET", "0") == "1"
    load = os.getloadavg()[0]
    rounds = int(os.environ.get("PRIVCOMP_BENCH_LADP_ROUNDS", "5"))
    parts = [_table("cnn", batches, repeats, memory, rounds)]
    if resnet:
        parts.append(_table("resnet18", [32], max(1, repeats // 2), memory, max(2, rounds // 2)))
    notes = (
        f"\n\nRandom data (1x28x28, 10 classes); {rounds} rounds, the methods interleaved "
        "(A B C … A B C …, each round starting one method later), each measurement the median "
        f"of {repeats} steps after 2 warm-ups; ms: the median over rounds; ×: the median of the "
        "per-round ratios to non-private SGD with their min and max; "
        f"1 torch thread; 1-minute load average at the start: {load:.1f} on {os.cpu_count()} "
        "cores (a shared, busy machine: compare ratios within a column).\n\n"
        "- Peak memory: peak RSS over two steps minus RSS before them (VmHWM reset through "
        "/proc/self/clear_refs), each method in a fresh process after its model and batch are "
        "built; includes one-time allocations of the first step (PRIVCOMP_BENCH_LADP_MEMORY=0 "
        "skips it).\n"
        "- resnet18 at batch 32 (PRIVCOMP_BENCH_LADP_RESNET=1): ReLUs made not in-place for "
        "every method (Opacus's hooks refuse in-place ReLU; the LADP fast path does not); "
        '"fails": Opacus\'s module hooks also refuse the in-place residual add.\n'
        "- Accuracy at equal ε (LADP vs train-dpsgd, 3 seeds): the accuracy section below.\n"
    )
    return "\n\n".join(parts) + notes
