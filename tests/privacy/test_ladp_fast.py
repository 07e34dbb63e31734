"""LADP fast path (exact per-example clipping from activations) and the Fisher allocation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from models.zoo import build_model
from privacy import LADPConfig, make_private
from privacy.clipping import clipped_grad_sums, per_example_grads
from privacy.fastpath import (
    SHIFTED_MIN_CHANNELS,
    fast_clipped_grad_sums,
    per_example_sq_norms,
    supports_fast_path,
)
from privacy.groups import LayerGroup, check_groups, group_noise_stds, layer_groups
from privacy.ladp import train_ladp
from privacy.sensitivity import allocate, fisher_schedule, fisher_sensitivities, group_sizes

torch.set_num_threads(1)


class SequenceNet(nn.Module):
    """A Linear on a (B, T, d) sequence, then a Linear on the flattened result."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Linear(6, 5)
        self.head = nn.Linear(4 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.token(x.view(len(x), 4, 6))).flatten(1))


def cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.GroupNorm(1, 3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 2, dilation=2, bias=False),
        nn.GroupNorm(2, 4),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    )
    cnn = build_model("cnn", in_shape=(1, 8, 8), num_classes=3, width=4, hidden=16, groups=2)
    # Stride-1 convs wide enough for the shifted-window path (uneven kernels, padding, dilation).
    c = SHIFTED_MIN_CHANNELS
    shifted = nn.Sequential(
        nn.Conv2d(c, c, (3, 2), padding=(1, 2), dilation=(1, 2)),  # (c, 8, 10)
        nn.GroupNorm(2, c),
        nn.ReLU(),
        nn.Conv2d(c, 5, (2, 3), padding=(0, 1), dilation=(2, 1), bias=False),  # (5, 6, 10)
        nn.Flatten(),
        nn.Linear(5 * 6 * 10, 3),
    )
    mlp = nn.Sequential(nn.Linear(24, 7), nn.Tanh(), nn.Linear(7, 3))
    gen = torch.Generator().manual_seed(1)
    return [
        ("linear", mlp, torch.randn(10, 24, generator=gen)),
        ("sequence-linear", SequenceNet(), torch.randn(10, 24, generator=gen)),
        ("conv-groupnorm", conv, torch.randn(9, 2, 8, 8, generator=gen)),
        ("cnn", cnn, torch.randn(11, 1, 8, 8, generator=gen)),
        ("conv-shifted", shifted, torch.randn(7, c, 8, 8, generator=gen)),
    ]


@pytest.mark.parametrize("clip", [0.01, 0.3, 1e9])
@pytest.mark.parametrize("case", range(5))
def test_fast_sums_equal_reference(case: int, clip: float) -> None:
    name, model, x = cases()[case]
    y = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(2))
    groups = [
        LayerGroup(g.name, g.param_names, clip * (i + 1), g.weight)
        for i, g in enumerate(layer_groups(model))
    ]
    assert supports_fast_path(model, groups)
    reference = clipped_grad_sums(model, x, y, groups)
    fast = fast_clipped_grad_sums(model, x, y, groups)
    assert set(fast) == set(reference)
    for n in reference:
        assert fast[n].shape == reference[n].shape
        diff = (fast[n] - reference[n]).abs().max().item()
        assert diff <= 1e-5, (name, n, diff)
    assert all(p.grad is None for p in model.parameters())  # the fast path leaves .grad alone


def test_fast_sums_equal_reference_on_resnet18_with_inplace_relu() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", in_shape=(1, 16, 16), num_classes=4)
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(3, 1, 16, 16, generator=gen), torch.randint(0, 4, (3,), generator=gen)
    groups = layer_groups(model, clip_norm=0.5)
    assert supports_fast_path(model, groups)
    reference = clipped_grad_sums(model, x, y, groups)
    fast = fast_clipped_grad_sums(model, x, y, groups)
    assert max((fast[n] - reference[n]).abs().max().item() for n in reference) <= 1e-5


