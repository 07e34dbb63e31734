"""One battery of checks run against every registered stage (scikit-learn's
`parametrize_with_checks` idea): the constructor only stores its config; bad settings are refused
before anything is written; what a stage declares it provides is what it returns; and the spend it
records is the mechanism it planned (same kind, data set, lineage, σ and q; no more steps) with an
ε no larger than planned. A new stage must add its entries here, or this test fails."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from models.errors import UserError
from pipelines.config import load_config
from pipelines.ledger import Ledger
from pipelines.progress import Reporter
from pipelines.rundir import read_json
from pipelines.runner import build_context, run_pipeline
from pipelines.spend import Spend
from pipelines.stages import STAGES
from tests.conftest import TINY

QUIET = Reporter(Console(file=io.StringIO()))

# A pipeline that reaches each stage, and the settings that make the stage spend what it can.
RECIPES: dict[str, tuple[list[str], list[str]]] = {
    "train": (["train"], []),
    "train-ladp": (["train-ladp"], []),
    "train-dpsgd": (["train-dpsgd"], []),
    "train-fl": (["train-fl"], ["train-fl.clients=2", "train-fl.rounds=1"]),
    "prune": (["train-ladp", "prune"], ['prune.finetune="ladp"', "prune.finetune_epochs=1"]),
    "export": (["train", "export"], []),
    "quantize": (["train", "quantize"], []),
    "distill": (
        ["train-ladp", "distill"],
        [
            'distill.mode="pate"',
            "distill.teachers=4",
            "distill.teacher_epochs=1",
            "distill.queries=40",
            "distill.epochs=2",
            "distill.student_width=4",
        ],
    ),
    "evaluate": (["train", "evaluate"], ['evaluate.audit_attacks=["loss", "gap"]']),
}
# A setting each stage must refuse (when loaded or checked) before the run dir is made.
BAD: dict[str, list[str]] = {
    "train": ["train.epochs=0"],
    "train-ladp": ["train-ladp.delta=0.5"],
    "train-dpsgd": ["train-dpsgd.epsilon=-1.0"],
    "train-fl": ["train-fl.delta=0.5"],
    "prune": ['prune.finetune="ladp"', "prune.finetune_epsilon=9.0", "budget.epsilon=5.0"],
    "export": ["export.tolerance=0.0"],
    "quantize": ['quantize.calibration="members"'],
    "distill": ['distill.mode="pate"', "distill.teachers=100000"],
    "evaluate": ['evaluate.audit_attacks=["nosuch"]'],
}
FAST = [*TINY, 'run.evaluate="none"', 'train-ladp.accountant="rdp"', 'train-dpsgd.accountant="rdp"']


def test_every_registered_stage_is_covered() -> None:
    assert set(RECIPES) == set(STAGES) == set(BAD)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_constructor_only_stores_its_config(name: str, tmp_path: Path) -> None:
    cls = STAGES[name]
    section = load_config(None, FAST).section(cls.Config.name)
    assert isinstance(section, cls.Config)
    stage = cls(section)
    assert vars(stage) == {"config": section}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(STAGES))
def test_bad_settings_are_refused_before_anything_is_written(name: str, tmp_path: Path) -> None:
    stages, _ = RECIPES[name]
    run_dir = tmp_path / "run"
    with pytest.raises(UserError):
        config = load_config(None, [*FAST, *BAD[name]])
        run_pipeline(stages, config=config, run_dir=run_dir, reporter=QUIET)
    assert not run_dir.exists()


def _planned_after(run_dir: Path, config: Any, stages: list[str]) -> Spend:
    """The last stage's plan given the recorded spends of the stages before it."""
    ctx = build_context(config, run_dir, QUIET)
    ctx.ledger = Ledger()
    for position, name in enumerate(stages[:-1], start=1):
        folder = run_dir / f"{position:02d}-{name}"
        ctx.ledger.record(name, Spend.from_json(read_json(folder / "result.json")["spend"]))
        ctx.history.append(name)
    ctx.position = len(stages)
    cls = STAGES[stages[-1]]
    return cls(config.section(cls.Config.name)).planned_spend(ctx)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_outputs_and_spend_are_what_the_stage_declared_and_planned(
    name: str, tmp_path: Path
) -> None:
    stages, extra = RECIPES[name]
    config = load_config(None, [*FAST, *extra])
    run_pipeline(stages, config=config, run_dir=tmp_path, reporter=QUIET)
    folder = tmp_path / f"{len(stages):02d}-{name}"
    result = read_json(folder / "result.json")
    assert set(result["outputs"]) == set(STAGES[name].provides)
    for path in result["outputs"].values():
        assert (tmp_path / path).exists()
    spent = Spend.from_json(result["spend"])
    planned = _planned_after(tmp_path, config, stages)
    assert (spent.kind, spent.dataset, spent.lineage) == (
        planned.kind,
        planned.dataset,
        planned.lineage,
    )
    if planned.kind == "dp":
        for key in ("noise_multiplier", "sample_rate"):
            assert math.isclose(spent.details[key], planned.details[key], rel_tol=1e-12), key
        assert spent.details["steps"] <= planned.details["steps"]
        assert planned.epsilon is not None and spent.epsilon is not None
        assert spent.epsilon <= planned.epsilon * (1 + 1e-9)
