"""Measuring an artifact: test accuracy, size, and the membership-inference attack suite.

Reference models are the auditor's: trained once per run on random halves of the candidate pool
(the evaluation pair, which is the same for every stage, plus the population split), cached under
references/ and reused by every stage's evaluation. With evaluate.mirror the references also go
through the compression stages the artifact went through (pruned, exported, quantized), each
mirrored set cached under references/mirror-<steps>/. With evaluate.reference_cache they live in a
shared cache instead, one folder per recipe record (pipelines.reference_cache), so that run dirs
that attack the same pool with the same recipe (a sweep's points) train them once.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from attacks.references import ReferenceSet, TrainRecipe, train_references
from attacks.suite import Pool, attacks_for_release, run_attacks
from attacks.target import LabelOnlyTarget, LabelTarget, Target
from models.training import accuracy
from pipelines.artifacts import (
    artifact_bytes,
    artifact_hash,
    artifact_macs,
    artifact_params,
    open_target,
)
from pipelines.config import Config
from pipelines.context import DP_TRAINING_STAGES, TRAINING_STAGES, RunContext
from pipelines.errors import PrivcompError
from pipelines.executors import Executor
from pipelines.measurements import Measurement
from pipelines.mirror import MIRRORED_STAGES, mirror_steps, mirrored_set
from pipelines.recipes import DefenseRecipe, DPRecipe
from pipelines.reference_cache import (
    RECIPE,
    REFERENCE_DIR,
    cache_root,
    clear,
    ensure_logits,
    guarded,
    is_cached,
    record_digest,
)
from pipelines.rundir import read_json, write_json
from pipelines.settings.training import DPTrainingSettings

TIMING = "timing.json"
ROC_POINTS = 100  # log-spaced points of each ROC curve kept in metrics.json

__all__ = ["measure", "measure_latest", "reference_set", "wanted_attacks"]


def measure_latest(ctx: RunContext, *, final: bool, audit: Sequence[str] = ()) -> Measurement:
    """The measurement of the latest artifact after the current stage: accuracy and size always,
    attacks per run.evaluate and the stage's `audit` attacks. What the stage's metrics.json
    already holds of this same artifact (a resumed run) and what the store has are reused."""
    assert ctx.latest is not None
    path = ctx.artifacts[ctx.latest]
    on_disk = ctx.stage_dir / "metrics.json"
    if on_disk.exists():
        earlier = Measurement.from_json(read_json(on_disk))
        if earlier is not None and earlier.artifact == artifact_hash(ctx.latest, path):
            ctx.measurements.put(earlier)
    wanted = wanted_attacks(ctx.config, final=final, audit=audit)
    return measure(ctx, ctx.latest, path, attacks=wanted)


def wanted_attacks(config: Config, *, final: bool, audit: Sequence[str] = ()) -> list[str]:
    """The attacks measure_latest asks for after a stage (before attacks_for_release fits them
    to what the artifact releases): evaluate.attacks per run.evaluate, then the stage's audit."""
    mode = config.run.evaluate
    attacked = mode == "each" or (final and mode == "last")
    return list(dict.fromkeys([*(config.evaluate.attacks if attacked else []), *audit]))


def measure(ctx: RunContext, name: str, path: Path, *, attacks: list[str]) -> Measurement:
    """Accuracy, size and the named attacks of one artifact, through the run's store: only what
    the store does not hold yet is measured.

    With attacks, "roc" holds each attack's ROC curve ({"fpr", "tpr"}, log-spaced points) for
    metrics.json; the summary takes only utility, size and attacks.
    """
    release = released_output(ctx)
    attacks = attacks_for_release(attacks, release)
    digest = artifact_hash(name, path)
    known = ctx.measurements.get(digest)
    missing = [a for a in attacks if known is None or a not in known.attacks]
    if known is not None and not missing:
        return known
    target = open_target(name, path)
    queried: Target | LabelTarget = LabelOnlyTarget(target) if release == "labels" else target
    if known is None:
        x_test, y_test = ctx.split("test")
        known = Measurement(
            artifact=digest,
            utility={"test_accuracy": accuracy(target.predict_logits(x_test), y_test)},
            size={
                "params": artifact_params(name, path),
                "bytes": artifact_bytes(name, path),
                "macs": artifact_macs(name, path, ctx.dataset.in_shape),
            },
        )
    if missing:
        summary, roc = _attack(ctx, queried, missing)
        known = known.merged(replace(known, attacks=summary, roc=roc))
    return ctx.measurements.put(known)


