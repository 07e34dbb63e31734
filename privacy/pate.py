"""PATE with the Gaussian noisy-max aggregator (GNMax), accounted data-independently.

Papernot et al. 2018 ("Scalable private learning with PATE"): n teachers are trained without DP
on disjoint shards of the private data; each public query is labelled with

    argmax_c ( votes_c(x) + N(0, σ²) ),

votes_c being how many teachers predict class c.

Neighbouring data sets are add/remove (one member more or fewer), the relation under which LADP and
DP-SGD are accounted, so that the ledger composes like with like. Each member goes to a teacher by
a fixed per-record rule (`record_teacher`): a keyed BLAKE2b hash of the record's own bytes (x as
float32, its label) modulo the number of teachers. The key is public, drawn from the run seed; DP
holds for any assignment rule fixed before the data are seen, so it need not be secret. A teacher
keeps its records in their original relative order and has its own fixed training seed, so adding
or removing one member changes the data of exactly one teacher, and every other teacher is trained
on exactly the same arrays, into exactly the same model. With the number of teachers fixed (a
teacher with an empty shard still votes, untrained), at most one vote per query moves: one count -1
and another +1, an L2 change of at most √2 under add/remove. (Slicing a permutation(n) would not
do: removing one member reshuffles every shard, and only replace-one neighbours would keep the √2
bound.)

The noisy histogram is therefore a Gaussian mechanism with sensitivity √2 and std σ, i.e. noise
multiplier σ/√2, and the argmax is post-processing. Its RDP at order α is α·(√2)²/(2σ²) = α/σ² per
answered query, and T queries compose to T·α/σ² (data-independent: it holds whatever the votes
are). ε at δ uses Opacus's RDP → (ε, δ) conversion (Balle et al. 2020, Theorem 21), minimised
over orders. The spend also carries the same mechanism as a Gaussian history entry (σ/√2, q = 1,
queries) so that the ledger can compose it with LADP under one accountant.

Every query is answered (no confident-GNMax threshold): the number of answers, and so the spend,
is fixed before any private data is read. The GNMax noise is secure by default
(privacy.randomness): `noise_seed=None` draws it from 128 bits of OS entropy that are never
recorded.

The teachers themselves are not private: their accuracies and the noiseless vote agreement in
PATEResult are audit statistics, not covered by ε, and must never ship with the student.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.training import ProgressFn, fit, predict_logits
from privacy.randomness import mechanism_rngs, noise_mode
from privacy.rdp import RDP_ORDERS


@dataclass(frozen=True)
class PATEConfig:
    teachers: int = 50
    sigma: float = 20.0  # GNMax noise std on the vote counts
    queries: int = 200  # public examples labelled (all answered)
    delta: float = 1e-5
    teacher_epochs: int = 30
    teacher_batch_size: int = 32
    teacher_lr: float = 1e-3

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


def gnmax_rdp(*, sigma: float, queries: int, orders: tuple[float, ...] = RDP_ORDERS) -> np.ndarray:
    """RDP of `queries` GNMax answers at each order: queries · α / σ²."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if queries < 0:
        raise ValueError(f"queries must be >= 0, got {queries}")
    return queries * np.asarray(orders, dtype=float) / sigma**2


