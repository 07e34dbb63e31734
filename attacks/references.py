"""Reference models: k models trained on random halves of the candidate pool, once per run.

The pool is the evaluation pair (members and non-members sampled for the attack) plus the
attacker's population. Masks come in complementary pairs, so with an even k every candidate is IN
for exactly k/2 references and OUT for the rest. One set serves every attack: LiRA uses IN and OUT
models per candidate, RMIA the OUT models and the population, Shokri's attack and the threshold
attacks the references' in/out outputs on the population.

On disk (one folder): ref-00/ ... (a model folder, or an ONNX file for mirrored references),
logits-<augment>.npy with every reference's logits on the pool, and membership.json, written last
(it marks a complete set).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from attacks.errors import AttackError
from attacks.executor import Executor, SerialExecutor
from attacks.signals import query_variants
from attacks.target import OnnxTarget, Target, TorchTarget
from models.io import WEIGHTS, load_model, save_model
from models.training import ProgressFn, fit
from models.zoo import seeded_model

MEMBERSHIP = "membership.json"


def ref_name(i: int) -> str:
    return f"ref-{i:02d}"


def reference_masks(n: int, *, k: int, seed: int) -> np.ndarray:
    """(k, n) membership masks, each a random half of range(n), in complementary pairs."""
    if k < 1 or n < 2:
        raise AttackError(f"reference models need k >= 1 and a pool of >= 2 (got {k}, {n})")
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, n), dtype=bool)
    for i in range(k):
        if i % 2 == 1:
            masks[i] = ~masks[i - 1]
        else:
            masks[i, rng.permutation(n)[: n // 2]] = True
    return masks


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """What the attacks need of the references: their membership and their outputs on the pool."""

    membership: np.ndarray  # (k, n) bool: reference i trained on pool example j
    logits: np.ndarray  # (k, A, n, C) logits on the A query variants of the pool
    augment: str = "none"  # how the variants were made (attacks.signals.query_variants)
    seed: int = 0
    seconds: tuple[float, ...] = ()  # per-reference training seconds (empty when loaded)

    def __post_init__(self) -> None:
        k, n = self.membership.shape
        if self.logits.ndim != 4 or self.logits.shape[0] != k or self.logits.shape[2] != n:
            raise ValueError("logits must be (k, variants, n, classes) for a (k, n) membership")

    @property
    def k(self) -> int:
        return int(self.membership.shape[0])

    @property
    def n(self) -> int:
        return int(self.membership.shape[1])

    def save(self, directory: Path, *, pool: np.ndarray | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_logits(directory, self.augment, self.logits)
        write_membership(directory, self.membership, seed=self.seed, pool=pool)

    @classmethod
    def load(cls, directory: Path, *, augment: str = "none") -> ReferenceSet:
        """The cached set; its logits for `augment` must be there (see reference_targets)."""
        membership, record = read_membership(directory)
        logits = load_logits(directory, augment)
        if logits is None:
            raise AttackError(f"no cached reference outputs for augment '{augment}' in {directory}")
        try:
            return cls(membership, logits, augment=augment, seed=int(record["seed"]))
        except ValueError as exc:
            raise AttackError(f"corrupt reference set in {directory}: {exc}") from exc


def write_membership(
    directory: Path, membership: np.ndarray, *, seed: int, pool: np.ndarray | None = None
) -> None:
    record: dict[str, Any] = {
        "seed": seed,
        "n": int(membership.shape[1]),
        "references": [ref_name(i) for i in range(membership.shape[0])],
        "members": [np.flatnonzero(row).tolist() for row in membership],
    }
    if pool is not None:
        record["pool"] = np.asarray(pool).tolist()  # data set indices of the pool positions
    tmp = directory / (MEMBERSHIP + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(directory / MEMBERSHIP)


def read_membership(directory: Path) -> tuple[np.ndarray, dict[str, Any]]:
    directory = Path(directory)
    if not (directory / MEMBERSHIP).is_file():
        raise AttackError(f"no complete reference-model set in {directory}")
    try:
        record = json.loads((directory / MEMBERSHIP).read_text())
        membership = np.zeros((len(record["references"]), int(record["n"])), dtype=bool)
        for i, members in enumerate(record["members"]):
            membership[i, members] = True
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise AttackError(f"corrupt reference-model set in {directory}: {exc}") from exc
    return membership, record


def _logits_file(directory: Path, augment: str) -> Path:
    return Path(directory) / f"logits-{augment}.npy"


def save_logits(directory: Path, augment: str, logits: np.ndarray) -> None:
    path = _logits_file(directory, augment)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.save(handle, np.asarray(logits, dtype=np.float32), allow_pickle=False)
    tmp.replace(path)


def load_logits(directory: Path, augment: str) -> np.ndarray | None:
    path = _logits_file(directory, augment)
    if not path.is_file():
        return None
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise AttackError(f"corrupt reference outputs {path}: {exc}") from exc


def open_reference(path: Path) -> Target:
    """A reference artifact: a model folder, or a folder holding one ONNX file."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return TorchTarget(load_model(path)[0])
    onnx_files = sorted(path.glob("*.onnx"))
    if len(onnx_files) != 1:
        raise AttackError(f"no reference model in {path}")
    return OnnxTarget(onnx_files[0])


