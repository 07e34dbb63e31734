"""What a stage sees of the run: configuration, data, artifacts so far, and where to write."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config
from pipelines.data import Dataset, Splits
from pipelines.executors import Executor, close_executor, make_executor
from pipelines.ledger import Ledger
from pipelines.measurements import MeasurementStore
from pipelines.progress import Reporter
from pipelines.spend import Guarantee, Spend
from privacy.defenses import Defense
from privacy.randomness import REPRODUCIBLE, SECURE

DP_TRAINING_STAGES = ("train-ladp", "train-dpsgd")
# train-fl trains from scratch like the others; its references use the cheap [train] recipe
# (evaluate.reference_recipe "auto" mirrors only the single-machine DP engines).
TRAINING_STAGES = ("train", *DP_TRAINING_STAGES, "train-fl")
MODEL_STAGES = (*TRAINING_STAGES, "distill")  # the stages whose output is a fresh model


@dataclass
class RunContext:
    """`dataset` is the run's view of the data set: with data.canaries, the canaries (in
    splits.canaries) carry their wrong labels."""

    run_dir: Path
    config: Config
    dataset: Dataset
    splits: Splits
    reporter: Reporter
    artifacts: dict[str, Path] = field(default_factory=dict)
    latest: str | None = None  # name of the most recently produced artifact
    history: list[str] = field(default_factory=list)  # stages completed so far
    # StageResult.metrics of each completed stage, parallel to history (the evaluation's mirror
    # replays the compression records in them)
    stage_metrics: list[dict[str, Any]] = field(default_factory=list)
    guarantee: Guarantee | None = None  # privacy of the latest artifact
    stage_dir: Path = Path()
    position: int = 1  # of the current stage in the pipeline (1-based), set by the runner
    measurements: MeasurementStore = field(default_factory=MeasurementStore)
    ledger: Ledger = field(default_factory=Ledger)  # the spends so far (the runner's)
    planned: Spend | None = None  # the current stage's admitted plan (the runner's)
    # The attacks the runner will measure on the current stage's output (names, from the
    # configuration, before they are fitted to what the artifact releases; the runner's).
    attacks_planned: tuple[str, ...] = ()
    _executor: Executor | None = field(default=None, repr=False)

    def executor(self) -> Executor:
        """The run's executor ([run] executor, workers, ray_address), made at its first use
        and kept for the run: a Ray cluster starts once; the runner closes it at the end."""
        if self._executor is None:
            run = self.config.run
            self._executor = make_executor(
                run.executor,
                workers=run.workers,
                address=run.ray_address,
                report=self.reporter.info,
            )
        return self._executor

    def close_executor(self) -> None:
        close_executor(self._executor)
        self._executor = None

    def __post_init__(self) -> None:
        # Every stage, the references and the attacks see the canaries' wrong labels.
        self.dataset = self.splits.relabelled(self.dataset)

    @property
    def seed(self) -> int:
        return self.config.run.seed

    @property
    def reproducible_noise(self) -> bool:
        return self.config.run.reproducible_noise

    @property
    def noise_mode(self) -> str:
        """privacy.randomness.SECURE or REPRODUCIBLE: what every artifact says of its noise."""
        return REPRODUCIBLE if self.reproducible_noise else SECURE

    def derived_seed(self, *parts: int) -> int:
        """A seed for the current stage's public randomness (initial weights, shuffling, public
        samples), independent of every other stage's and reproducible from the run seed."""
        state = np.random.SeedSequence([self.seed, self.position, *parts]).generate_state(1)
        return int(state[0])

    def noise_seed(self, *parts: int) -> int | None:
        """What a DP mechanism of the current stage draws its sampling and noise from: None
        (secure: fresh OS entropy, privacy.randomness) unless [run] reproducible_noise opts in,
        then a seed derived from the recorded run seed (and ε no longer holds against anyone
        who has it). Distinct `parts` give independent noise within a stage."""
        return self.derived_seed(1 << 20, *parts) if self.reproducible_noise else None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.splits[name]
        return self.dataset.x[idx], self.dataset.y[idx]

    def sample(self, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n examples of a split in the run's seeded order: every stage (and the evaluation's
        mirror of it) drawing n examples of a split draws the same ones."""
        x, y = self.split(name)
        order = np.random.default_rng(self.seed).permutation(len(x))[: min(n, len(x))]
        return x[order], y[order]

    def _last_of(self, stages: tuple[str, ...]) -> int:
        found = [i for i, s in enumerate(self.history) if s in stages]
        return found[-1] if found else 0

    @property
    def trained_at(self) -> int:
        """Position in history of the training stage the latest artifact descends from: the
        last one run (a training stage starts a new lineage, so an earlier one's model is no
        longer the latest); 0 when none ran."""
        return self._last_of(TRAINING_STAGES)

    @property
    def model_made_at(self) -> int:
        """Position in history of the stage that made the latest model's weights afresh: its
        training stage, or a distill after it (a new student); the compression before it was
        another model's."""
        return self._last_of(MODEL_STAGES)

    @property
    def trained_by(self) -> str | None:
        """The training stage the latest artifact descends from."""
        stage = self.history[self.trained_at] if self.history else None
        return stage if stage in TRAINING_STAGES else None

    def defense(self) -> Defense | None:
        """The membership-inference defense the latest artifact carries: the one [train] ran,
        unless a later model (another training stage's, a distilled student) replaced it."""
        if not self.history or self.history[self.model_made_at] != "train":
            return None
        return self.config.defense()

    def model_arch(self) -> dict[str, Any]:
        """The architecture record for a fresh model of the configured kind."""
        kwargs = {
            "in_shape": list(self.dataset.in_shape),
            "num_classes": self.dataset.num_classes,
            **self.config.model,
        }
        return {"name": self.config.run.model, "kwargs": kwargs}

    def artifact(self, name: str) -> Path:
        return self.artifacts[name]

    def planned_spend(self) -> Spend:
        """The plan the runner admitted for the current stage."""
        if self.planned is None:
            raise RuntimeError("no admitted plan: stages run through the runner")
        return self.planned
