"""Sections every run has: [run], [data], [model], [search], [budget]."""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.zoo import BASE_MODELS
from pipelines.errors import PrivcompError
from pipelines.executors import EXECUTORS
from pipelines.settings.base import OpenSection, Section, one_of, require, setting
from privacy.hyperparameters import SearchConfig

EVALUATE_MODES = ("each", "last", "none")


@dataclass(frozen=True)
class RunSettings(Section):
    name = "run"
    dataset: str = setting("mnist5k", "data set: mnist5k (embedded) | digits | mnist | ...")
    model: str = setting("cnn", "architecture: cnn | mlp | resnet18 (models.zoo)")
    seed: int = setting(0, "seed of the split, initial weights, references and attacks")
    data_root: str = setting("", "local folder of a data set that is not embedded")
    evaluate: str = setting("each", "attack the artifact after: each | last | none")
    # Parallel work (reference, shadow and mirrored models, audit trials, a study's methods, a
    # sweep's points) goes through one executor (pipelines.executors).
    executor: str = setting("local", "parallel work: local (process pool) | serial | ray")
    workers: int = setting(2, "processes (local) or CPUs of the single-node Ray cluster")
    ray_address: str = setting(
        "", 'Ray cluster: "" (a single-node one on this machine) | "auto" | "HOST:PORT"'
    )
    reproducible_noise: bool = setting(
        False,
        "DP noise and sampling from the seed (experiments only: ε does not hold against the seed)",
    )

    def __post_init__(self) -> None:
        one_of("run", "evaluate", self.evaluate, EVALUATE_MODES)
        one_of("run", "executor", self.executor, sorted(EXECUTORS))
        require(self.workers >= 1, f"run.workers must be >= 1, got {self.workers}")
        if self.model not in BASE_MODELS:
            raise PrivcompError(
                f"unknown model '{self.model}' (known: {', '.join(sorted(BASE_MODELS))})"
            )
        require(0 <= self.seed < 2**63, f"run.seed must be in [0, 2^63), got {self.seed}")


SPLIT_FRACTIONS = ("members", "nonmembers", "population", "public", "test")


@dataclass(frozen=True)
class DataSettings(Section):
    """Fractions of the data set per split (DESIGN §3); they may sum to less than 1. `canaries`
    moves 2N records of the population into members and nonmembers with wrong labels."""

    name = "data"
    members: float = setting(0.40, "the target's training set (private)")
    nonmembers: float = setting(0.10, "held out from the same pool: the attacks' negatives")
    population: float = setting(0.30, "the attacker's data: references, RMIA population")
    public: float = setting(0.10, "declared public: sensitivities, calibration, fine-tunes")
    test: float = setting(0.10, "accuracy of every stage")
    canaries: int = setting(
        0, "2N population records, mislabelled, made N members + N non-members (attacked apart)"
    )

    def __post_init__(self) -> None:
        values = list(self.fractions().values())
        require(
            all(math.isfinite(v) and v >= 0 for v in values) and sum(values) <= 1.0 + 1e-9,
            "split fractions must be non-negative and sum to at most 1",
        )
        require(self.canaries >= 0, f"data.canaries must be >= 0, got {self.canaries}")

    def fractions(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SPLIT_FRACTIONS}


@dataclass(frozen=True)
class ModelSettings(OpenSection):
    """Extra keyword arguments for the model factory (e.g. width, hidden)."""

    name = "model"


@dataclass(frozen=True)
class SearchSettings(Section):
    """The private hyper-parameter search (Papernot & Steinke 2022), run when a searchable key of
    [train-ladp] or [train-dpsgd] holds a list of candidates or, for lr, the word "search"."""

    name = "search"
    distribution: str = setting(
        "negative-binomial",
        "number of repetitions K: negative-binomial (truncated, shape η) | poisson",
    )
    mean: float = setting(3.0, "E[K]")
    shape: float = setting(0.0, "η of the negative binomial (0: logarithmic, 1: geometric)")

    def __post_init__(self) -> None:
        try:
            self.search_config().check()
        except ValueError as exc:
            raise PrivcompError(f"search: {exc}") from exc
        require(self.mean <= 1000, f"search.mean must be <= 1000 repetitions, got {self.mean}")

    def search_config(self) -> SearchConfig:
        return SearchConfig(distribution=self.distribution, mean=self.mean, shape=self.shape)


@dataclass(frozen=True)
class BudgetSettings(Section):
    name = "budget"
    epsilon: float = setting(0.0, "cap on the total ε per private data set (0: no cap)")
    delta: float = setting(0.0, "δ at which compositions are reported (0: the first spend's)")

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.epsilon) and self.epsilon >= 0,
            f"budget.epsilon must be >= 0 (0: no cap), got {self.epsilon}",
        )
        require(
            0 <= self.delta < 1, f"budget.delta must be in [0, 1) (0: per spend), got {self.delta}"
        )
