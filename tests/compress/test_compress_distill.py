"""Soft-label distillation: the loss, the temperature, and a student that learns its teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compress_testing import DIGITS_SHAPE, make_model

from compress.distill import distill_soft, distillation_loss, soft_labels, student_model
from models.training import fit, predict_logits
from models.zoo import count_params
from pipelines.data import load_dataset, make_splits


def test_soft_labels_are_a_tempered_softmax() -> None:
    teacher, _ = make_model("mlp", DIGITS_SHAPE)
    x = np.random.default_rng(0).standard_normal((5, *DIGITS_SHAPE)).astype(np.float32)
    logits = predict_logits(teacher, x)
    for t in (1.0, 3.0):
        probs = soft_labels(teacher, x, temperature=t)
        expected = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
        np.testing.assert_allclose(probs, expected, rtol=1e-5)
    flat = soft_labels(teacher, x, temperature=100.0)
    assert flat.max() < soft_labels(teacher, x, temperature=1.0).max()  # hotter = flatter
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(teacher, x, temperature=0.0)


def test_loss_is_zero_at_the_teacher_and_scaled_by_t_squared() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 10, generator=gen)
    probs = torch.softmax(logits / 3.0, dim=1)
    # Zero in exact arithmetic; in float32 each term p (log p - log_softmax) keeps ~1 ulp of
    # |log p| (eps 1.2e-7 times up to ~4 here), and T² = 9 scales it: a few 1e-6 at most (up
    # to 1.24e-6 seen over 20,000 random draws, which an absolute 1e-6 let through as a flake).
    # A loss that is not a KL (e.g. cross-entropy, ~2.3 here) is far above this bound.
    bound = 9.0 * 8 * float(torch.finfo(torch.float32).eps) * max(1.0, float(-probs.log().min()))
    assert abs(float(distillation_loss(logits, probs, temperature=3.0))) <= bound
    other = torch.randn(4, 10, generator=gen)
    kl = torch.nn.functional.kl_div(torch.log_softmax(other / 3.0, 1), probs, reduction="batchmean")
    assert float(distillation_loss(other, probs, temperature=3.0)) == pytest.approx(9 * float(kl))


def test_student_width_and_hidden_shrink_the_model() -> None:
    big, _ = student_model("cnn", in_shape=DIGITS_SHAPE, num_classes=10)
    small, arch = student_model("cnn", in_shape=DIGITS_SHAPE, num_classes=10, width=4, hidden=16)
    assert count_params(small) < count_params(big) / 4
    assert arch == {
        "name": "cnn",
        "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "width": 4, "hidden": 16},
    }
    mlp, arch = student_model("mlp", in_shape=DIGITS_SHAPE, num_classes=10, width=4, hidden=16)
    assert "width" not in arch["kwargs"]  # mlp takes no width: only hidden applies
    with pytest.raises(ValueError, match="unknown student"):
        student_model("nosuch", in_shape=DIGITS_SHAPE, num_classes=10)


def test_student_learns_the_teacher_from_public_data_only() -> None:
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0)
    members, public = splits["members"], splits["public"]
    teacher, _ = make_model("cnn", DIGITS_SHAPE)
    fit(teacher, data.x[members], data.y[members], epochs=4, seed=0)
    x = data.x[public]
    probs = soft_labels(teacher, x, temperature=3.0)
    student, _ = student_model("cnn", in_shape=DIGITS_SHAPE, num_classes=10, width=8, hidden=32)
    result = distill_soft(student, x, probs, epochs=25, seed=0)
    assert result.steps == 25 * -(-len(x) // 64)
    agreement = (predict_logits(student, x).argmax(1) == probs.argmax(1)).mean()
    assert agreement >= 0.9
    assert not student.training
