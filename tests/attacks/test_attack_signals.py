import numpy as np
import pytest
import torch

from attacks import signals


def test_loss_and_confidences_match_torch() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    expected = torch.nn.functional.cross_entropy(
        torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels), reduction="none"
    ).numpy()
    np.testing.assert_allclose(signals.cross_entropy(logits, labels), expected, rtol=1e-12)
    np.testing.assert_allclose(signals.loss_score(logits, labels), -expected, rtol=1e-12)
    probs = signals.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(
        signals.true_label_confidence(logits, labels), probs[np.arange(50), labels]
    )
    np.testing.assert_allclose(signals.max_confidence(logits), probs.max(axis=1))
    np.testing.assert_allclose(signals.confidence_score(logits, labels), np.log(probs.max(axis=1)))
    p = probs[np.arange(50), labels]
    np.testing.assert_allclose(signals.scaled_logit(logits, labels), np.log(p / (1 - p)))


def test_memorised_examples_stay_distinguishable() -> None:
    # Losses near 1e-20 and 1e-30: probabilities, even log-softmax, would both give loss 0.
    logits = np.array([[50.0, 0.0, 4.0], [70.0, 0.0, 0.0], [1e4, -1e4, 0.0]], np.float32)
    labels = np.zeros(3, dtype=np.int64)
    loss = signals.cross_entropy(logits, labels)
    assert loss[0] == pytest.approx(np.exp(-46.0) + np.exp(-50.0), rel=1e-9)
    assert loss[0] > loss[1] > 0
    assert np.isfinite(loss).all()
    scaled = signals.scaled_logit(logits, labels)
    assert np.isfinite(scaled).all() and scaled[0] < scaled[1] < scaled[2]
    top = signals.confidence_score(logits, labels)
    assert top[0] < top[1] < 0


def test_signals_broadcast_over_shadows() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 20, 10))  # (shadows, examples, classes)
    labels = rng.integers(0, 10, 20)
    stacked = signals.loss_score(logits, np.broadcast_to(labels, (3, 20)))
    assert stacked.shape == (3, 20)
    assert stacked[1] == pytest.approx(signals.loss_score(logits[1], labels))


def _naive_probs(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


def test_entropy_and_modified_entropy_match_their_formulas() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (40, 10))
    labels = rng.integers(0, 10, 40)
    p = _naive_probs(logits)
    np.testing.assert_allclose(signals.entropy(logits), -(p * np.log(p)).sum(axis=1), rtol=1e-10)
    p_y = p[np.arange(40), labels]
    others = np.where(np.eye(10, dtype=bool)[labels], 0.0, -p * np.log1p(-p)).sum(axis=1)
    expected = -(1 - p_y) * np.log(p_y) + others
    np.testing.assert_allclose(signals.modified_entropy(logits, labels), expected, rtol=1e-10)
    np.testing.assert_allclose(signals.modified_entropy_score(logits, labels), -expected)
    np.testing.assert_allclose(
        signals.entropy_score(logits, labels), signals.entropy_score(logits, 0 * labels)
    )


def test_modified_entropy_tells_confident_right_from_confident_wrong() -> None:
    logits = np.array([[40.0, 0.0, 0.0], [0.0, 40.0, 0.0]])
    labels = np.zeros(2, dtype=np.int64)
    # Plain entropy cannot tell them apart; modified entropy is ~0 for the right one only.
    assert signals.entropy(logits)[0] == pytest.approx(signals.entropy(logits)[1])
    mentr = signals.modified_entropy(logits, labels)
    assert 0 < mentr[0] < 1e-15 and mentr[1] > 30
    phi = signals.class_scaled_logits(logits)
    assert np.isfinite(phi).all() and phi[0, 0] == pytest.approx(40 - np.log(2))


def test_query_variants_are_one_pixel_shifts() -> None:
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    plain = signals.query_variants(x, "none")
    assert plain.shape == (1, 2, 1, 4, 4) and (plain[0] == x).all()
    shifted = signals.query_variants(x, "shift")
    assert shifted.shape == (5, 2, 1, 4, 4) and (shifted[0] == x).all()
    # Every variant is a translation by one pixel, edges replicated.
    moves = {tuple(np.argwhere(v[0, 0] == x[0, 0, 1, 1])[0]) for v in shifted[1:]}
    assert moves == {(1, 2), (1, 0), (2, 1), (0, 1)}
    with pytest.raises(ValueError, match="unknown augmentation"):
        signals.query_variants(x, "flip")
