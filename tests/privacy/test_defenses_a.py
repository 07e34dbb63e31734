"""The l2, dropout, label-smoothing, knowledge-distillation and model-stacking defenses: each one's
mechanism acts, each released model still beats chance on digits, and bad settings are refused."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import privacy.defenses.fitting as fitting
import privacy.defenses.stacking as stacking_module
from models.stacking import StackedModel
from models.training import accuracy, predict_logits
from models.zoo import build_model
from privacy.defenses import DEFENSES, TrainingPlan, build_defense
from privacy.defenses.base import Data
from privacy.defenses.fitting import build, stage_progress, train
from privacy.defenses.label_smoothing import LabelSmoothingDefense
from privacy.defenses.stacking import stacking_parts

ARCH: dict[str, Any] = {
    "name": "cnn",
    "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "width": 8, "hidden": 32},
}
PLAN = TrainingPlan(epochs=8, lr=3e-3)
SEED = 0
NAMES = ("l2", "dropout", "label-smoothing", "knowledge-distillation", "model-stacking")


class Split:
    def __init__(self) -> None:
        d = load_digits()
        x = ((d.data.reshape(-1, 1, 8, 8) / 16.0 - 0.3) / 0.4).astype(np.float32)
        y = d.target.astype(np.int64)
        m, p, t = np.split(np.random.default_rng(0).permutation(len(y)), [600, 1200])
        self.members: Data = (x[m], y[m])
        self.public: Data = (x[p], y[p])
        self.test: Data = (x[t], y[t])


@pytest.fixture(scope="module")
def split() -> Split:
    return Split()


@pytest.fixture(scope="module")
def undefended(split: Split) -> nn.Module:
    """The plan's training without a defense, from the same init and seed the defenses use."""
    return train(build(ARCH, seed=SEED), *split.members, plan=PLAN, seed=SEED)


@pytest.fixture(scope="module")
def released(split: Split) -> dict[str, nn.Module]:
    return {name: defend(name, split) for name in NAMES}


def defend(name: str, split: Split, **settings: Any) -> nn.Module:
    defense = build_defense(name, **settings)
    return defense.train(ARCH, split.members, public=split.public, plan=PLAN, seed=SEED)


