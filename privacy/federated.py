"""Federated DP (the `train-fl` stage's mechanisms): which client each record belongs to, the
Poisson client sampler, the central DP aggregation of client updates, and the plans that fix
σ, q and the steps of both privacy modes before any private data is read.

Neighbour relations (DESIGN §3; README "What ε covers"):

- Record level, add/remove one record. In `record` mode each client runs DP-SGD (or LADP) on its
  own records only; adding or removing a record changes one client's data and nothing else, so
  the record's guarantee is its own client's accountant over the local steps that client ran
  (parallel composition, `privacy.composition.Parallel`).
- Client level, add/remove one client's whole data (a client with no data sends a zero update).
  In `client` mode the server clips every client's update to norm C, adds N(0, σ²C²) to the sum
  and divides by q·K (K clients, sampled by Poisson sampling with rate q): each round is a
  Poisson-subsampled Gaussian mechanism with multiplier σ for the add/remove-client relation.
  A record's add/remove is NOT one client's add/remove: its client's update moves from u to u'
  with ||u - u'|| up to 2C (both clipped to C), a replace-one at the client level. It is two
  add/remove-client steps (D -> the client emptied -> D'), so the record-level bound is group
  privacy of two: in RDP, by the weak triangle inequality (`record_level_rdp`), an RDP curve
  the ledger composes with the run's other mechanisms. `client_level_plan` calibrates σ so that
  this record-level bound meets the target; the client-level ε is reported beside it.

Client assignment is a fixed per-record rule (as PATE's teachers, privacy.pate): a keyed BLAKE2b
hash of the record's own bytes and label, so one record's presence never moves another record.
IID: the hash modulo K. Dirichlet non-IID: a class-by-client mixing matrix P[c] ~ Dir(α·1_K) is
drawn from the public key alone (never from the data), and a record of class c goes to the
client where the hash's uniform u in [0, 1) falls in P[c]'s cumulative sums: again a function of
the record alone. (The usual Dirichlet partition, which splits each class's records by those
proportions in order, moves other records when one is added and would only fit replace-one
neighbours.) The key is public (drawn from the run seed): DP holds for any rule fixed before
the data are seen.

Randomness: client sampling and the aggregation's noise come from privacy.randomness's secure
generator unless a noise seed is given (reproducible, for experiments only).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from privacy.accounting import check_target_epsilon, compute_epsilon
from privacy.calibration import calibrate_noise_multiplier, smallest_noise_multiplier
from privacy.composition import GaussianSteps, Parallel
from privacy.config import sampling_plan
from privacy.randomness import poisson_sample
from privacy.rdp import RDP_ORDERS, gaussian_rdp, rdp_epsilon

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet")
PRIVACY_MODES: tuple[str, ...] = ("record", "client")
_PERSON = b"privcomp-fl"
_KEY_BYTES = 16

Update = dict[str, np.ndarray]


# ---- client assignment -----------------------------------------------------------------------


def _record_hash(x: np.ndarray, y: int, key: int) -> int:
    if not 0 <= key < 1 << (8 * _KEY_BYTES):
        raise ValueError(f"the client key must be an integer in [0, 2**128), got {key}")
    digest = hashlib.blake2b(key=key.to_bytes(_KEY_BYTES, "little"), person=_PERSON, digest_size=8)
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update(int(y).to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def class_mix(num_classes: int, clients: int, *, alpha: float, key: int) -> np.ndarray:
    """The Dirichlet non-IID mixing matrix (num_classes x clients, rows sum to 1): row c is
    Dir(alpha·1) drawn from the public key, never from the data."""
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"dirichlet alpha must be a finite number > 0, got {alpha}")
    rng = np.random.default_rng(np.random.SeedSequence([key, num_classes, clients]))
    return rng.dirichlet(np.full(clients, float(alpha)), size=num_classes)


def assign_clients(
    x: np.ndarray,
    y: np.ndarray,
    clients: int,
    *,
    key: int,
    partition: str = "iid",
    alpha: float = 1.0,
    num_classes: int | None = None,
) -> np.ndarray:
    """The client of every record (an int64 array), each a function of that record alone (its
    bytes, its label, the public key): see the module docstring."""
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} != {len(y)})")
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition '{partition}' (known: {', '.join(PARTITIONS)})")
    hashes = [_record_hash(xi, int(yi), key) for xi, yi in zip(x, y, strict=True)]
    if partition == "iid":
        return np.asarray([h % clients for h in hashes], dtype=np.int64)
    if num_classes is None:
        raise ValueError("a dirichlet partition needs num_classes (the data set's, not counted)")
    cumulative = np.cumsum(class_mix(num_classes, clients, alpha=alpha, key=key), axis=1)
    owners = np.empty(len(x), dtype=np.int64)
    for i, (h, label) in enumerate(zip(hashes, y, strict=True)):
        u = h / 2.0**64
        owners[i] = min(int(np.searchsorted(cumulative[int(label)], u, side="right")), clients - 1)
    return owners


def client_shards(owners: np.ndarray, clients: int) -> list[np.ndarray]:
    """Disjoint index sets, one per client, in the records' original order (a shard may be
    empty: the client still exists and runs the same mechanism)."""
    return [np.flatnonzero(owners == k) for k in range(clients)]


# ---- client sampling ---------------------------------------------------------------------------


def sample_clients(rng: np.random.Generator, clients: int, rate: float) -> np.ndarray:
    """Poisson sampling of clients: each joins the round independently with probability rate
    (the subsampled-Gaussian accountant's sampling; a fixed-size sample is not covered)."""
    if not 0 < rate <= 1:
        raise ValueError(f"client rate must be in (0, 1], got {rate}")
    return poisson_sample(rng, clients, rate)


# ---- central DP aggregation (client mode) -----------------------------------------------------


def update_norm(update: Mapping[str, np.ndarray]) -> float:
    return math.sqrt(
        math.fsum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())
    )


