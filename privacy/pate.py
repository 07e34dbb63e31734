"""PATE with the Gaussian noisy-max aggregator (GNMax), accounted data-independently.

Papernot et al. 2018 ("Scalable private learning with PATE"): n teachers are trained without DP
on disjoint shards of the private data; each public query is labelled with

    argmax_c ( votes_c(x) + N(0, σ²) ),

votes_c being how many teachers predict class c. Changing one private example changes one shard,
so one teacher's vote moves: one count -1, another +1, an L2 change of √2. The noisy histogram
is therefore a Gaussian mechanism with sensitivity √2 and std σ, i.e. noise multiplier σ/√2, and
the argmax is post-processing. Its RDP at order α is α·(√2)²/(2σ²) = α/σ² per answered query,
and T queries compose to T·α/σ² (data-independent: it holds whatever the votes are).
ε at δ uses Opacus's RDP → (ε, δ) conversion (Balle et al. 2020, Theorem 21), minimised over
orders. The spend also carries the same mechanism as a Gaussian history entry (σ/√2, q = 1,
queries) so that the ledger can compose it with LADP under one accountant.

Every query is answered (no confident-GNMax threshold): the number of answers, and so the spend,
is fixed before any private data is read.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.training import ProgressFn, fit, predict_logits

# Opacus's RDP orders, extended upwards: a few queries with large σ are optimal at high orders.
ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *range(12, 64),
    *(64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024),
)


@dataclass(frozen=True)
class PATEConfig:
    teachers: int = 50
    sigma: float = 20.0  # GNMax noise std on the vote counts
    queries: int = 200  # public examples labelled (all answered)
    delta: float = 1e-5
    teacher_epochs: int = 30
    teacher_batch_size: int = 32
    teacher_lr: float = 1e-3
    secure_noise: bool = False  # draw the GNMax noise from an OS-seeded generator

    def check(self, *, members: int, public: int) -> None:
        """ValueError (one line) for settings that cannot run or give no guarantee."""
        if self.teachers < 2:
            raise ValueError(f"PATE needs at least 2 teachers, got {self.teachers}")
        if self.teachers > members:
            raise ValueError(f"{self.teachers} teachers need at least as many members ({members})")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"GNMax sigma must be a finite number > 0, got {self.sigma}")
        if not 1 <= self.queries <= public:
            raise ValueError(f"queries must be in [1, {public}] (public split), got {self.queries}")
        if not 0 < self.delta < 1 / members:
            raise ValueError(f"delta must be in (0, 1/n) = (0, {1 / members:.3g})")
        if self.teacher_epochs < 1 or self.teacher_batch_size < 1 or not self.teacher_lr > 0:
            raise ValueError("teacher_epochs, teacher_batch_size and teacher_lr must be > 0")


def gnmax_rdp(*, sigma: float, queries: int, orders: tuple[float, ...] = ORDERS) -> np.ndarray:
    """RDP of `queries` GNMax answers at each order: queries · α / σ²."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if queries < 0:
        raise ValueError(f"queries must be >= 0, got {queries}")
    return queries * np.asarray(orders, dtype=float) / sigma**2


def rdp_to_epsilon(
    rdp: np.ndarray, *, delta: float, orders: tuple[float, ...] = ORDERS
) -> tuple[float, float]:
    """(ε, best order): min over α of rdp(α) + log((α-1)/α) - (log δ + log α)/(α-1)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    eps, order = get_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    return float(eps), float(order)


def pate_epsilon(*, sigma: float, queries: int, delta: float) -> float:
    """Data-independent ε of `queries` GNMax answers with noise std sigma, at delta."""
    if queries == 0:
        return 0.0
    return rdp_to_epsilon(gnmax_rdp(sigma=sigma, queries=queries), delta=delta)[0]


def gnmax_noise_multiplier(sigma: float) -> float:
    """The Gaussian noise multiplier of one GNMax answer: std σ over L2 sensitivity √2."""
    return sigma / math.sqrt(2.0)


@dataclass(frozen=True)
class PATESpend:
    """The ledger's view: a Gaussian history entry (σ/√2, q = 1, queries) and its own ε."""

    epsilon: float
    delta: float
    gnmax_sigma: float
    queries: int
    teachers: int
    noise_multiplier: float
    sample_rate: float = 1.0
    accountant: str = "rdp"
    mechanism: str = "pate-gnmax"

    @property
    def steps(self) -> int:
        return self.queries

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": self.steps}