def reference_targets(directory: Path) -> list[Target]:
    _, record = read_membership(directory)
    return [open_reference(Path(directory) / name) for name in record["references"]]


def variant_logits(target: Target, variants: np.ndarray) -> np.ndarray:
    """(A, n, C): the target's logits on each query variant (A, n, ...)."""
    return np.stack([target.predict_logits(v) for v in variants]).astype(np.float32)


# ---- training (one job per reference; runs in a worker process or here) ----------------------


class Recipe(Protocol):
    """How a reference is trained from its initialisation on its half of the pool.

    The attacks do not train DP models themselves: the caller passes the recipe its target was
    trained with (pipelines.recipes.DPRecipe for a DP engine). A recipe travels inside each job to
    a worker process, so an implementation is a picklable instance of a module-level class.
    """

    def train(self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int) -> nn.Module:
        """The trained model (`model` itself or a new one); all its randomness from `seed`."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """What the reference cache records of the recipe: a changed record retrains the set."""
        ...

    def released_arch(self, arch: dict[str, Any]) -> dict[str, Any]:
        """The architecture record of what train returns, for a model built from `arch` (a
        defense may release another module: a stacked or a masked model)."""
        ...


@dataclass(frozen=True)
class TrainRecipe:
    """Adam, as the `train` stage fits a model."""

    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0

    def train(self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int) -> nn.Module:
        return fit(
            model,
            x,
            y,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def released_arch(self, arch: dict[str, Any]) -> dict[str, Any]:
        return arch


@dataclass(frozen=True, eq=False)
class ReferenceJob:
    index: int
    arch: dict[str, Any]  # {"name", "kwargs"} of the model registry
    init_seed: int
    train_seed: int
    x: np.ndarray  # the whole pool; the reference trains on x[mask]
    y: np.ndarray
    mask: np.ndarray
    recipe: Recipe
    out_dir: str
    augment: str = "none"


@dataclass(frozen=True, eq=False)
class ReferenceResult:
    index: int
    logits: np.ndarray  # (A, n, C) on the pool's query variants
    seconds: float  # training only


def train_reference(job: ReferenceJob) -> ReferenceResult:
    """Train one reference, save it to job.out_dir, return its logits on the pool."""
    start = time.perf_counter()
    kwargs = {**job.arch["kwargs"], "in_shape": tuple(job.arch["kwargs"]["in_shape"])}
    model = seeded_model(job.arch["name"], seed=job.init_seed, **kwargs)
    model = job.recipe.train(model, job.x[job.mask], job.y[job.mask], seed=job.train_seed)
    seconds = time.perf_counter() - start
    save_model(model, Path(job.out_dir), arch=job.recipe.released_arch(job.arch))
    logits = variant_logits(TorchTarget(model.eval()), query_variants(job.x, job.augment))
    return ReferenceResult(index=job.index, logits=logits, seconds=seconds)


def train_references(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int,
    arch: dict[str, Any],
    recipe: Recipe,
    seed: int,
    directory: Path,
    augment: str = "none",
    executor: Executor | None = None,
    progress: ProgressFn | None = None,
    pool: np.ndarray | None = None,
) -> ReferenceSet:
    """Train k references on halves of the pool (x, y) with `recipe` and save the set in
    `directory`; `pool` (optional) records which data set examples the pool positions are."""
    directory = Path(directory)
    masks = reference_masks(len(x), k=k, seed=seed)
    jobs = [
        ReferenceJob(
            index=i,
            arch=arch,
            init_seed=seed + 1000 + i,
            train_seed=seed + i,
            x=x,
            y=y,
            mask=masks[i],
            recipe=recipe,
            out_dir=str(directory / ref_name(i)),
            augment=augment,
        )
        for i in range(k)
    ]
    results = (executor or SerialExecutor()).map(train_reference, jobs, progress=progress)
    refs = ReferenceSet(
        membership=masks,
        logits=np.stack([r.logits for r in results]),
        augment=augment,
        seed=seed,
        seconds=tuple(r.seconds for r in results),
    )
    refs.save(directory, pool=pool)
    return refs
