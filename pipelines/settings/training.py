"""The training sections: [train] (not private), [train-ladp] and [train-dpsgd].

The DP sections take their defaults from privacy.config.LADPConfig, the engine's own
configuration, so that the library and the pipeline cannot disagree. The measured defaults
(lr 0.1, allocation "matched") were chosen at ε = 3 on seed 0's non-members ∪ population, never a
default run's members (README, BENCHMARKS.md accuracy section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipelines.settings.base import Section, derived, one_of, require, setting
from pipelines.settings.run import SearchSettings
from privacy.config import PER_EXAMPLE, LADPConfig
from privacy.defenses import DEFENSES, TrainingPlan
from privacy.search import SearchSpace

_LADP = LADPConfig()

# A searchable key holds its value, a list of candidates, or (lr) the word "search".
Searchable = Any


@dataclass(frozen=True)
class TrainSettings(Section):
    name = "train"
    epochs: int = setting(15, "epochs of non-private training (Adam)")
    batch_size: int = setting(64, "batch size")
    lr: float = setting(1e-3, "Adam learning rate")
    weight_decay: float = setting(0.0, "Adam weight decay")
    defense: str = setting("none", "none | a membership-inference defense ([defense.NAME])")

    def __post_init__(self) -> None:
        one_of("train", "defense", self.defense, ["none", *sorted(DEFENSES)])
        require(
            self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0 and self.weight_decay >= 0,
            "train: need epochs >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0",
        )
        require(
            math.isfinite(self.lr) and math.isfinite(self.weight_decay),
            "train.lr and train.weight_decay must be finite numbers",
        )

    def plan(self) -> TrainingPlan:
        """The undefended training a defense starts from."""
        return TrainingPlan(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
        )


@dataclass(frozen=True)
class DPTrainingSettings(Section):
    """The keys [train-ladp] and [train-dpsgd] share, so that the two compare at equal settings."""

    epsilon: float = setting(_LADP.epsilon, "target ε; training stops before passing it")
    delta: float = setting(_LADP.delta, "target δ (must be < 1/members)")
    epochs: int = setting(_LADP.epochs, "planned epochs (expected passes over the members)")
    expected_batch_size: int = setting(
        _LADP.expected_batch_size, "Poisson sampling rate q = this / members"
    )
    lr: Searchable = setting(
        _LADP.lr, 'learning rate (a list or "search": a private search)', searchable=True
    )
    momentum: Searchable = setting(_LADP.momentum, "SGD momentum", searchable=True)
    clip_norm: Searchable = setting(
        _LADP.clip_norm,
        "total clip norm C (per-layer norms sum to it in quadrature)",
        searchable=True,
    )
    accountant: str = setting(_LADP.accountant, "prv | rdp (Opacus)")
    # Filled by the loader from [search]: how a search over candidate lists draws its K.
    search: SearchSettings = derived(SearchSettings())

    def space(self) -> SearchSpace:
        """The candidates of a private search (one, the settings themselves, without one)."""
        return SearchSpace.from_section(self.to_table())

    def ladp_config(self) -> LADPConfig:
        """The engine's configuration (the first candidate when searching)."""
        return self.space().config()


@dataclass(frozen=True)
class TrainLADPSettings(DPTrainingSettings):
    name = "train-ladp"
    optimizer: Searchable = setting(_LADP.optimizer, "sgd | adam", searchable=True)
    allocation: Searchable = setting(
        _LADP.allocation,
        "matched (per-layer clip from public gradient norms) | uniform | utility | protect",
        searchable=True,
    )
    tau: Searchable = setting(_LADP.tau, "softmax temperature of the allocation", searchable=True)
    sensitive_fraction: Searchable = setting(
        _LADP.sensitive_fraction,
        "utility / protect: top fraction clipped at clip_sensitive",
        searchable=True,
    )
    clip_sensitive: Searchable = setting(
        _LADP.clip_sensitive, "clip norm of sensitive layers", searchable=True
    )
    clip_other: Searchable = setting(_LADP.clip_other, "clip norm of the others", searchable=True)
    fisher_every: Searchable = setting(
        _LADP.fisher_every, "re-measure sensitivities every K steps", searchable=True
    )
    fisher_samples: Searchable = setting(
        _LADP.fisher_samples, "public examples per measurement", searchable=True
    )
    fast_path: bool = setting(
        _LADP.fast_path, "exact per-example clipping from activations (Linear/Conv2d/GroupNorm)"
    )


