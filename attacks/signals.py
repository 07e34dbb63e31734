"""Per-example signals from a model's logits. Scores are oriented so that higher means "member".

Everything is computed in float64 from the scaled logit z_y - logsumexp(z_others): a memorised
example has a loss near 1e-12, and probabilities (even log-softmax, which computes log(1 + tiny))
would round all of them to 1.0 (loss 0) and turn the strongest signal into ties.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax as _log_softmax
from scipy.special import logsumexp


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return np.asarray(_log_softmax(np.asarray(logits, dtype=np.float64), axis=-1))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) = z_y - logsumexp(z_others), exact even when p_y rounds to 1.

    The per-example statistic of LiRA (Carlini et al. 2022); every other signal is derived from it.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)[..., None]
    z_true = np.take_along_axis(z, labels, axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, labels, -np.inf, axis=-1)
    return np.asarray(z_true - logsumexp(others, axis=-1))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example loss -log p(y|x) = log(1 + e^-phi); logits (..., C), labels (...).

    Via log1p, so a loss of 1e-20 stays 1e-20: log-softmax would round it to exactly 0.
    """
    return np.logaddexp(0.0, -scaled_logit(logits, labels))


def true_label_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(y|x). A monotone function of the loss, so it ranks examples exactly as the loss does."""
    return np.exp(-cross_entropy(logits, labels))


def log_max_confidence(logits: np.ndarray) -> np.ndarray:
    """log of the largest class probability, computed as exactly as the loss."""
    top = np.argmax(np.asarray(logits), axis=-1)
    return -cross_entropy(logits, top)


def max_confidence(logits: np.ndarray) -> np.ndarray:
    """Largest class probability: needs no label (Salem et al. 2019)."""
    return np.exp(log_max_confidence(logits))


def loss_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Membership score of the loss attack (Yeom et al. 2018): the negated loss."""
    return -cross_entropy(logits, labels)


def confidence_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Membership score of the confidence attack (Salem et al. 2019): log top-1 probability.

    Not the true-label probability: that is exp(-loss) and would repeat the loss attack. The log
    keeps memorised examples apart (their top-1 probabilities all round to 1.0).
    """
    del labels  # same signature as the other scores, so the threshold attack can take either
    return log_max_confidence(logits)
