"""Measuring an artifact: test accuracy, size, and the membership-inference attack suite.

Shadow models are the attacker's: trained on the population split with the non-private recipe,
once per run, cached under references/ and reused for every stage's artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from attacks.shadow import ShadowSet, train_shadows
from attacks.suite import ATTACKS, run_attacks
from models.training import accuracy, fit
from models.zoo import seeded_model
from pipelines.artifacts import artifact_bytes, artifact_params, open_target
from pipelines.context import RunContext
from pipelines.errors import PrivcompError

SHADOW_DIR = Path("references") / "shadows"


def check_attack_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        known = ", ".join(sorted(ATTACKS))
        raise PrivcompError(f"unknown attack(s): {', '.join(unknown)} (known: {known})")


def measure_artifact(
    ctx: RunContext, name: str, path: Path, *, with_attacks: bool
) -> dict[str, Any]:
    """The summary fields of one artifact: utility, size and (optionally) attacks."""
    target = open_target(name, path)
    x_test, y_test = ctx.split("test")
    result: dict[str, Any] = {
        "utility": {"test_accuracy": accuracy(target.predict_logits(x_test), y_test)},
        "size": {"params": artifact_params(name, path), "bytes": artifact_bytes(name, path)},
        "attacks": {},
    }
    if with_attacks:
        result["attacks"] = _attack(ctx, target)
    return result


def _attack(ctx: RunContext, target: Any) -> dict[str, Any]:
    cfg = ctx.config["evaluate"]
    members, nonmembers = _balanced_pair(ctx, int(cfg["samples"]))
    x_pop, y_pop = ctx.split("population")
    with ctx.reporter.task("attacks") as progress:
        metrics = run_attacks(
            target,
            members=members,
            nonmembers=nonmembers,
            shadows=shadow_set(ctx),
            x_pop=x_pop,
            y_pop=y_pop,
            names=list(cfg["attacks"]),
            delta=float(cfg["delta"]),
            seed=ctx.seed,
            progress=progress,
        )
    return {attack: m.to_dict() for attack, m in metrics.items()}


def _balanced_pair(
    ctx: RunContext, samples: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Equally many members and non-members, drawn with the run's seed."""
    m_idx, n_idx = ctx.splits["members"], ctx.splits["nonmembers"]
    k = min(samples, len(m_idx), len(n_idx))
    if k < 10:
        raise PrivcompError(f"too few members/non-members to attack ({k}); enlarge the splits")
    rng = np.random.default_rng(ctx.seed + 1)
    pair = []
    for idx in (m_idx, n_idx):
        chosen = np.sort(rng.choice(idx, size=k, replace=False))
        pair.append((ctx.dataset.x[chosen], ctx.dataset.y[chosen]))
    return pair[0], pair[1]


def shadow_set(ctx: RunContext) -> ShadowSet:
    """Load the run's shadow models, or train them once if missing or made with other settings."""
    directory = ctx.run_dir / SHADOW_DIR
    recipe = _shadow_recipe(ctx)
    record = directory / "recipe.json"
    if record.exists() and json.loads(record.read_text()) == recipe:
        return ShadowSet.load(directory)
    arch = ctx.model_arch()
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    train_cfg = ctx.config["train"]

    def build(i: int) -> nn.Module:
        return seeded_model(arch["name"], seed=ctx.seed + 1000 + i, **kwargs)

    def train(model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
        return fit(
            model,
            x,
            y,
            epochs=recipe["epochs"],
            batch_size=int(train_cfg["batch_size"]),
            lr=float(train_cfg["lr"]),
            seed=seed,
        )

    x_pop, y_pop = ctx.split("population")
    with ctx.reporter.task(f"shadow models ({recipe['k']})") as progress:
        shadows = train_shadows(
            x_pop, y_pop, k=recipe["k"], build=build, train=train, seed=ctx.seed, progress=progress
        )
    shadows.save(directory, arch=arch)
    record.write_text(json.dumps(recipe))
    return shadows


def _shadow_recipe(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.config["evaluate"]
    return {
        "k": int(cfg["shadow_models"]),
        "epochs": int(cfg["shadow_epochs"]),
        "model": ctx.model_arch(),
        "train": ctx.config["train"],
        "seed": ctx.seed,
    }