class DPAggregator:
    """The server's Gaussian mechanism on client updates, a template as Opacus's
    DPOptimizer.pre_step: `clip` each update to norm clip_norm (over all its tensors),
    `clipped_sum`, `add_noise` N(0, (σ·C)²) per coordinate, `scale` by 1 / (q·K), the
    expected number of clients, never the realised one. Tests call these same methods."""

    def __init__(
        self,
        *,
        clip_norm: float,
        noise_multiplier: float,
        sample_rate: float,
        clients: int,
        rng: np.random.Generator,
    ) -> None:
        if not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"update clip norm must be a finite number > 0, got {clip_norm}")
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(f"noise multiplier must be >= 0, got {noise_multiplier}")
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.clients = int(clients)
        self.rng = rng

    def clip(self, update: Mapping[str, np.ndarray]) -> Update:
        norm = update_norm(update)
        if not math.isfinite(norm):
            # A diverged client counts as an empty one (a zero update): refusing instead would
            # make the output (a model or an error) depend on that client's data.
            return {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in update.items()}
        factor = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        return {k: np.asarray(v, dtype=np.float64) * factor for k, v in update.items()}

    def clipped_sum(
        self, updates: Iterable[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]]
    ) -> Update:
        total = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        for update in updates:
            if set(update) != set(shapes):
                raise ValueError("a client update does not match the model's tensors")
            for k, v in self.clip(update).items():
                total[k] += v.reshape(shapes[k])
        return total

    def add_noise(self, total: Mapping[str, np.ndarray]) -> Update:
        std = self.noise_multiplier * self.clip_norm
        return {k: v + std * self.rng.standard_normal(v.shape) for k, v in total.items()}

    def scale(self, noisy: Mapping[str, np.ndarray]) -> Update:
        expected = self.sample_rate * self.clients
        return {k: (v / expected).astype(np.float32) for k, v in noisy.items()}

    def aggregate(
        self, updates: Iterable[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]]
    ) -> Update:
        """The released step of the global model; noise is added even when no client came."""
        return self.scale(self.add_noise(self.clipped_sum(updates, shapes)))


def mean_update(
    updates: list[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]]
) -> Update:
    """Record mode's aggregation (post-processing of DP client outputs): the unweighted mean
    over the clients that came (weighting by their data sizes would release those sizes)."""
    total = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
    for update in updates:
        for k, v in update.items():
            total[k] += np.asarray(v, dtype=np.float64).reshape(shapes[k])
    count = max(1, len(updates))
    return {k: (v / count).astype(np.float32) for k, v in total.items()}


# ---- plans and accounting ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientLevelPlan:
    """Client mode: `rounds` Poisson-subsampled Gaussian steps (σ, q) on the clients. The
    client-level guarantee (client_epsilon at delta, by the configured accountant) and the
    record-level RDP curve it implies for two client steps (record_level_rdp), with its
    (epsilon, delta): what the ledger composes."""

    noise_multiplier: float
    sample_rate: float
    rounds: int
    client_epsilon: float
    epsilon: float
    delta: float
    orders: tuple[float, ...]
    rdp: tuple[float, ...]

    @property
    def mechanism(self) -> GaussianSteps:
        return GaussianSteps(self.noise_multiplier, self.sample_rate, self.rounds)