def released_output(ctx: RunContext) -> str:
    """What the latest artifact answers a query with (privacy.defenses.RELEASES): a defended
    model's release, full scores otherwise."""
    defense = ctx.defense()
    return defense.release if defense is not None else "scores"


def _attack(
    ctx: RunContext, target: Target | LabelTarget, names: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    candidates = candidate_pool(ctx)
    references = reference_set(ctx, candidates)
    with ctx.reporter.task("attacks") as progress:
        metrics = run_attacks(
            target,
            pool=candidates.pool,
            references=references,
            names=names,
            delta=ctx.config.evaluate.delta,
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
    """Equally many members and non-members (data set indices), drawn with the run's seed from
    those that are not canaries: the same pair for every stage of a run."""
    m_idx, n_idx = ctx.splits["members"], ctx.splits["nonmembers"]
    canaries = ctx.splits.canaries
    if canaries is not None:
        m_idx, n_idx = (
            np.setdiff1d(m_idx, canaries.members),
            np.setdiff1d(n_idx, canaries.nonmembers),
        )
    k = min(samples, len(m_idx), len(n_idx))
    if k < 10:
        raise PrivcompError(f"too few members/non-members to attack ({k}); enlarge the splits")
    rng = np.random.default_rng(ctx.seed + 1)
    members = np.sort(rng.choice(m_idx, size=k, replace=False))
    nonmembers = np.sort(rng.choice(n_idx, size=k, replace=False))
    return members, nonmembers


def candidate_pool(ctx: RunContext) -> Candidates:
    """Evaluation pair + every canary (data.canaries) + population, in data set order (roles
    interleaved); the canaries are members and non-members of the pair, measured apart."""
    members, nonmembers = _balanced_pair(ctx, ctx.config.evaluate.samples)
    canaries = ctx.splits.canaries
    if canaries is not None:
        members = np.sort(np.concatenate([members, canaries.members]))
        nonmembers = np.sort(np.concatenate([nonmembers, canaries.nonmembers]))
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
        canaries=None if canaries is None else np.searchsorted(indices, np.sort(canaries.indices)),
    )
    return Candidates(indices=indices, pool=pool)


# ---- reference models -----------------------------------------------------------------------


def _executor(ctx: RunContext) -> Executor:
    return ctx.executor()  # [run] executor, kept for the run


def train_recipe(ctx: RunContext) -> tuple[TrainRecipe | DPRecipe | DefenseRecipe, str]:
    """The references' recipe and a one-line description of it.

    "train": Adam with the [train] settings for evaluate.shadow_epochs (cheap);
    "target": the recipe of the run's training stage. For a DP stage that is a DPRecipe: its
    engine and settings, the candidate a private search chose, the noise multiplier the target was
    trained with (read from the ledger), so that each reference step is the target's mechanism,
    and the public split its allocation reads;
    with a defense ([train] defense) it is a DefenseRecipe: the same defense and settings;
    "auto" (the default): "target" for a DP-trained or defended artifact, "train" otherwise.
    """
    cfg, train = ctx.config.evaluate, ctx.config.train
    adam = TrainRecipe(
        epochs=cfg.shadow_epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        weight_decay=train.weight_decay,
    )
    trained_by = ctx.trained_by or "train"
    defense = ctx.defense()
    recipe = cfg.reference_recipe
    if recipe == "auto":
        # The stronger recipe on DP targets (BENCHMARKS.md, references); the adaptive one on
        # defended targets (Aerni et al. 2024: references trained with the same defense).
        recipe = "target" if trained_by in DP_TRAINING_STAGES or defense else "train"
    if recipe == "train":
        return adam, "train"
    if defense is not None:
        like_defended = DefenseRecipe(
            defense=defense, plan=train.plan(), arch=ctx.model_arch(), public=ctx.split("public")
        )
        return like_defended, f"target (train, defense {defense.name})"
    if trained_by == "train-fl":
        # No recipe replays a federation (its clients, rounds and aggregation): the Adam one.
        return adam, "train (train-fl has no target recipe)"
    if trained_by == "train":
        return TrainRecipe(
            epochs=train.epochs,
            batch_size=adam.batch_size,
            lr=adam.lr,
            weight_decay=adam.weight_decay,
        ), "target (train)"
    spent = _training_spend(ctx, trained_by)
    section = ctx.config.section(trained_by)
    assert isinstance(section, DPTrainingSettings)
    dp = section.space().released_settings(spent)
    like_target = DPRecipe(engine=str(spent["engine"]), dp=dp, public=ctx.split("public"))
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
    """The run's references for the latest artifact: trained once, mirrored when configured.

    They live in the run dir's references/, or, with evaluate.reference_cache, in the shared
    cache's folder of this record and data (pipelines.reference_cache), locked while used."""
    candidates = candidates or candidate_pool(ctx)
    cfg = ctx.config.evaluate
    recipe, described = train_recipe(ctx)
    record = {
        "k": cfg.shadow_models,
        "model": ctx.model_arch(),
        "recipe": recipe.to_dict(),
        "reference_recipe": described,
        "seed": ctx.seed,
        "dataset": ctx.dataset.name,
        "pool": _pool_digest(candidates.indices),
    }
    root = cache_root(cfg.reference_cache, ctx.run_dir)
    shared = root is not None
    if root is None:
        base = ctx.run_dir / REFERENCE_DIR
    else:
        # What the references depend on beyond the record: the pool's images and labels (the
        # canaries' included) and the public split a recipe may read.
        data = [candidates.pool.x, candidates.pool.y, *ctx.split("public")]
        base = root / record_digest(record, data)
    with guarded(base, shared=shared):
        refs = _trained_or_cached(ctx, base, record, recipe, described, candidates, shared=shared)
    return _mirrored(ctx, refs, candidates, base, shared=shared) if cfg.mirror else refs


def _trained_or_cached(
    ctx: RunContext,
    base: Path,
    record: dict[str, Any],
    recipe: TrainRecipe | DPRecipe | DefenseRecipe,
    described: str,
    candidates: Candidates,
    *,
    shared: bool,
) -> ReferenceSet:
    cfg = ctx.config.evaluate
    augment = cfg.augment
    x, y = candidates.pool.x, candidates.pool.y
    if is_cached(base, record):
        ensure_logits(base, augment, x)
        if shared:
            ctx.reporter.info(f"  reference models: reusing {escape(str(base))}")
        return ReferenceSet.load(base, augment=augment)
    if shared:
        clear(base)  # an attempt that did not finish (a shared folder has one record)
    elif base.exists():
        shutil.rmtree(base)  # made with another recipe or pool: retrain (mirrors included)
    executor, run = _executor(ctx), ctx.config.run
    workers = 1 if run.executor == "serial" else run.workers
    label = f"reference models ({cfg.shadow_models}, {described}, {workers} worker(s))"
    start = time.perf_counter()
    with ctx.reporter.task(label) as progress:
        refs = train_references(
            x,
            y,
            k=cfg.shadow_models,
            arch=ctx.model_arch(),
            recipe=recipe,
            seed=ctx.seed,
            directory=base,
            augment=augment,
            executor=executor,
            progress=progress,
            pool=candidates.indices,
        )
    timing = {
        "wall_seconds": round(time.perf_counter() - start, 3),
        "train_seconds": [round(s, 3) for s in refs.seconds],
        "executor": run.executor,
        "workers": workers,
    }
    write_json(base / TIMING, timing)
    write_json(base / RECIPE, record)  # last: the folder counts as cached from here on
    return refs


def _mirrored(
    ctx: RunContext, refs: ReferenceSet, candidates: Candidates, base: Path, *, shared: bool
) -> ReferenceSet:
    """The references passed through the latest artifact's compression (pipelines.mirror)."""
    since = ctx.history[ctx.model_made_at :]
    skipped = [s for s in since if s not in (*MIRRORED_STAGES, *TRAINING_STAGES, "evaluate")]
    if skipped:
        ctx.reporter.info(f"  mirror: references are not passed through {', '.join(skipped)}")
    steps = mirror_steps(ctx)
    if not steps:
        return refs
    pool, x, executor = candidates.indices, candidates.pool.x, _executor(ctx)
    with guarded(base, shared=shared):
        return mirrored_set(
            ctx, steps, refs, root=base, shared=shared, pool=pool, x=x, executor=executor
        )