def pate_spend(config: PATEConfig) -> PATESpend:
    return PATESpend(
        epsilon=pate_epsilon(sigma=config.sigma, queries=config.queries, delta=config.delta),
        delta=config.delta,
        gnmax_sigma=config.sigma,
        queries=config.queries,
        teachers=config.teachers,
        noise_multiplier=gnmax_noise_multiplier(config.sigma),
    )


def shards(n: int, teachers: int, *, seed: int) -> list[np.ndarray]:
    """Disjoint, near-equal index sets covering range(n), one per teacher (seeded)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, teachers)]


def train_teachers(
    make_model: Callable[[int], nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: PATEConfig,
    seed: int,
    progress: ProgressFn | None = None,
) -> list[nn.Module]:
    """One model per disjoint shard of (x, y), trained without DP (the aggregator is the DP
    mechanism). make_model(i) builds teacher i's fresh model."""
    teachers = []
    for i, idx in enumerate(shards(len(x), config.teachers, seed=seed)):
        model = make_model(i)
        fit(
            model,
            x[idx],
            y[idx],
            epochs=config.teacher_epochs,
            batch_size=config.teacher_batch_size,
            lr=config.teacher_lr,
            seed=seed + i,
        )
        teachers.append(model)
        if progress:
            progress(i + 1, config.teachers)
    return teachers


def teacher_predictions(teachers: list[nn.Module], x: np.ndarray) -> list[np.ndarray]:
    """Each teacher's predicted class per query."""
    return [predict_logits(teacher, x).argmax(axis=1) for teacher in teachers]


def teacher_votes(predictions: list[np.ndarray], *, num_classes: int) -> np.ndarray:
    """(queries, classes) vote counts: how many teachers predict each class."""
    votes = np.zeros((len(predictions[0]), num_classes), dtype=np.int64)
    rows = np.arange(len(votes))
    for predicted in predictions:
        np.add.at(votes, (rows, predicted), 1)
    return votes


def gnmax(votes: np.ndarray, *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy argmax labels: argmax(votes + N(0, σ²)) per query."""
    noisy = votes + rng.normal(0.0, sigma, size=votes.shape)
    return np.asarray(noisy.argmax(axis=1), dtype=np.int64)


def noise_rng(seed: int | None) -> np.random.Generator:
    """Reproducible (seeded) or secure (OS-seeded, nothing recorded) GNMax noise."""
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


@dataclass(frozen=True)
class PATEResult:
    labels: np.ndarray  # GNMax answers, one per query
    spend: PATESpend
    teacher_accuracy: list[float]  # each teacher's accuracy on the queries' true labels (public)
    vote_agreement: float  # share of queries where the noiseless vote equals the noisy answer


@torch.no_grad()
def pate_label(
    make_model: Callable[[int], nn.Module],
    private: tuple[np.ndarray, np.ndarray],
    queries: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    config: PATEConfig,
    seed: int,
    progress: ProgressFn | None = None,
) -> PATEResult:
    """Train the teachers on `private`, answer every query with GNMax. Teachers are discarded.

    queries' labels are read only to report teacher accuracy (they are public).
    """
    x, y = private
    qx, qy = queries
    config.check(members=len(x), public=len(qx))
    if len(qx) != config.queries:
        raise ValueError(f"expected {config.queries} queries, got {len(qx)}")
    with torch.enable_grad():
        teachers = train_teachers(make_model, x, y, config=config, seed=seed, progress=progress)
    predictions = teacher_predictions(teachers, qx)
    votes = teacher_votes(predictions, num_classes=num_classes)
    accuracy = [float((predicted == qy).mean()) for predicted in predictions]
    rng = noise_rng(None if config.secure_noise else seed)
    labels = gnmax(votes, sigma=config.sigma, rng=rng)
    return PATEResult(
        labels=labels,
        spend=pate_spend(config),
        teacher_accuracy=accuracy,
        vote_agreement=float((labels == votes.argmax(axis=1)).mean()),
    )
