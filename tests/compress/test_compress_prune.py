"""Structural pruning: parameters and files shrink, the classifier and GroupNorm stay valid; the
transform records what it pruned, and the record replays exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from compress_testing import DIGITS_SHAPE, MNIST_SHAPE, make_model, random_images, torch_logits
from torch import nn

from compress.prune import (
    DATA_DRIVEN,
    IMPORTANCES,
    PruneData,
    PruneResult,
    PruneSettings,
    prune,
    prune_model,
    replay_history,
)
from models.io import load_model, model_bytes, read_arch, save_model
from models.zoo import classifier_of, count_params


@dataclass
class Pruned:
    model: nn.Module
    result: PruneResult
    x: np.ndarray
    bytes_before: int
    directory: Path


# resnet18 runs at 8x8 so that its one forward and one prune stay around a second.
CASES = {"cnn": MNIST_SHAPE, "mlp": DIGITS_SHAPE, "resnet18": DIGITS_SHAPE}


@pytest.fixture(scope="module", params=sorted(CASES))
def pruned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pruned:
    name = request.param
    model, arch = make_model(name, CASES[name])
    x = random_images(3, CASES[name])
    before = tmp_path_factory.mktemp(f"{name}-before")
    save_model(model, before, arch=arch)
    result = prune_model(model, torch.from_numpy(x[:2]), ratio=0.5)
    after = tmp_path_factory.mktemp(f"{name}-after")
    save_model(model, after, arch=arch)
    return Pruned(model, result, x, model_bytes(before), after)


def test_prune_reduces_parameters(pruned: Pruned) -> None:
    r = pruned.result
    assert r.params_after == count_params(pruned.model)
    # Removing half the channels of consecutive layers removes about three quarters of weights.
    assert r.factor > 3.0, r


def test_classifier_outputs_and_output_shape_kept(pruned: Pruned) -> None:
    assert classifier_of(pruned.model).out_features == 10
    assert torch_logits(pruned.model, pruned.x).shape == (3, 10)


def test_groupnorm_layers_stay_valid(pruned: Pruned) -> None:
    for m in pruned.model.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
            assert m.weight.shape == (m.num_channels,)


def test_pruned_model_reloads_with_identical_outputs(pruned: Pruned) -> None:
    loaded, _ = load_model(pruned.directory)
    np.testing.assert_array_equal(
        torch_logits(loaded, pruned.x), torch_logits(pruned.model, pruned.x)
    )


def test_weights_file_shrinks(pruned: Pruned) -> None:
    after = model_bytes(pruned.directory)
    assert after < pruned.bytes_before / 3
    assert after == pytest.approx(4 * pruned.result.params_after, rel=0.05)  # float32 + header


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_open_unit_interval_is_rejected(ratio: float) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    with pytest.raises(ValueError, match="ratio"):
        prune_model(model, torch.zeros(2, *DIGITS_SHAPE), ratio=ratio)
    assert count_params(model) == 85002  # untouched


def test_unknown_importance_is_rejected() -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    with pytest.raises(ValueError, match="importance"):
        prune_model(model, torch.zeros(2, *DIGITS_SHAPE), importance="nosuch")


@pytest.mark.parametrize("importance", sorted(set(IMPORTANCES) - DATA_DRIVEN))
def test_each_data_free_importance_prunes_ratio_share(importance: str) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    x = torch.from_numpy(random_images(2, DIGITS_SHAPE))
    result = prune_model(model, x, ratio=0.25, importance=importance)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [192, 192, 10]
    assert result.params_after < result.params_before


def test_taylor_needs_data_and_uses_its_gradients() -> None:
    x = random_images(32, DIGITS_SHAPE, seed=3)
    y = np.arange(32) % 10
    model, _ = make_model("cnn", DIGITS_SHAPE)
    with pytest.raises(ValueError, match="reads data"):
        prune_model(model, torch.from_numpy(x[:2]), importance="taylor")
    result = prune_model(
        model, torch.from_numpy(x[:2]), ratio=0.5, importance="taylor", importance_data=(x, y)
    )
    assert result.factor > 3.0
    assert all(p.grad is None for p in model.parameters())  # scoring gradients are cleared


def test_global_pruning_keeps_every_layer_and_groupnorm_valid(tmp_path: Path) -> None:
    model, arch = make_model("cnn", MNIST_SHAPE)
    x = random_images(3, MNIST_SHAPE)
    result = prune_model(model, torch.from_numpy(x[:2]), ratio=0.5, global_pruning=True)
    assert result.params_after < result.params_before
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_channels > 0
    save_model(model, tmp_path, arch=arch)
    loaded, _ = load_model(tmp_path)
    np.testing.assert_array_equal(torch_logits(loaded, x), torch_logits(model, x))


def test_iterative_steps_call_the_fine_tune_hook_between_steps() -> None:
    model, _ = make_model("cnn", DIGITS_SHAPE)
    widths: list[tuple[int, int, bool]] = []

    def after_step(m: nn.Module, step: int, steps: int) -> None:
        widths.append(
            (
                step,
                next(c for c in m.modules() if isinstance(c, nn.Conv2d)).out_channels,
                m.training,
            )
        )

    result = prune_model(
        model, torch.zeros(2, *DIGITS_SHAPE), ratio=0.5, iterative_steps=2, after_step=after_step
    )
    assert [(s, w) for s, w, _ in widths] == [(0, 24), (1, 16)]  # 32 -> 24 -> 16 channels
    assert result.steps == 2 and result.factor > 3.0


def test_macs_are_counted_before_and_after(pruned: Pruned) -> None:
    r = pruned.result
    assert 0 < r.macs_after < r.macs_before


def test_training_mode_is_restored() -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    model.train()
    prune_model(model, torch.zeros(2, *DIGITS_SHAPE))
    assert model.training


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_recorded_history_replays_exactly_on_the_unpruned_model(
    name: str, tmp_path: Path
) -> None:
    model, arch = make_model(name, CASES[name])
    save_model(model, tmp_path / "source", arch=arch)
    x = random_images(3, CASES[name])
    # Global ranking over two steps: the channels that go depend on the weights, not only on
    # the widths, so only an exact record reproduces them.
    settings = PruneSettings(ratio=0.5, global_pruning=True, iterative_steps=2)
    pruned = prune(
        tmp_path / "source", tmp_path / "pruned", settings=settings, data=PruneData(example=x[:2])
    )
    record = json.loads(json.dumps(pruned.record()))  # what the stage writes
    assert record["settings"] == {
        "ratio": 0.5,
        "importance": "l2",
        "global_pruning": True,
        "iterative_steps": 2,
    }
    assert record["structure"] == read_arch(tmp_path / "pruned")["structure"]
    fresh, _ = load_model(tmp_path / "source")
    replay_history(fresh, torch.from_numpy(x[:2]), record["history"])
    target, _ = load_model(tmp_path / "pruned")
    expected = target.state_dict()
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in expected.items()
    }
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_prune_transform_scores_taylor_on_the_data_it_is_given(tmp_path: Path) -> None:
    model, arch = make_model("cnn", DIGITS_SHAPE)
    save_model(model, tmp_path / "source", arch=arch)
    x = random_images(32, DIGITS_SHAPE, seed=3)
    settings = PruneSettings(importance="taylor")
    with pytest.raises(ValueError, match="reads data"):
        prune(tmp_path / "source", tmp_path / "a", settings=settings, data=PruneData(x[:2]))
    pruned = [
        prune(
            tmp_path / "source",
            tmp_path / f"seed{seed}",
            settings=settings,
            data=PruneData(x[:2], importance=(random_images(32, DIGITS_SHAPE, seed=seed), y)),
        ).result.history
        for seed, y in ((4, np.arange(32) % 10), (5, np.arange(32) % 10))
    ]
    assert pruned[0] != pruned[1]  # other data, other channels