@dataclass(frozen=True)
class TrainDPSGDSettings(DPTrainingSettings):
    """The DP-SGD baseline: the shared keys and values of [train-ladp] (flat clipping only),
    and where its per-example gradients come from (the same mechanism either way)."""

    name = "train-dpsgd"
    per_example: str = setting(
        _LADP.per_example,
        "opacus (Opacus's per-sample gradients) | privcomp (LADP's fast path on the flat group; "
        "runs on resnet18, where Opacus fails)",
    )

    def __post_init__(self) -> None:
        one_of(self.name, "per_example", self.per_example, PER_EXAMPLE)


@dataclass(frozen=True)
class TrainFLSettings(Section):
    """[train-fl]: federated training with Flower (simulation on Ray), record- or client-level
    DP, accounted by privcomp (privacy.federated)."""

    name = "train-fl"
    clients: int = setting(4, "number of clients C the members are split into")
    rounds: int = setting(3, "federated rounds R")
    client_rate: float = setting(
        1.0, "Poisson rate q at which each client joins a round (client mode: accounted)"
    )
    partition: str = setting("iid", "iid | dirichlet (a per-record rule: keyed hash of the record)")
    alpha: float = setting(0.5, "dirichlet concentration (smaller: more skewed clients)")
    privacy: str = setting(
        "record", "record (local DP-SGD per client) | client (central DP, user level)"
    )
    epsilon: float = setting(
        _LADP.epsilon, "target record-level ε (client mode: RDP bound of two client steps)"
    )
    delta: float = setting(_LADP.delta, "target δ (must be < 1/members)")
    noise_multiplier: float = setting(0.0, "0: calibrate σ to epsilon; > 0: this σ")
    accountant: str = setting(_LADP.accountant, "prv | rdp (Opacus)")
    local_epochs: int = setting(1, "local epochs per round (expected passes over a shard)")
    local_batch_size: int = setting(32, "local (expected) batch size")
    lr: float = setting(0.0, "local lr; 0: 0.1 (record mode, DP-SGD) or 1e-3 (client mode, Adam)")
    momentum: float = setting(_LADP.momentum, "record mode: local SGD momentum")
    clip_norm: float = setting(
        _LADP.clip_norm, "record: per-example clip norm; client: update clip norm C"
    )
    engine: str = setting("dp-sgd", "record mode's local engine: dp-sgd | ladp")
    update_compression: str = setting("none", "none | int8 | topk: what clients send")
    topk_fraction: float = setting(0.1, "topk: fraction of each tensor's entries sent")
    workers: int = setting(0, "Ray CPUs for the clients when privcomp starts Ray (0: all cores)")

    def __post_init__(self) -> None:
        one_of(self.name, "partition", self.partition, ["iid", "dirichlet"])
        one_of(self.name, "privacy", self.privacy, ["record", "client"])
        one_of(self.name, "engine", self.engine, ["dp-sgd", "ladp"])
        one_of(self.name, "update_compression", self.update_compression, ["none", "int8", "topk"])
        one_of(self.name, "accountant", self.accountant, ["prv", "rdp"])
        require(
            self.clients >= 1 and self.rounds >= 1 and self.local_epochs >= 1,
            "train-fl: need clients, rounds and local_epochs >= 1",
        )
        require(self.local_batch_size >= 1 and self.workers >= 0, "train-fl: bad batch/workers")
        require(0 < self.client_rate <= 1, "train-fl.client_rate must be in (0, 1]")
        require(0 < self.topk_fraction <= 1, "train-fl.topk_fraction must be in (0, 1]")
        numbers = (self.alpha, self.epsilon, self.clip_norm, self.lr, self.noise_multiplier)
        require(all(math.isfinite(v) for v in numbers), "train-fl: settings must be finite")
        require(self.alpha > 0 and self.epsilon > 0, "train-fl: need alpha > 0, epsilon > 0")
        require(self.clip_norm > 0 and self.lr >= 0, "train-fl: need clip_norm > 0, lr >= 0")
        require(self.noise_multiplier >= 0, "train-fl.noise_multiplier must be >= 0")
        require(0 <= self.momentum < 1, "train-fl.momentum must be in [0, 1)")

    @property
    def local_lr(self) -> float:
        if self.lr > 0:
            return self.lr
        return _LADP.lr if self.privacy == "record" else 1e-3
