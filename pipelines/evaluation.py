"""Measuring an artifact: test accuracy, size, and the membership-inference attack suite.

Reference models are the auditor's: trained once per run on random halves of the candidate pool
(the evaluation pair, which is the same for every stage, plus the population split), cached under
references/ and reused by every stage's evaluation. With evaluate.mirror the references also go
through the compression stages the artifact went through (pruned, exported, quantized), each
mirrored set cached under references/mirror-<steps>/.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks.references import ReferenceSet, TrainRecipe, train_references
from attacks.signals import AUGMENTATIONS
from attacks.suite import Pool, check_attack_names, run_attacks
from attacks.target import Target
from models.training import accuracy
from pipelines.artifacts import artifact_bytes, artifact_macs, artifact_params, open_target
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.executors import EXECUTORS, Executor, make_executor
from pipelines.mirror import MIRRORED_STAGES, mirror_steps, mirrored_set
from pipelines.reference_cache import RECIPE, REFERENCE_DIR, ensure_logits, is_cached
from pipelines.rundir import write_json
from privacy.search import SearchSpace

TIMING = "timing.json"
RECIPES = ("auto", "train", "target")
DP_TRAINING_STAGES = ("train-ladp", "train-dpsgd")
TRAINING_STAGES = ("train", "train-ladp", "train-dpsgd")
ROC_POINTS = 100  # log-spaced points of each ROC curve kept in metrics.json

__all__ = ["check_attack_names", "check_evaluate_config", "measure_artifact", "reference_set"]


def check_evaluate_config(cfg: dict[str, Any]) -> None:
    """One-line errors for bad [evaluate] settings, before anything is trained."""
    check_attack_names(list(cfg["attacks"]))
    if cfg["reference_recipe"] not in RECIPES:
        raise PrivcompError(f"evaluate.reference_recipe must be one of {', '.join(RECIPES)}")
    if cfg["executor"] not in EXECUTORS:
        raise PrivcompError(f"evaluate.executor must be one of {', '.join(sorted(EXECUTORS))}")
    if cfg["augment"] not in AUGMENTATIONS:
        raise PrivcompError(f"evaluate.augment must be one of {', '.join(AUGMENTATIONS)}")
    if int(cfg["workers"]) < 1:
        raise PrivcompError("evaluate.workers must be >= 1")
    if int(cfg["shadow_models"]) < 2 or int(cfg["shadow_epochs"]) < 1:
        raise PrivcompError("evaluate.shadow_models must be >= 2 and shadow_epochs >= 1")


def measure_artifact(
    ctx: RunContext, name: str, path: Path, *, with_attacks: bool
) -> dict[str, Any]:
    """The summary fields of one artifact: utility, size and (optionally) attacks.

    With attacks, "roc" holds each attack's ROC curve ({"fpr", "tpr"}, log-spaced points) for
    metrics.json; the summary takes only utility, size and attacks.
    """
    target = open_target(name, path)
    x_test, y_test = ctx.split("test")
    result: dict[str, Any] = {
        "utility": {"test_accuracy": accuracy(target.predict_logits(x_test), y_test)},
        "size": {
            "params": artifact_params(name, path),
            "bytes": artifact_bytes(name, path),
            "macs": artifact_macs(name, path, ctx.dataset.in_shape),
        },
        "attacks": {},
    }
    if with_attacks and ctx.config["evaluate"]["attacks"]:
        result["attacks"], result["roc"] = _attack(ctx, target)
    return result


def _attack(ctx: RunContext, target: Target) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = ctx.config["evaluate"]
    check_evaluate_config(cfg)
    candidates = candidate_pool(ctx)
    references = reference_set(ctx, candidates)
    with ctx.reporter.task("attacks") as progress:
        metrics = run_attacks(
            target,
            pool=candidates.pool,
            references=references,
            names=list(cfg["attacks"]),
            delta=float(cfg["delta"]),
            seed=ctx.seed,
            progress=progress,
        )
    summary = {attack: m.to_dict() for attack, m in metrics.items()}
    roc = {attack: m.to_dict(roc_points=ROC_POINTS)["roc"] for attack, m in metrics.items()}
    return summary, roc


# ---- the candidate pool ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Candidates:
    indices: np.ndarray  # data set index of each pool position (sorted)
    pool: Pool


def _balanced_pair(ctx: RunContext, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Equally many members and non-members (data set indices), drawn with the run's seed: the
    same pair for every stage of a run."""
    m_idx, n_idx = ctx.splits["members"], ctx.splits["nonmembers"]
    k = min(samples, len(m_idx), len(n_idx))
    if k < 10:
        raise PrivcompError(f"too few members/non-members to attack ({k}); enlarge the splits")
    rng = np.random.default_rng(ctx.seed + 1)
    members = np.sort(rng.choice(m_idx, size=k, replace=False))
    nonmembers = np.sort(rng.choice(n_idx, size=k, replace=False))
    return members, nonmembers


def candidate_pool(ctx: RunContext) -> Candidates:
    """Evaluation pair + population, in data set order (roles interleaved)."""
    members, nonmembers = _balanced_pair(ctx, int(ctx.config["evaluate"]["samples"]))
    population = np.asarray(ctx.splits["population"])
    if len(population) < 2:
        raise PrivcompError("the attacks need a population split (data.population > 0)")
    indices = np.sort(np.concatenate([members, nonmembers, population]))
    pool = Pool(
        x=ctx.dataset.x[indices],
        y=ctx.dataset.y[indices],
        members=np.searchsorted(indices, members),
        nonmembers=np.searchsorted(indices, nonmembers),
        population=np.searchsorted(indices, population),
    )
    return Candidates(indices=indices, pool=pool)


