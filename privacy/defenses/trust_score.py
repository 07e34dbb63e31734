"""Trust-score masking: answer the queries the model should not be trusted on with a label only.

The base model is trained normally on the members. The trust score of Jiang, Kim, Guan & Gupta
("To Trust or Not to Trust a Classifier", NeurIPS 2018) of a query predicted as p is the ratio of
its distance to the nearest other class to its distance to class p (k-th nearest index points);
members the model has memorised against their neighbourhood score low. A query scoring below the
threshold is answered with the one-hot vector of p, the others with the full softmax (the
"trust-masked" model of models/masking.py, index and threshold in its weights).

Released: masked scores. Not differentially private: ε is infinite. Reads, besides the members,
the public split only: a seeded draw of index_size of its points is the index (flattened inputs
and labels, shipped inside the model), the rest calibrates the threshold (the `quantile` of their
trust scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from models.masking import TrustMasked
from models.training import ProgressFn, fit
from privacy.defenses.base import Arch, Data, Defense, TrainingPlan, knob, register_defense
from privacy.defenses.fitting import build

CALIBRATION_BATCH = 512  # queries per distance matrix while calibrating (memory: batch x index)


@dataclass(frozen=True)
class TrustScoreMasking(Defense):
    name: ClassVar[str] = "trust-score-masking"
    release: ClassVar[str] = "masked-scores"
    paper: ClassVar[str] = (
        "label-only answers below a trust-score threshold (k-NN distance ratio); "
        "trust score of Jiang, Kim, Guan & Gupta, NeurIPS 2018"
    )

    k: int = knob(3, "a class's distance: to its k-th nearest index point")
    quantile: float = knob(0.5, "threshold: this quantile of the public calibration trust scores")
    # The index ships inside the released model, so its size is a setting that released_arch can
    # state before training: 90 is half of digits' default public split (180 examples).
    index_size: int = knob(90, "public points in the index (shipped); the rest calibrate")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"{self.name}: k must be >= 1, got {self.k}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"{self.name}: quantile must be in (0, 1), got {self.quantile}")
        if self.index_size < self.k:
            raise ValueError(f"{self.name}: index_size must be >= k, got {self.index_size}")

    def released_arch(self, arch: Arch) -> Arch:
        kwargs = dict(arch["kwargs"])
        in_shape, num_classes = kwargs.pop("in_shape"), kwargs.pop("num_classes")
        return {
            "name": "trust-masked",
            "kwargs": {
                "base": arch["name"],
                "base_kwargs": kwargs,
                "in_shape": in_shape,
                "num_classes": num_classes,
                "index_size": self.index_size,
                "k": self.k,
            },
        }

    def train(
        self,
        arch: Arch,
        members: Data,
        *,
        public: Data,
        plan: TrainingPlan,
        seed: int,
        progress: ProgressFn | None = None,
    ) -> nn.Module:
        px, py = public
        if len(px) <= self.index_size:
            raise ValueError(
                f"{self.name}: index_size {self.index_size} leaves no calibration points in a "
                f"public split of {len(px)}"
            )
        # The base's initial weights are those seeded_model gives `arch` (the buffers draw none).
        model = build(self.released_arch(arch), seed=seed)
        assert isinstance(model, TrustMasked)
        fit(
            model.base,
            *members,
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            lr=plan.lr,
            weight_decay=plan.weight_decay,
            seed=seed,
            progress=progress,
        )
        order = np.random.default_rng([seed, 0x7157]).permutation(len(px))
        index, calibration = order[: self.index_size], order[self.index_size :]
        with torch.no_grad():
            model.set_index(torch.as_tensor(px[index]), torch.as_tensor(py[index]))
            scores = np.concatenate(
                [
                    model.trust(model.base(xb), xb)[0].numpy()
                    for xb in torch.as_tensor(px[calibration]).split(CALIBRATION_BATCH)
                ]
            )
            model.threshold.fill_(float(np.quantile(scores, self.quantile)))
        return model.eval()


register_defense(TrustScoreMasking)