def test_fast_norms_equal_reference_norms() -> None:
    _, model, x = cases()[2]
    y = torch.zeros(len(x), dtype=torch.long)
    groups = layer_groups(model)
    grads = per_example_grads(model, x, y, [n for g in groups for n in g.param_names])
    fast = per_example_sq_norms(model, x, y, groups)
    for g in groups:
        ref = sum(grads[n].flatten(1).pow(2).sum(1) for n in g.param_names)
        torch.testing.assert_close(fast[g.name], ref, rtol=1e-4, atol=1e-7)


def test_unsupported_groups_fall_back() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 36, 2))
    groups = layer_groups(model)
    assert not supports_fast_path(model, groups)
    merged = [LayerGroup("all", tuple(n for g in groups for n in g.param_names), 1.0, 1.0)]
    assert not supports_fast_path(model, merged)
    with pytest.raises(ValueError, match="fast path"):
        fast_clipped_grad_sums(model, torch.randn(2, 2, 8, 8), torch.zeros(2).long(), groups)


def sensitivities() -> tuple[nn.Module, list[LayerGroup], dict[str, float]]:
    _, model, x = cases()[3]
    y = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(3))
    groups = layer_groups(model)
    return model, groups, fisher_sensitivities(model, x, y, groups, batch_size=4)


def test_fisher_is_mean_squared_per_example_norm_per_parameter() -> None:
    _, model, x = cases()[3]
    y = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(3))
    groups = layer_groups(model)
    sens = fisher_sensitivities(model, x, y, groups, batch_size=4)
    grads = per_example_grads(model, x, y, [n for g in groups for n in g.param_names])
    for g in groups:
        size = sum(grads[n][0].numel() for n in g.param_names)
        ref = sum(grads[n].flatten(1).pow(2).sum(1) for n in g.param_names).mean() / size
        assert sens[g.name] == pytest.approx(ref.item(), rel=1e-4)


@pytest.mark.parametrize("mode", ["utility", "protect", "uniform"])
def test_fisher_allocation_composes_to_sigma_eff(mode: str) -> None:
    model, groups, sens = sensitivities()
    allocated = allocate(groups, sens, mode=mode, tau=2.0)
    check_groups(model, allocated)
    stds = group_noise_stds(1.3, [g.weight for g in allocated])
    assert math.fsum(s**-2 for s in stds) == pytest.approx(1.3**-2, rel=1e-9)
    ranked = sorted(allocated, key=lambda g: sens[g.name], reverse=True)
    # Top half by Fisher clipped at 1.0, the others at 5.0 (the original study's values).
    assert [g.clip_norm for g in ranked] == [1.0] * 3 + [5.0] * 3
    weights = [g.weight for g in ranked]
    if mode == "utility":
        assert weights == sorted(weights, reverse=True) and weights[0] > weights[-1]
    elif mode == "protect":
        assert weights == sorted(weights) and weights[0] < weights[-1]
    else:
        assert weights == pytest.approx([1 / 6] * 6)


def test_matched_allocation_gives_flat_noise_per_coordinate() -> None:
    model, groups, sens = sensitivities()
    sizes = group_sizes(model, groups)
    allocated = allocate(groups, sens, mode="matched", clip_norm=0.7, sizes=sizes)
    check_groups(model, allocated)
    sigma_eff = 1.3
    stds = group_noise_stds(sigma_eff, [g.weight for g in allocated])
    assert math.fsum(s**-2 for s in stds) == pytest.approx(sigma_eff**-2, rel=1e-9)
    # Noise std per coordinate σ_l C_l equals flat DP-SGD's σ_eff · clip_norm in every group,
    # and the clip norms split clip_norm² in proportion to the groups' mean squared gradient norm.
    for g, std in zip(allocated, stds, strict=True):
        assert std * g.clip_norm == pytest.approx(sigma_eff * 0.7, rel=1e-9)
    mean_sq = {g.name: sens[g.name] * sizes[g.name] for g in groups}
    total = math.fsum(mean_sq.values())
    for g in allocated:
        assert g.clip_norm == pytest.approx(0.7 * math.sqrt(mean_sq[g.name] / total), rel=1e-9)
    with pytest.raises(ValueError, match="sizes"):
        allocate(groups, sens, mode="matched")