def rdp_to_epsilon(
    rdp: np.ndarray, *, delta: float, orders: tuple[float, ...] = RDP_ORDERS
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


# Domain separation: the same key used elsewhere for another purpose gives unrelated hashes.
_HASH_PERSON = b"privcomp-pate"
_KEY_BYTES = 16


def _key_bytes(key: int) -> bytes:
    if not 0 <= key < 1 << (8 * _KEY_BYTES):
        raise ValueError(f"the shard key must be an integer in [0, 2**128), got {key}")
    return key.to_bytes(_KEY_BYTES, "little")


def record_teacher(x: np.ndarray, y: int, teachers: int, *, key: int) -> int:
    """The teacher one record (x, label y) belongs to: BLAKE2b(key; x's float32 bytes, y) mod
    teachers. A function of the record alone, never of its position or of the other records,
    which is what makes the add/remove sensitivity one teacher."""
    if teachers < 1:
        raise ValueError(f"teachers must be >= 1, got {teachers}")
    digest = hashlib.blake2b(key=_key_bytes(key), person=_HASH_PERSON, digest_size=8)
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update(int(y).to_bytes(8, "little", signed=True))
    # 64-bit digest mod a few thousand teachers: the bias is < teachers / 2**64, and DP does not
    # depend on the rule being uniform anyway.
    return int.from_bytes(digest.digest(), "little") % teachers


def assign_teachers(x: np.ndarray, y: np.ndarray, teachers: int, *, key: int) -> np.ndarray:
    """record_teacher for every record: an int64 array, one teacher index per row of x."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} != {len(y)})")
    return np.fromiter(
        (record_teacher(xi, int(yi), teachers, key=key) for xi, yi in zip(x, y, strict=True)),
        dtype=np.int64,
        count=len(x),
    )


def shards(x: np.ndarray, y: np.ndarray, teachers: int, *, key: int) -> list[np.ndarray]:
    """Disjoint index sets covering range(len(x)), one per teacher, each in increasing order (the
    records' original relative order). Sizes vary (about len(x)/teachers each); a shard may be
    empty."""
    owner = assign_teachers(x, y, teachers, key=key)
    return [np.flatnonzero(owner == t) for t in range(teachers)]


def train_teachers(
    make_model: Callable[[int], nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: PATEConfig,
    key: int,
    seed: int,
    progress: ProgressFn | None = None,
) -> list[nn.Module]:
    """One model per shard of (x, y) (see `shards`), trained without DP (the aggregator is the
    DP mechanism). make_model(i) builds teacher i's fresh model; teacher i trains with seed + i,
    so its model depends on its own shard only."""
    teachers = []
    for i, idx in enumerate(shards(x, y, config.teachers, key=key)):
        model = make_model(i)
        # An empty shard keeps its teacher at its initial weights (which do not depend on the
        # data) and it still votes. Refusing to run instead would make the mechanism's output
        # (labels or an error) depend on the data: the neighbour that removes a shard's only
        # member would turn labels into an error, which no ε bounds. The number of teachers is
        # fixed before any data are read and must not be changed by them either.
        if len(idx) > 0:
            fit(
                model,
                x[idx],
                y[idx],
                epochs=config.teacher_epochs,
                batch_size=config.teacher_batch_size,
                lr=config.teacher_lr,
                seed=seed + i,
            )
        teachers.append(model.eval())
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


@dataclass(frozen=True)
class PATEResult:
    labels: np.ndarray  # GNMax answers, one per query: the only thing covered by ε
    spend: PATESpend
    noise: str  # privacy.randomness.noise_mode: "secure" or "reproducible"
    # Audit-only statistics of the non-private teachers (not covered by ε, never shipped):
    teacher_accuracy: list[float]  # each teacher's accuracy on the queries' true labels (public)
    vote_agreement: float  # share of queries where the noiseless vote equals the noisy answer
    shard_sizes: list[int]  # members per teacher


@torch.no_grad()
def pate_label(
    make_model: Callable[[int], nn.Module],
    private: tuple[np.ndarray, np.ndarray],
    queries: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    config: PATEConfig,
    seed: int,
    shard_key: int,
    noise_seed: int | None = None,
    progress: ProgressFn | None = None,
) -> PATEResult:
    """Train the teachers on `private`, answer every query with GNMax. Teachers are discarded.

    seed: the teachers' training seeds (seed + i); shard_key: the public key of the per-record
    assignment (`record_teacher`); noise_seed: None for secure GNMax noise, an int only for
    reproducible experiments (ε then does not hold against anyone who has it). queries' labels
    are read only to report teacher accuracy (they are public).
    """
    x, y = private
    qx, qy = queries
    config.check(members=len(x), public=len(qx))
    if len(qx) != config.queries:
        raise ValueError(f"expected {config.queries} queries, got {len(qx)}")
    sizes = [len(idx) for idx in shards(x, y, config.teachers, key=shard_key)]
    with torch.enable_grad():
        teachers = train_teachers(
            make_model, x, y, config=config, key=shard_key, seed=seed, progress=progress
        )
    predictions = teacher_predictions(teachers, qx)
    votes = teacher_votes(predictions, num_classes=num_classes)
    accuracy = [float((predicted == qy).mean()) for predicted in predictions]
    labels = gnmax(votes, sigma=config.sigma, rng=mechanism_rngs(noise_seed)[0])
    return PATEResult(
        labels=labels,
        spend=pate_spend(config),
        noise=noise_mode(noise_seed),
        teacher_accuracy=accuracy,
        vote_agreement=float((labels == votes.argmax(axis=1)).mean()),
        shard_sizes=sizes,
    )