def record_level_rdp(
    *,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    orders: Sequence[float] = RDP_ORDERS,
) -> np.ndarray:
    """Record-level RDP of client mode: a record's add/remove is two add/remove-client steps
    (D -> its client emptied -> D'), so by the weak triangle inequality of Rényi divergences
    (Mironov 2017, Prop. 11 with p = q = 2),
        D_a(P || R) <= (a - 1/2) / (a - 1) * D_2a(P || Q) + D_(2a-1)(Q || R),
    each term the client-level curve of the rounds (Opacus's subsampled Gaussian, add/remove,
    both directions) at the doubled order."""
    lam = np.asarray(orders, dtype=float)

    def curve(at: np.ndarray) -> np.ndarray:
        return gaussian_rdp(
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=rounds,
            orders=tuple(float(a) for a in at),
        )

    with np.errstate(invalid="ignore", over="ignore"):
        total = (lam - 0.5) / (lam - 1) * curve(2 * lam) + curve(2 * lam - 1)
    # Opacus's log-space sums overflow at the highest doubled orders: a bound of +inf there is
    # valid (raising a curve is always valid) and those orders are never the best.
    return np.where(np.isnan(total), np.inf, total)


def client_level_plan(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    accountant: str = "prv",
    noise_multiplier: float | None = None,
) -> ClientLevelPlan:
    """σ for client mode, calibrated so that the record-level bound (record_level_rdp at δ)
    meets the target ε; a given noise_multiplier is used as is (ValueError when it does not)."""
    check_target_epsilon(epsilon)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")

    def record_epsilon(sigma: float) -> float:
        curve = record_level_rdp(noise_multiplier=sigma, sample_rate=sample_rate, rounds=rounds)
        return rdp_epsilon(curve, delta=delta)

    sigma = noise_multiplier
    if sigma is None:
        sigma = smallest_noise_multiplier(record_epsilon, epsilon, start=1.0, factor=2.0)
    record_eps = record_epsilon(sigma)
    if record_eps > epsilon * (1 + 1e-9):
        raise ValueError(
            f"noise multiplier {sigma:.4g} gives record-level epsilon {record_eps:.4g} > target "
            f"{epsilon:g} over {rounds} rounds at client rate {sample_rate:g}"
        )
    client_eps = compute_epsilon(
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=rounds,
        delta=delta,
        accountant=accountant,
    )
    curve = record_level_rdp(noise_multiplier=sigma, sample_rate=sample_rate, rounds=rounds)
    return ClientLevelPlan(
        noise_multiplier=float(sigma),
        sample_rate=float(sample_rate),
        rounds=int(rounds),
        client_epsilon=client_eps,
        epsilon=record_eps,
        delta=float(delta),
        orders=RDP_ORDERS,
        rdp=tuple(float(v) for v in curve),
    )


@dataclass(frozen=True)
class RecordLevelPlan:
    """Record mode: every client runs `steps_per_round` DP steps (σ, q) in each round it joins;
    q and the steps are planned on `planned_n` = members / clients (public), never on a shard."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    planned_n: int

    @property
    def max_steps(self) -> int:
        return self.steps_per_round * self.rounds

    def client_history(self, rounds_joined: int) -> tuple[GaussianSteps, ...]:
        if rounds_joined <= 0:
            return ()
        steps = self.steps_per_round * rounds_joined
        return (GaussianSteps(self.noise_multiplier, self.sample_rate, steps),)

    def mechanism(self, rounds_joined: Iterable[int]) -> Parallel:
        """Each client's history (parallel composition over disjoint shards)."""
        return Parallel(tuple(self.client_history(r) for r in rounds_joined))


def record_level_plan(
    *,
    epsilon: float,
    delta: float,
    members: int,
    clients: int,
    expected_batch_size: int,
    local_epochs: int,
    rounds: int,
    accountant: str = "prv",
    noise_multiplier: float | None = None,
) -> RecordLevelPlan:
    """σ for record mode: a client that joins all rounds runs rounds × steps_per_round steps,
    and σ is calibrated so that even that client stays within (ε, δ)."""
    check_target_epsilon(epsilon)
    if members < 1 or clients < 1 or rounds < 1 or local_epochs < 1 or expected_batch_size < 1:
        raise ValueError("need members, clients, rounds, local_epochs and batch size >= 1")
    if not 0 < delta < 1 / members:
        raise ValueError(f"delta must be in (0, 1/n) = (0, {1 / members:.3g}) for n = {members}")
    planned_n = max(1, round(members / clients))
    q, steps = sampling_plan(expected_batch_size, local_epochs, planned_n)
    sigma = noise_multiplier
    if sigma is None:
        sigma = calibrate_noise_multiplier(
            target_epsilon=epsilon,
            delta=delta,
            sample_rate=q,
            steps=steps * rounds,
            accountant=accountant,
        )
    worst = compute_epsilon(
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps * rounds,
        delta=delta,
        accountant=accountant,
    )
    if worst > epsilon * (1 + 1e-9):
        raise ValueError(
            f"noise multiplier {sigma:.4g} gives epsilon {worst:.4g} > target {epsilon:g} for a "
            f"client in all {rounds} rounds"
        )
    return RecordLevelPlan(float(sigma), q, steps, int(rounds), planned_n)