def test_all_five_are_registered_by_importing_the_package() -> None:
    assert set(NAMES) <= set(DEFENSES)
    assert all(DEFENSES[name].release == "scores" for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_released_model_beats_chance_in_eval_mode(
    name: str, split: Split, released: dict[str, nn.Module]
) -> None:
    model = released[name]
    assert not model.training
    assert accuracy(predict_logits(model, split.test[0]), split.test[1]) > 0.5


def _norm(model: nn.Module) -> float:
    return math.sqrt(sum(float(p.detach().square().sum()) for p in model.parameters()))


def test_l2_shrinks_the_weights(released: dict[str, nn.Module], undefended: nn.Module) -> None:
    assert _norm(released["l2"]) < 0.95 * _norm(undefended)


def _mean_max_softmax(model: nn.Module, x: np.ndarray) -> float:
    return float(torch.softmax(torch.as_tensor(predict_logits(model, x)), 1).max(1).values.mean())


def test_label_smoothing_softens_the_targets_and_the_scores(
    split: Split, released: dict[str, nn.Module], undefended: nn.Module
) -> None:
    logits, target = torch.tensor([[8.0, 0.0, 0.0]]), torch.tensor([0])
    smoothed = LabelSmoothingDefense(smoothing=0.1).loss_fn()(logits, target)
    assert float(smoothed) > float(F.cross_entropy(logits, target)) + 0.1  # confidence costs
    x = split.test[0]
    assert _mean_max_softmax(released["label-smoothing"], x) < _mean_max_softmax(undefended, x)


def test_dropout_is_in_the_released_model_and_only_acts_in_training(
    split: Split, released: dict[str, nn.Module]
) -> None:
    model = released["dropout"]
    assert build_defense("dropout").released_arch(ARCH)["kwargs"]["dropout"] == 0.5
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.as_tensor(split.test[0][:32])
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic
        model.train()
        try:
            assert not torch.equal(model(x), model(x))  # training: stochastic
        finally:
            model.eval()


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet18"])
def test_zoo_dropout_adds_layers_only_above_zero(name: str) -> None:
    kwargs: dict[str, Any] = {"in_shape": (1, 8, 8), "num_classes": 10}
    plain = build_model(name, **kwargs)
    assert list(build_model(name, dropout=0.0, **kwargs).state_dict()) == list(plain.state_dict())
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    assert any(
        isinstance(m, nn.Dropout) for m in build_model(name, dropout=0.3, **kwargs).modules()
    )


def test_dropout_refuses_a_model_without_a_dropout_setting() -> None:
    stacked = build_defense("model-stacking").released_arch(ARCH)
    with pytest.raises(ValueError, match="no dropout setting.*cnn"):
        build_defense("dropout").released_arch(stacked)


class FitSpy:
    """Records the (x, y) of every fit call, then trains as fit does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        real = fitting.fit

        def spy(model: nn.Module, x: np.ndarray, y: np.ndarray, **kw: Any) -> nn.Module:
            self.calls.append((np.asarray(x), np.asarray(y)))
            return real(model, x, y, **kw)

        monkeypatch.setattr(fitting, "fit", spy)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_the_distilled_student_sees_only_public_inputs(
    split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FitSpy(monkeypatch)
    defend("knowledge-distillation", split)
    (teacher_x, teacher_y), (student_x, student_y) = spy.calls
    np.testing.assert_array_equal(teacher_x, split.members[0])  # the teacher: the members
    np.testing.assert_array_equal(teacher_y, split.members[1])
    np.testing.assert_array_equal(student_x, split.public[0])  # the student: public inputs only
    assert not _rows(student_x) & _rows(split.members[0])
    assert student_y.shape == (len(student_x), 10)  # soft labels, not the public labels
    np.testing.assert_allclose(student_y.sum(axis=1), 1.0, rtol=1e-5)


def test_stacking_trains_three_models_on_disjoint_parts(
    split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = split.members
    parts = stacking_parts(len(y), SEED)
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == len(y)  # disjoint and covering
    spy = FitSpy(monkeypatch)
    meta_calls: list[tuple[np.ndarray, np.ndarray]] = []
    real_fit_meta = stacking_module.fit_meta

    def record_meta(layer: nn.Linear, scores: np.ndarray, labels: np.ndarray) -> None:
        meta_calls.append((scores, labels))
        real_fit_meta(layer, scores, labels)

    monkeypatch.setattr(stacking_module, "fit_meta", record_meta)
    model = defend("model-stacking", split)
    assert isinstance(model, StackedModel)
    assert len(spy.calls) == 2
    for (seen_x, seen_y), part in zip(spy.calls, parts[:2], strict=True):
        np.testing.assert_array_equal(seen_x, x[part])
        np.testing.assert_array_equal(seen_y, y[part])
    ((scores, labels),) = meta_calls
    np.testing.assert_array_equal(labels, y[parts[2]])
    assert scores.shape == (len(parts[2]), 20)  # both bases' softmax outputs


def test_stacking_released_arch_is_one_stacked_module() -> None:
    arch = build_defense("model-stacking").released_arch(ARCH)
    assert arch == {
        "name": "stacked",
        "kwargs": {
            "base": "cnn",
            "base_kwargs": {"width": 8, "hidden": 32},
            "in_shape": [1, 8, 8],
            "num_classes": 10,
        },
    }


def test_progress_runs_once_over_all_stages(split: Split) -> None:
    seen: list[tuple[int, int]] = []
    build_defense("model-stacking").train(
        ARCH,
        split.members,
        public=split.public,
        plan=TrainingPlan(epochs=1),
        seed=SEED,
        progress=lambda done, total: seen.append((done, total)),
    )
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1]
    assert len({total for _, total in seen}) == 1
    assert stage_progress(None, [3, 4]) == [None, None]


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("l2", {"weight": -0.1}),
        ("l2", {"weight": math.inf}),
        ("dropout", {"rate": 1.0}),
        ("dropout", {"rate": -0.1}),
        ("label-smoothing", {"smoothing": 1.0}),
        ("label-smoothing", {"smoothing": math.nan}),
        ("knowledge-distillation", {"temperature": 0.0}),
        ("knowledge-distillation", {"student_epochs": -1}),
        ("model-stacking", {"parts": 4}),  # no such setting
    ],
)
def test_bad_settings_are_one_line_value_errors(name: str, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        build_defense(name, **settings)
    assert "\n" not in str(info.value)


def test_an_unknown_defense_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown defense 'l1'") as info:
        build_defense("l1")
    assert all(name in str(info.value) for name in NAMES)


def test_stacking_needs_three_members() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        stacking_parts(2, SEED)
