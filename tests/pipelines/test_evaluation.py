"""Evaluation inside a run: the candidate pool, reference models trained once and reused, the
executors, and what `measure` returns (the mirror: test_mirror.py)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from attacks.references import TrainRecipe, read_membership
from models.errors import UserError
from models.io import save_model
from models.training import ProgressFn, fit
from models.zoo import seeded_model
from pipelines.config import Config, load_config
from pipelines.context import RunContext
from pipelines.data import load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.evaluation import (
    candidate_pool,
    measure,
    reference_set,
    train_recipe,
)
from pipelines.executors import LocalExecutor, SerialExecutor, make_executor
from pipelines.ledger import Ledger
from pipelines.measurements import MeasurementStore
from pipelines.mirror import mirror_steps
from pipelines.progress import Reporter
from pipelines.recipes import DefenseRecipe, DPRecipe
from pipelines.runner import build_context
from pipelines.settings.run import ModelSettings
from pipelines.stages import STAGES
from tests.conftest import TINY

ATTACK_KEYS = {
    "auc",
    "auc_ci",
    "balanced_accuracy",
    "advantage",
    "tpr_at_1pct_fpr",
    "tpr_at_0_1pct_fpr",
    "epsilon_lower_bound",
    "report",
}
FAST = [
    "run.model=mlp",
    'run.executor="serial"',
    "evaluate.shadow_models=2",
    "evaluate.shadow_epochs=2",
    'evaluate.attacks=["loss", "shadow", "lira", "lira-offline", "rmia", "gap"]',
]


def _recording(steps: list[tuple[int, int]]) -> Any:
    @contextmanager
    def task(description: str) -> Iterator[ProgressFn]:
        yield lambda done, total: steps.append((done, total))

    return task


def make_ctx(run_dir: Path, *overrides: str) -> RunContext:
    config = load_config(None, [*TINY, *FAST, *overrides])
    # the mlp (TINY's widths are the cnn's)
    config = Config({**config.sections, "model": ModelSettings(values={"hidden": 32})})
    dataset = load_dataset("digits")
    splits = make_splits(len(dataset.y), seed=0, fractions=config.data.fractions())
    reporter = Reporter(Console(file=io.StringIO()))
    ctx = RunContext(run_dir, config, dataset, splits, reporter)
    ctx.history = ["train"]
    return ctx


def weights_mtime(ctx: RunContext) -> int:
    return (ctx.run_dir / "references" / "ref-00" / "model.safetensors").stat().st_mtime_ns


def test_references_are_trained_once_and_reused(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    first = reference_set(ctx)
    stamp = weights_mtime(ctx)
    ctx.history = ["train", "prune"]  # a later stage: the same references (mirror is off)
    again = reference_set(ctx)
    assert weights_mtime(ctx) == stamp
    np.testing.assert_array_equal(again.logits, first.logits)
    np.testing.assert_array_equal(again.membership, first.membership)
    # The membership matrix is recorded against data set indices of the candidate pool.
    membership, record = read_membership(tmp_path / "references")
    candidates = candidate_pool(ctx)
    np.testing.assert_array_equal(record["pool"], candidates.indices)
    assert membership.shape == (2, len(candidates.indices))
    assert (membership.sum(axis=0) == 1).all()  # a complementary pair
    timing = json.loads((tmp_path / "references" / "timing.json").read_text())
    assert len(timing["train_seconds"]) == 2
    # A changed recipe retrains.
    ctx.config = ctx.config.with_values("evaluate", shadow_epochs=3)
    reference_set(ctx)
    assert weights_mtime(ctx) != stamp
    recipe = json.loads((tmp_path / "references" / "recipe.json").read_text())
    assert recipe["recipe"]["epochs"] == 3


def test_the_evaluation_pair_is_the_same_for_every_stage(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    first = candidate_pool(ctx)
    ctx.history = ["train", "prune", "quantize"]
    again = candidate_pool(ctx)
    np.testing.assert_array_equal(first.indices, again.indices)
    pool = first.pool
    assert len(pool.members) == len(pool.nonmembers) == 60
    assert set(first.indices[pool.members]) <= set(ctx.splits["members"].tolist())
    assert set(first.indices[pool.nonmembers]) <= set(ctx.splits["nonmembers"].tolist())
    np.testing.assert_array_equal(np.sort(first.indices[pool.population]), ctx.splits["population"])


def test_measure_reports_every_attack_and_roc_curves(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    x, y = ctx.split("members")
    arch = ctx.model_arch()
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    model = fit(seeded_model("mlp", seed=0, **kwargs), x, y, epochs=3)
    save_model(model, tmp_path / "01-train", arch=arch)
    names = list(ctx.config.evaluate.attacks)
    result = measure(ctx, "model", tmp_path / "01-train", attacks=names).to_json()
    json.dumps(result, allow_nan=False)
    assert list(result["attacks"]) == names and list(result["roc"]) == names
    for name in names:
        assert set(result["attacks"][name]) >= ATTACK_KEYS, name
        assert "roc" not in result["attacks"][name]  # curves stay out of summary.json
        roc = result["roc"][name]
        assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and len(roc["tpr"]) == len(roc["fpr"])
    assert set(result["attacks"]["shadow"]["report"]) >= {"macro_f1", "weighted_recall"}
    ctx.measurements = MeasurementStore()
    plain = measure(ctx, "model", tmp_path / "01-train", attacks=[])
    assert plain.attacks == {} and plain.roc == {}
    assert plain.utility == result["utility"] and plain.size == result["size"]
    again = measure(ctx, "model", tmp_path / "01-train", attacks=["loss"])
    assert again.attacks["loss"] == result["attacks"]["loss"]  # each attack on its own


@pytest.mark.parametrize(
    ("stage", "engine", "extra"),
    [
        ("train-ladp", "ladp", []),
        ("train-dpsgd", "dp-sgd", []),
        ("train-ladp", "ladp", ["train-ladp.lr=[0.05, 0.2]"]),  # a private search
    ],
)
def test_reference_recipe_target_follows_the_training_stage(
    tmp_path: Path, stage: str, engine: str, extra: list[str]
) -> None:
    """References trained like the target: its engine, settings, the candidate a search chose
    and the noise multiplier it trained with (from the ledger)."""
    ctx = make_ctx(tmp_path, 'evaluate.reference_recipe="target"', *extra)
    planned = STAGES[stage](ctx.config.section(stage)).planned_spend(ctx)
    chosen = {"lr": 0.2} if extra else {}
    details = {**planned.details, "chosen": chosen} if extra else planned.details
    ctx.ledger = Ledger()
    ctx.ledger.record(stage, replace(planned, details=details))
    ctx.history = [stage, "prune"]
    recipe, described = train_recipe(ctx)
    assert described == f"target ({stage})" and recipe.dp is not None
    assert recipe.engine == engine
    assert recipe.dp["noise_multiplier"] == planned.details["noise_multiplier"]
    assert recipe.dp["lr"] == (0.2 if extra else ctx.config.section(stage).lr)
    assert recipe.dp["allocation" if stage == "train-ladp" else "epsilon"] is not None
    ctx.history = ["train"]
    recipe, _ = train_recipe(ctx)
    assert recipe == TrainRecipe(epochs=3, batch_size=64, lr=1e-3)  # TINY's [train]
    ctx.config = ctx.config.with_values("evaluate", reference_recipe="train")
    assert train_recipe(ctx)[0].epochs == 2  # evaluate.shadow_epochs
    # "auto" (the default): like the target when it is DP-trained, Adam otherwise.
    ctx.config = ctx.config.with_values("evaluate", reference_recipe="auto")
    assert train_recipe(ctx) == (TrainRecipe(epochs=2, batch_size=64, lr=1e-3), "train")
    ctx.history = [stage]
    assert train_recipe(ctx)[1] == f"target ({stage})"


def test_references_of_dpsgd_use_its_per_example_source(tmp_path: Path) -> None:
    """[train-dpsgd] per_example = "privcomp": planned in the ledger, and the references' recipe
    builds the same engine (privcomp's clipping, not Opacus's)."""
    ctx = make_ctx(
        tmp_path, 'evaluate.reference_recipe="target"', 'train-dpsgd.per_example="privcomp"'
    )
    planned = STAGES["train-dpsgd"](ctx.config.section("train-dpsgd")).planned_spend(ctx)
    assert planned.details["engine"] == "dp-sgd" and planned.details["per_example"] == "privcomp"
    ctx.ledger = Ledger()
    ctx.ledger.record("train-dpsgd", planned)
    ctx.history = ["train-dpsgd"]
    recipe, _ = train_recipe(ctx)
    assert isinstance(recipe, DPRecipe) and recipe.dp["per_example"] == "privcomp"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('evaluate.attacks=["nope"]', "unknown attack"),
        ('evaluate.reference_recipe="dp"', "reference_recipe"),
        ('run.executor="nosuch"', "executor"),
        ('evaluate.augment="flip"', "augment"),
        ("run.workers=0", "workers"),
        ("evaluate.shadow_models=1", "shadow_models"),
    ],
)
def test_bad_evaluate_settings_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):  # an AttackError for the attack names
        load_config(None, [*TINY, override])


def test_executors_map_in_order_and_raise_job_errors() -> None:
    assert SerialExecutor().map(math.sqrt, [4.0, 9.0]) == [2.0, 3.0]
    assert isinstance(make_executor("local", workers=2), LocalExecutor)
    with pytest.raises(PrivcompError, match="unknown executor"):
        make_executor("nosuch")
    # A job that fails in a worker process fails the map, with its own error.
    with pytest.raises(ValueError, match="math domain error"):
        LocalExecutor(workers=1).map(math.sqrt, [1.0, -1.0])


def test_process_pool_trains_the_same_references_as_serial(tmp_path: Path) -> None:
    """Picklable jobs (arch record, seeds, arrays): a worker builds the model from the registry."""
    serial_ctx = make_ctx(tmp_path / "serial")
    local_ctx = make_ctx(tmp_path / "local", 'run.executor="local"', "run.workers=2")
    serial = reference_set(serial_ctx)
    steps: list[tuple[int, int]] = []
    local_ctx.reporter.task = _recording(steps)  # type: ignore[method-assign]
    local = reference_set(local_ctx)
    assert steps[-1] == (2, 2)
    np.testing.assert_array_equal(serial.membership, local.membership)
    # Workers use one torch thread, the test process two: sums may round differently.
    np.testing.assert_allclose(serial.logits, local.logits, atol=1e-3)
    timing = json.loads((tmp_path / "local" / "references" / "timing.json").read_text())
    assert timing["workers"] == 2 and timing["executor"] == "local"


def test_the_canaries_join_the_evaluation_pair_apart(tmp_path: Path) -> None:
    config = load_config(None, [*TINY, *FAST, "data.canaries=20"])
    ctx = build_context(config, tmp_path, Reporter(Console(file=io.StringIO())))
    canaries = ctx.splits.canaries
    assert canaries is not None
    candidates = candidate_pool(ctx)
    pool, indices = candidates.pool, candidates.indices
    assert pool.canaries is not None and len(pool.canaries) == 40
    np.testing.assert_array_equal(indices[pool.canaries], np.sort(canaries.indices))
    # 60 + 60 others drawn as without canaries, plus every canary on its side of the pair.
    is_canary = np.isin(indices, canaries.indices)
    assert len(pool.members) == len(pool.nonmembers) == 80
    assert is_canary[pool.members].sum() == is_canary[pool.nonmembers].sum() == 20
    assert set(indices[pool.members]) >= set(canaries.members.tolist())
    assert set(indices[pool.nonmembers]) >= set(canaries.nonmembers.tolist())
    assert not is_canary[pool.population].any()
    # The pool carries the canaries' wrong labels (the references train on them).
    order = np.searchsorted(indices, canaries.indices)
    np.testing.assert_array_equal(pool.y[order], canaries.labels)


def test_the_latest_training_stage_says_what_the_artifact_is(tmp_path: Path) -> None:
    """A later training stage starts a new lineage: its model, not the first one's, is the one
    the references are trained like and whose defense the artifact carries."""
    ctx = make_ctx(tmp_path, 'train.defense="l2"')
    ctx.history = ["train-ladp", "prune", "train"]
    assert ctx.trained_by == "train" and ctx.defense() is not None
    assert mirror_steps(ctx) == []  # the prune was the earlier lineage's
    ctx.history = ["train", "prune", "train-ladp"]
    assert ctx.trained_by == "train-ladp" and ctx.defense() is None
    ctx.history = ["train", "distill"]  # a student trained on the public split
    assert ctx.trained_by == "train" and ctx.defense() is None
    ctx.history = ["train-ladp", "prune", "distill"]
    assert (ctx.trained_at, ctx.model_made_at) == (0, 2)
    assert mirror_steps(ctx) == []  # the prune was the teacher's
    ctx.history = ["train", "distill", "train"]
    assert ctx.defense() is not None
    ctx.history = []
    assert (ctx.trained_by, ctx.trained_at, ctx.model_made_at, ctx.defense()) == (None, 0, 0, None)


def test_a_defended_target_gets_references_trained_with_its_defense(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, 'train.defense="l2"', "defense.l2.weight=0.05")
    recipe, described = train_recipe(ctx)  # "auto": adaptive for a defended target
    assert isinstance(recipe, DefenseRecipe) and described == "target (train, defense l2)"
    assert recipe.to_dict()["settings"] == {"weight": 0.05}
    assert recipe.plan == ctx.config.train.plan()
    ctx.config = ctx.config.with_values("evaluate", reference_recipe="train")
    assert train_recipe(ctx)[1] == "train"  # the cheap, non-adaptive recipe on request
