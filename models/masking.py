"""A classifier whose low-trust answers are reduced to their label ("trust-masked").

The trust score of a query x predicted as class p (Jiang, Kim, Guan & Gupta, "To Trust or Not to
Trust a Classifier", NeurIPS 2018) is d_other / d_p: d_c is the distance from flatten(x) to the
k-th nearest index point of class c, d_other the smallest d_c over c != p. A query whose trust
score is below the threshold is answered with the one-hot vector of p, any other with the base's
softmax. The index (points and labels) and the threshold are buffers, so the masking is part of
the weights file and travels with the model through save/load, pruning, ONNX and int8.

The output is log(clamp(released probabilities, 1e-30)): softmax of it gives the released
probabilities back, and its argmax is the base's prediction. Distances are written as
|a|² - 2a·b + |b|² and the per-class k-th smallest through topk, which ONNX exports.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.zoo import build_model, classifier_of, register_model

# The floor of released probabilities before the log: a one-hot row's zeros become log(1e-30),
# about -69, which softmax maps back to 0 in float32.
PROBABILITY_FLOOR = 1e-30


class TrustMasked(nn.Module):
    index_x: Tensor
    index_y: Tensor
    threshold: Tensor

    def __init__(
        self, base: nn.Module, *, features: int, num_classes: int, index_size: int, k: int
    ):
        super().__init__()
        if k < 1 or index_size < k:
            raise ValueError(
                f"trust-masked: needs 1 <= k <= index_size, got k={k}, index_size={index_size}"
            )
        self.base, self.num_classes, self.k = base, num_classes, k
        self.register_buffer("index_x", torch.zeros(index_size, features))
        self.register_buffer("index_y", torch.zeros(index_size, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(()))

    def set_index(self, x: Tensor, y: Tensor) -> None:
        """The reference points (images, labels); every class needs at least k of them, or its
        k-th nearest distance would not exist."""
        counts = torch.bincount(y, minlength=self.num_classes)
        if int(counts.min()) < self.k:
            short = int(counts.argmin())
            raise ValueError(
                f"trust-masked: class {short} has {int(counts[short])} index points, "
                f"fewer than k={self.k}"
            )
        self.index_x.copy_(x.reshape(len(x), -1))
        self.index_y.copy_(y)

    def trainable(self) -> nn.Module:
        """A fine-tune trains the base; the index and the threshold stay as calibrated."""
        return self.base

    def output_layers(self) -> list[nn.Module]:
        """Pruning keeps the base's classifier whole (its outputs are the classes)."""
        return [classifier_of(self.base)]

    def trust(self, logits: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(trust score, predicted class) of each query."""
        flat = x.flatten(1)  # not reshape(len(x), -1): the export keeps the batch axis symbolic
        squared = (
            flat.square().sum(1, keepdim=True)
            - 2 * flat @ self.index_x.T
            + self.index_x.square().sum(1)
        )
        distance = squared.clamp(min=0).sqrt()  # (N, index); rounding may leave it below 0
        classes = torch.arange(self.num_classes, device=x.device)
        of_class = self.index_y[None, :] == classes[:, None]  # (classes, index)
        per_class = torch.where(of_class[None], distance[:, None, :], math.inf)
        kth = per_class.topk(self.k, dim=2, largest=False).values[..., -1]  # (N, classes)
        predicted = logits.argmax(1)
        is_predicted = classes[None, :] == predicted[:, None]
        d_predicted = torch.where(is_predicted, kth, 0.0).sum(1)
        # topk, not amin: onnxruntime's shape inference (run before int8) cannot type ReduceMin.
        d_other = (
            torch.where(is_predicted, math.inf, kth).topk(1, dim=1, largest=False).values[:, 0]
        )
        # A query on an index point of its predicted class (d_p = 0) is trusted, not NaN.
        return d_other / d_predicted.clamp(min=1e-12), predicted

    def forward(self, x: Tensor) -> Tensor:
        logits = self.base(x)
        trust, predicted = self.trust(logits, x)
        one_hot = torch.arange(self.num_classes, device=x.device)[None, :] == predicted[:, None]
        masked = torch.where(
            (trust < self.threshold)[:, None], one_hot.to(logits.dtype), F.softmax(logits, dim=1)
        )
        return masked.clamp(min=PROBABILITY_FLOOR).log()


@register_model("trust-masked", base=False)
def trust_masked(
    *,
    base: str,
    base_kwargs: dict[str, Any],
    in_shape: tuple[int, int, int],
    num_classes: int,
    index_size: int,
    k: int,
) -> TrustMasked:
    """The registry model `base` (built with in_shape, num_classes and base_kwargs) wrapped with an
    index of index_size points (zeros until set_index) and a threshold of 0 (nothing masked)."""
    model = build_model(base, in_shape=tuple(in_shape), num_classes=num_classes, **base_kwargs)
    features = math.prod(in_shape)
    return TrustMasked(
        model, features=features, num_classes=num_classes, index_size=index_size, k=k
    )
