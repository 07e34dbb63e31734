"""Defenses: what each costs to train, measured side by side, and the defense study's headline.

Cost: the target model of each method (undefended, the eight defenses, DP-SGD and LADP at ε = 8)
trained on the default data's members (mnist5k, seed 0, cnn) for PRIVCOMP_BENCH_DEFENSE_EPOCHS
epochs (default 5; the DP methods as many, their other settings at the [train-*] defaults),
each training in a fresh process with one torch thread (so that its peak memory is its own:
resident memory above the process's level before training). Methods are interleaved,
A B C ... A B C ..., for PRIVCOMP_BENCH_ROUNDS rounds (default 3), and each method is
reported as the median of its per-round ratio to the undefended model of the same round, with
the spread (min-max) of those ratios.

Headline: the table of `pipeline compare-defenses --model cnn` (its study.md's first table), read
from PRIVCOMP_BENCH_STUDY (default runs/defense-study-cnn), which is run first when missing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

TITLE = "Defenses: training cost side by side, and the defense study's headline"
DP_EPSILON = 8.0


def methods() -> list[str]:
    from privacy.defenses import DEFENSES

    return ["undefended", *sorted(DEFENSES), "dp-sgd", "ladp"]


def measure_one(method: str, epochs: int) -> dict[str, Any]:
    """One training of `method`'s target, in this process (the worker side)."""
    import torch

    torch.set_num_threads(1)
    from models.training import fit
    from models.zoo import seeded_model
    from pipelines.config import load_config
    from pipelines.cost import measured
    from pipelines.progress import Reporter
    from pipelines.runner import build_context
    from privacy.config import LADPConfig
    from privacy.engines import build_engine

    config = load_config(None, [f"train.epochs={epochs}"])
    if method not in ("undefended", "dp-sgd", "ladp"):
        config = config.with_values("train", defense=method)
    ctx = build_context(config, Path("."), Reporter())
    x, y = ctx.split("members")
    arch = ctx.model_arch()
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    model = seeded_model(arch["name"], seed=0, **kwargs)
    defense, public = config.defense(), ctx.split("public")
    with measured() as cost:
        if method in ("dp-sgd", "ladp"):
            section = config.train_ladp if method == "ladp" else config.train_dpsgd
            dp: LADPConfig = section.with_values(epsilon=DP_EPSILON, epochs=epochs).ladp_config()
            build_engine(method, model, x, y, config=dp, seed=0, public=public).run()
        elif defense is not None:
            defense.train(arch, (x, y), public=public, plan=config.train.plan(), seed=0)
        else:
            t = config.train
            fit(model, x, y, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, seed=0)
    return cost.to_dict()


def _spawn(method: str, epochs: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_defenses", method, str(epochs)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cost_table(rounds: int, epochs: int) -> str:
    names = methods()
    ratios: dict[str, dict[str, list[float]]] = {m: {"seconds": [], "memory": []} for m in names}
    absolute: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    for r in range(rounds):
        measured = {m: _spawn(m, epochs) for m in names}  # one round: every method, in order
        base = measured["undefended"]
        for m, cost in measured.items():
            absolute[m].append(cost)
            ratios[m]["seconds"].append(cost["seconds"] / base["seconds"])
            ratios[m]["memory"].append(
                cost["peak_memory_bytes"] / max(base["peak_memory_bytes"], 1)
            )
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    lines = [
        "| method | seconds (median) | × undefended [min, max] | peak memory MB (median) "
        "| × undefended [min, max] |",
        "|---|---|---|---|---|",
    ]
    for m in names:
        secs = statistics.median(c["seconds"] for c in absolute[m])
        mem = statistics.median(c["peak_memory_bytes"] for c in absolute[m]) / 2**20
        rs, rm = ratios[m]["seconds"], ratios[m]["memory"]
        lines.append(
            f"| {m} | {secs:.1f} | {statistics.median(rs):.2f} [{min(rs):.2f}, {max(rs):.2f}] | "
            f"{mem:.0f} | {statistics.median(rm):.2f} [{min(rm):.2f}, {max(rm):.2f}] |"
        )
    return "\n".join(lines)


def headline(study_dir: Path) -> str:
    if not (study_dir / "study.md").is_file():
        subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "compare-defenses", "--out", str(study_dir)],
            check=True,
        )
    text = (study_dir / "study.md").read_text()
    start = text.index("## Defenses against DP at equal test accuracy")
    end = text.index("## Every method")
    table = text[start:end].split("\n", 1)[1].strip()
    return (
        "From `pipeline compare-defenses --model cnn` (its study.md has every table and "
        "figure; the README gives its wall time). Strongest attack's TPR at 1% "
        "FPR on 250 member vs 250 non-member canaries, 95% bootstrap interval; the DP model of "
        "equal test accuracy interpolated on the ε grid 1, 3, 8, 30, 100.\n\n" + table
    )


def run() -> str:
    rounds = int(os.environ.get("PRIVCOMP_BENCH_ROUNDS", "3"))
    epochs = int(os.environ.get("PRIVCOMP_BENCH_DEFENSE_EPOCHS", "5"))
    study_dir = Path(os.environ.get("PRIVCOMP_BENCH_STUDY", "runs/defense-study-cnn"))
    return (
        "### Training cost relative to the undefended model\n\n"
        f"cnn on mnist5k's members, {epochs} epochs each (DP: ε = {DP_EPSILON:g}, the other "
        f"[train-*] settings at their defaults), {rounds} interleaved rounds, each training in a "
        "fresh process with one torch thread. The ratios replace the original study's stars."
        "\n\n"
        f"{cost_table(rounds, epochs)}\n\n"
        "### The defense study's headline: each defense against DP at equal test accuracy\n\n"
        f"{headline(study_dir)}\n"
    )


if __name__ == "__main__":
    print(json.dumps(measure_one(sys.argv[1], int(sys.argv[2]))))