def test_allocation_rejects_bad_knobs() -> None:
    _, groups, sens = sensitivities()
    with pytest.raises(ValueError, match="allocation"):
        allocate(groups, sens, mode="greedy")
    with pytest.raises(ValueError, match="tau"):
        allocate(groups, sens, tau=-1.0)


def test_schedule_remeasures_every_k_steps() -> None:
    model, _, _ = sensitivities()
    x = torch.randn(20, 1, 8, 8)
    y = torch.randint(0, 3, (20,))
    kwargs = dict(
        tau=1.0, sensitive_fraction=0.5, clip_sensitive=1.0, clip_other=5.0, clip_norm=1.0
    )
    schedule = fisher_schedule(x, y, mode="utility", every=3, samples=8, **kwargs)  # type: ignore[arg-type]
    first = schedule(model, 0)
    assert schedule(model, 1) is first
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    third = list(schedule(model, 3))
    assert [g.weight for g in third] != [g.weight for g in first]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(0)
    return gen.normal(size=(80, 1, 8, 8)).astype(np.float32), gen.integers(0, 3, 80)


# "uniform" unless a test passes public data (the default, "matched", reads it).
TINY = LADPConfig(
    epsilon=2.0, delta=1e-3, epochs=1, expected_batch_size=20, lr=0.5, allocation="uniform"
)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", in_shape=(1, 8, 8), num_classes=3, width=4, hidden=16, groups=2)


def test_train_fast_path_equals_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    # The same reproducible noise: the two paths must then give the same model.
    fast = train_ladp(small_cnn(), x, y, config=TINY, seed=1, noise_seed=1).model
    slow_config = LADPConfig(**{**TINY.__dict__, "fast_path": False})
    slow = train_ladp(small_cnn(), x, y, config=slow_config, seed=1, noise_seed=1).model
    for p, q in zip(fast.parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("allocation", ["utility", "matched"])
def test_train_with_fisher_allocation(data: tuple[np.ndarray, np.ndarray], allocation: str) -> None:
    x, y = data
    config = LADPConfig(**{**TINY.__dict__, "allocation": allocation, "fisher_every": 2})
    with pytest.raises(ValueError, match="public"):
        train_ladp(small_cnn(), x, y, config=config, seed=0)
    result = train_ladp(small_cnn(), x, y, config=config, seed=0, public_x=x[:16], public_y=y[:16])
    assert result.spend.epsilon <= config.epsilon
    assert result.steps_taken == 4
    for bad in ({"allocation": "greedy"}, {"clip_other": 0.0}, {"fisher_every": 0}):
        with pytest.raises(ValueError):
            LADPConfig(**{**TINY.__dict__, **bad}).check(80)


def test_make_private_front_door(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    engine = make_private(small_cnn(), x, y, config=TINY, seed=1, noise_seed=3)
    assert engine.spend().epsilon == 0.0
    while not engine.done:
        engine.step()
    with pytest.raises(RuntimeError, match="budget"):
        engine.step()
    result = engine.result()
    assert result.steps_taken == 4 and result.spend.epsilon <= TINY.epsilon
    same = train_ladp(small_cnn(), x, y, config=TINY, seed=1, noise_seed=3).model
    for p, q in zip(result.model.parameters(), same.parameters(), strict=True):
        assert torch.equal(p, q)


def test_make_private_takes_the_engines_parts_by_name(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = small_cnn()
    groups = layer_groups(model, clip_norm=0.5)
    seen: list[int] = []

    def sums(
        m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, gs: Sequence[LayerGroup]
    ) -> dict[str, torch.Tensor]:
        seen.append(len(gs))
        return clipped_grad_sums(m, xb, yb, gs)

    engine = make_private(model, x, y, config=TINY, groups=groups, clipped_sums=sums)
    engine.step()
    assert engine.groups == groups and seen == [len(groups)]
    # The library's own default reads public data: without it, one line says what to pass.
    with pytest.raises(ValueError, match="needs public data"):
        make_private(small_cnn(), x, y)
    matched = make_private(small_cnn(), x, y, public_x=x[:16], public_y=y[:16])
    assert matched.config.allocation == "matched" and matched.group_schedule is not None
