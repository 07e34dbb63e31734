"""Per-example signals from a model's logits. Scores are oriented so that higher means "member".

Labels broadcast against the logits' leading axes: logits (k, A, n, C) take labels (n,).

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
    labels = np.broadcast_to(np.asarray(labels), z.shape[:-1])[..., None]
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


def class_scaled_logits(logits: np.ndarray) -> np.ndarray:
    """phi_i = z_i - logsumexp(z_j, j != i) for every class i (..., C): log p_i - log(1 - p_i)."""
    z = np.asarray(logits, dtype=np.float64)
    classes = z.shape[-1]
    out = np.empty_like(z)
    for i in range(classes):
        others = np.delete(z, i, axis=-1)
        out[..., i] = z[..., i] - logsumexp(others, axis=-1)
    return out


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of the prediction, -sum p_i log p_i, exact for confident predictions.

    -log p_i = log(1 + e^-phi_i) keeps the top class's term (p ~ 1, -log p ~ 1e-20) exact.
    """
    neg_log_p = np.logaddexp(0.0, -class_scaled_logits(logits))
    return np.asarray(np.sum(np.exp(-neg_log_p) * neg_log_p, axis=-1))


def entropy_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Membership score of the entropy attack (Salem et al. 2019): the negated entropy."""
    del labels
    return -entropy(logits)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal 2021: -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).

    Low for a confident correct prediction, high for a confident wrong one (unlike the entropy,
    which is low for both). Computed from per-class scaled logits: log p_i = -log(1 + e^-phi_i),
    log(1 - p_i) = -log(1 + e^phi_i), both exact where p_i rounds to 0 or 1.
    """
    phi = class_scaled_logits(logits)
    log_p = -np.logaddexp(0.0, -phi)
    log_not_p = -np.logaddexp(0.0, phi)
    p, not_p = np.exp(log_p), np.exp(log_not_p)
    true = np.zeros(phi.shape, dtype=bool)
    labels = np.broadcast_to(np.asarray(labels), phi.shape[:-1])
    np.put_along_axis(true, labels[..., None], True, axis=-1)
    terms = np.where(true, -not_p * log_p, -p * log_not_p)
    return np.asarray(terms.sum(axis=-1))


def modified_entropy_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Membership score of the modified-entropy attack: the negated modified entropy."""
    return -modified_entropy(logits, labels)


# ---- augmented queries ----------------------------------------------------------------------

AUGMENTATIONS = ("none", "shift")


def query_variants(x: np.ndarray, kind: str = "none") -> np.ndarray:
    """(A, N, C, H, W): the inputs an attack queries; variant 0 is always x itself.

    "shift" adds the four one-pixel translations (edges replicated): label-preserving for digits,
    unlike a horizontal flip. LiRA fits one Gaussian per variant; the label-only attack counts
    how many variants are classified correctly.
    """
    x = np.asarray(x, dtype=np.float32)
    if kind == "none":
        return x[None]
    if kind != "shift":
        raise ValueError(f"unknown augmentation '{kind}' (known: {', '.join(AUGMENTATIONS)})")
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[-2:]
    variants = [x]
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        variants.append(padded[:, :, dy : dy + h, dx : dx + w])
    return np.ascontiguousarray(np.stack(variants))
