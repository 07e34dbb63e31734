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
