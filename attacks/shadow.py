"""The shadow-model attack of Shokri et al. 2017, with per-class attack models.

The shadows are the run's reference models (attacks/references.py): each trained on a random half
of the candidate pool, so for every population example the attacker knows models that saw it and
models that did not. The attack learns, per class, what a model's output looks like on its own
training examples; it is fitted on the population only, never on the evaluation pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from attacks import signals
from attacks.base import AttackContext, AttackOutput

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

    def run(self, ctx: AttackContext) -> AttackOutput:
        pop, q = ctx.population, ctx.query
        # One OpenMP thread: these fits are small, and with more threads on a busy machine the
        # boosting's per-iteration synchronisation makes each fit 5-20x slower.
        with threadpool_limits(limits=1, user_api="openmp"):
            self.fit(ctx.ref_plain[:, pop], ctx.y[pop], ctx.membership[:, pop], seed=ctx.seed)
            return AttackOutput(
                scores=self.score(ctx.logits[q], ctx.y[q]),
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
