"""Shadow models (Shokri et al. 2017) and the per-class shadow-model attack.

Each shadow trains on a random half of the attacker's population, so for every population example
the attacker knows models that saw it and models that did not. The attack learns, per class, what
a model's output looks like on its own training examples.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits
from torch import nn

from attacks import signals
from attacks.base import AttackContext, AttackScores, Query
from attacks.target import TorchTarget
from models.io import load_model, save_model
from models.training import ProgressFn
from pipelines.errors import PrivcompError

MEMBERSHIP = "membership.json"

BuildFn = Callable[[int], nn.Module]  # shadow index -> fresh model
TrainFn = Callable[[nn.Module, np.ndarray, np.ndarray, int], nn.Module]  # (model, x, y, seed)


def _shadow_dir(i: int) -> str:
    return f"shadow-{i:02d}"


@dataclass(frozen=True, eq=False)
class ShadowSet:
    models: tuple[nn.Module, ...]
    membership: np.ndarray  # (k, n) bool: shadow i trained on population example j
    seed: int

    def __post_init__(self) -> None:
        if self.membership.ndim != 2 or self.membership.shape[0] != len(self.models):
            raise ValueError("membership must be a (k, n) mask, one row per shadow model")

    @property
    def k(self) -> int:
        return len(self.models)

    @property
    def n(self) -> int:
        return int(self.membership.shape[1])

    def logits(self, x: np.ndarray, *, progress: ProgressFn | None = None) -> np.ndarray:
        """(k, len(x), classes): every shadow's logits on x."""
        out = []
        for i, model in enumerate(self.models):
            out.append(TorchTarget(model).predict_logits(x))
            if progress:
                progress(i + 1, self.k)
        return np.stack(out)

    def save(self, directory: Path, *, arch: dict[str, Any]) -> None:
        """One model folder per shadow, then membership.json (written last: it marks completion)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, model in enumerate(self.models):
            save_model(model, directory / _shadow_dir(i), arch=arch)
        record = {
            "seed": self.seed,
            "n": self.n,
            "shadows": [_shadow_dir(i) for i in range(self.k)],
            "members": [np.flatnonzero(row).tolist() for row in self.membership],
        }
        tmp = directory / (MEMBERSHIP + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(directory / MEMBERSHIP)

    @classmethod
    def load(cls, directory: Path) -> ShadowSet:
        directory = Path(directory)
        if not (directory / MEMBERSHIP).is_file():
            raise PrivcompError(f"no complete shadow-model set in {directory}")
        try:
            record = json.loads((directory / MEMBERSHIP).read_text())
            membership = np.zeros((len(record["shadows"]), int(record["n"])), dtype=bool)
            for i, members in enumerate(record["members"]):
                membership[i, members] = True
            models = tuple(load_model(directory / name)[0] for name in record["shadows"])
        except (OSError, ValueError, KeyError, IndexError, RuntimeError) as exc:
            # Truncated JSON, a deleted model folder, weights that do not fit the architecture.
            raise PrivcompError(f"corrupt shadow-model set in {directory}: {exc}") from exc
        return cls(models=models, membership=membership, seed=int(record["seed"]))


def shadow_masks(n: int, *, k: int, seed: int) -> np.ndarray:
    """(k, n) membership masks, each a random half of range(n).

    Shadows come in complementary pairs, so with an even k every example is "in" for exactly k/2
    shadows and "out" for the rest: the attack sees both sides of every example (and later
    per-example attacks such as LiRA get balanced in/out models).
    """
    if k < 1 or n < 2:
        raise PrivcompError(f"shadow models need k >= 1 and a population of >= 2 (got {k}, {n})")
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, n), dtype=bool)
    for i in range(k):
        if i % 2 == 1:
            masks[i] = ~masks[i - 1]
        else:
            masks[i, rng.permutation(n)[: n // 2]] = True
    return masks


def train_shadows(
    x_pop: np.ndarray,
    y_pop: np.ndarray,
    *,
    k: int,
    build: BuildFn,
    train: TrainFn,
    seed: int,
    progress: ProgressFn | None = None,
) -> ShadowSet:
    """Train k shadows here, one after another.

    An executor that trains them in parallel can build the same ShadowSet from shadow_masks.
    """
    masks = shadow_masks(len(x_pop), k=k, seed=seed)
    models = []
    for i in range(k):
        model = train(build(i), x_pop[masks[i]], y_pop[masks[i]], seed + i)
        models.append(model.eval())
        if progress:
            progress(i + 1, k)
    return ShadowSet(models=tuple(models), membership=masks, seed=seed)


# ---- the attack -------------------------------------------------------------------------------

ClassifierFn = Callable[[int], Any]  # seed -> unfitted sklearn binary classifier


def default_classifier(seed: int) -> Any:
    # Small boosted trees: nonlinear like Shokri's attack networks, fast, indifferent to feature
    # scale. Kept shallow because a class may have only a few dozen shadow examples (deeper
    # settings overfit them on digits); "balanced" puts the 0.5 decision at equal class weight.
    return HistGradientBoostingClassifier(
        max_iter=30,
        learning_rate=0.1,
        max_leaf_nodes=4,
        min_samples_leaf=20,
        class_weight="balanced",
        early_stopping=False,
        random_state=seed,
    )


def attack_features(logits: np.ndarray, labels: np.ndarray, *, top_k: int) -> np.ndarray:
    """Sorted top-k log-probabilities, the true-class log-probability and its scaled logit.

    Logs, computed exactly near probability 1, rather than probabilities: the differences
    between memorised examples live where probabilities round to 1.0.
    """
    logp = signals.log_softmax(logits)
    top = -np.sort(-logp, axis=-1)[..., : min(top_k, logp.shape[-1])]
    top[..., 0] = signals.log_max_confidence(logits)
    scaled = signals.scaled_logit(logits, labels)
    true = -np.logaddexp(0.0, -scaled)  # log p_y, as signals.cross_entropy computes it
    return np.concatenate([top, true[..., None], scaled[..., None]], axis=-1)


@dataclass
class ShadowAttack:
    """Shokri et al.'s attack: per-class classifiers trained on the shadows' in/out outputs.

    A class with too few shadow examples (or only one side) falls back to a classifier pooled
    over all classes. The score is P(member); the decision threshold is 0.5, the classifiers'
    own (class-balanced) decision rule learnt on attacker data.
    """

    top_k: int = 3
    min_per_class: int = 20
    classifier: ClassifierFn = default_classifier
    per_class: dict[int, Any] = field(default_factory=dict, repr=False)
    pooled: Any = field(default=None, repr=False)

    def run(self, ctx: AttackContext, *, members: Query, nonmembers: Query) -> AttackScores:
        # One OpenMP thread: these fits are small, and with more threads on a busy machine the
        # boosting's per-iteration synchronisation makes each fit 5-20x slower.
        with threadpool_limits(limits=1, user_api="openmp"):
            self.fit(ctx.pop_logits, ctx.y_pop, ctx.shadows.membership, seed=ctx.seed)
            return AttackScores(
                members=self.score(members.logits, members.y),
                nonmembers=self.score(nonmembers.logits, nonmembers.y),
                threshold=0.5,
                extra={"per_class_models": float(len(self.per_class))},
            )

    def fit(
        self, logits: np.ndarray, labels: np.ndarray, membership: np.ndarray, *, seed: int
    ) -> ShadowAttack:
        """logits (k, n, C) of the shadows on the population, labels (n,), membership (k, n)."""
        cls = np.broadcast_to(labels, membership.shape)
        feats = attack_features(logits, cls, top_k=self.top_k)
        x, y = feats.reshape(-1, feats.shape[-1]), membership.reshape(-1).astype(int)
        cls = cls.reshape(-1)
        self.per_class = {}
        for c in np.unique(cls):
            rows = cls == c
            if rows.sum() >= self.min_per_class and np.unique(y[rows]).size == 2:
                self.per_class[int(c)] = self.classifier(seed + 1 + int(c)).fit(x[rows], y[rows])
        # Fit the pooled model always: the target may be queried on a class the population lacks.
        self.pooled = self.classifier(seed).fit(x, y)
        return self

    def score(self, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """P(member) for each example, from the classifier of its class."""
        x = attack_features(logits, labels, top_k=self.top_k)
        out = np.empty(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            rows = labels == c
            model = self.per_class.get(int(c), self.pooled)
            out[rows] = model.predict_proba(x[rows])[:, 1]
        return out