# ---- reference models -----------------------------------------------------------------------


def _executor(ctx: RunContext) -> Executor:
    cfg = ctx.config["evaluate"]
    return make_executor(str(cfg["executor"]), workers=int(cfg["workers"]))


def train_recipe(ctx: RunContext) -> tuple[TrainRecipe, str]:
    """The references' recipe and a one-line description of it.

    "train": Adam with the [train] settings for evaluate.shadow_epochs (cheap);
    "target": the recipe of the run's training stage. For a DP stage that is its engine and
    settings, the candidate a private search chose, and the noise multiplier the target was
    trained with (read from the ledger), so that each reference step is the target's mechanism;
    "auto" (the default): "target" for a DP-trained artifact, "train" otherwise.
    """
    cfg, train = ctx.config["evaluate"], ctx.config["train"]
    adam = TrainRecipe(
        epochs=int(cfg["shadow_epochs"]),
        batch_size=int(train["batch_size"]),
        lr=float(train["lr"]),
        weight_decay=float(train["weight_decay"]),
    )
    trained_by = next((s for s in ctx.history if s in TRAINING_STAGES), "train")
    recipe = cfg["reference_recipe"]
    if recipe == "auto":  # the stronger recipe on DP targets (BENCHMARKS.md, references)
        recipe = "target" if trained_by in DP_TRAINING_STAGES else "train"
    if recipe == "train":
        return adam, "train"
    if trained_by == "train":
        return TrainRecipe(
            epochs=int(train["epochs"]),
            batch_size=adam.batch_size,
            lr=adam.lr,
            weight_decay=adam.weight_decay,
        ), "target (train)"
    spent = _training_spend(ctx, trained_by)
    dp = SearchSpace.from_section(ctx.config[trained_by]).released_settings(spent)
    like_target = TrainRecipe(epochs=int(dp["epochs"]), dp=dp, engine=str(spent["engine"]))
    return like_target, f"target ({trained_by})"


def _training_spend(ctx: RunContext, stage: str) -> dict[str, Any]:
    """The details of the training stage's spend in the run's ledger."""
    entries = ctx.ledger.entries if ctx.ledger is not None else []
    found = [e for e in entries if e["stage"] == stage and e["kind"] == "dp"]
    if not found:
        raise PrivcompError(f"evaluate: no ledger entry of '{stage}' to train references like")
    return dict(found[-1])


def _pool_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def reference_set(ctx: RunContext, candidates: Candidates | None = None) -> ReferenceSet:
    """The run's references for the latest artifact: trained once, mirrored when configured."""
    candidates = candidates or candidate_pool(ctx)
    cfg = ctx.config["evaluate"]
    augment = str(cfg["augment"])
    base = ctx.run_dir / REFERENCE_DIR
    recipe, described = train_recipe(ctx)
    record = {
        "k": int(cfg["shadow_models"]),
        "model": ctx.model_arch(),
        "recipe": recipe.to_dict(),
        "reference_recipe": described,
        "seed": ctx.seed,
        "dataset": ctx.dataset.name,
        "pool": _pool_digest(candidates.indices),
    }
    x, y = candidates.pool.x, candidates.pool.y
    if not is_cached(base, record):
        if base.exists():
            shutil.rmtree(base)  # made with another recipe or pool: retrain (mirrors included)
        executor = _executor(ctx)
        workers = 1 if cfg["executor"] == "serial" else int(cfg["workers"])
        label = f"reference models ({cfg['shadow_models']}, {described}, {workers} worker(s))"
        start = time.perf_counter()
        with ctx.reporter.task(label) as progress:
            refs = train_references(
                x,
                y,
                k=int(cfg["shadow_models"]),
                arch=ctx.model_arch(),
                recipe=recipe,
                seed=ctx.seed,
                directory=base,
                augment=augment,
                executor=executor,
                progress=progress,
                pool=candidates.indices,
                public=ctx.split("public") if recipe.dp is not None else None,
            )
        timing = {
            "wall_seconds": round(time.perf_counter() - start, 3),
            "train_seconds": [round(s, 3) for s in refs.seconds],
            "executor": cfg["executor"],
            "workers": workers,
        }
        write_json(base / TIMING, timing)
        write_json(base / RECIPE, record)
    else:
        ensure_logits(base, augment, x)
        refs = ReferenceSet.load(base, augment=augment)
    return _mirrored(ctx, refs, candidates) if cfg["mirror"] else refs


def _mirrored(ctx: RunContext, refs: ReferenceSet, candidates: Candidates) -> ReferenceSet:
    """The references passed through the latest artifact's compression (pipelines.mirror)."""
    skipped = [s for s in ctx.history if s not in (*MIRRORED_STAGES, *TRAINING_STAGES, "evaluate")]
    if skipped:
        ctx.reporter.info(f"  mirror: references are not passed through {', '.join(skipped)}")
    steps = mirror_steps(ctx)
    if not steps:
        return refs
    pool, x, executor = candidates.indices, candidates.pool.x, _executor(ctx)
    return mirrored_set(ctx, steps, refs, pool=pool, x=x, executor=executor)
