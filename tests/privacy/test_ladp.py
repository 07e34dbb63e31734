"""LADP: the mechanism (clipping, noise, one step), the accounting of a run, and bad inputs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import PRVAccountant
from torch import nn

from models.zoo import build_model
from pipelines.data import load_dataset
from privacy.accounting import compute_epsilon
from privacy.clipping import clip_factors, clipped_grad_sums, per_example_grads
from privacy.config import LADPConfig
from privacy.groups import LayerGroup, check_groups, group_noise_stds, layer_groups
from privacy.ladp import LADPResult, train_ladp
from privacy.randomness import mechanism_rngs
from privacy.step import ladp_step, noisy_gradient

HUGE = 1e9


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", in_shape=(1, 8, 8), num_classes=10, width=4, hidden=16, groups=2)


def tiny_batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def with_clip(groups: list[LayerGroup], clip: float) -> list[LayerGroup]:
    return [LayerGroup(g.name, g.param_names, clip, g.weight) for g in groups]


def uneven_groups(model: nn.Module) -> list[LayerGroup]:
    """Non-uniform weights (sum 1) and clip norms, as the Fisher allocation will produce."""
    base = layer_groups(model)
    raw = np.arange(1, len(base) + 1, dtype=float)
    weights = raw / raw.sum()
    return [
        LayerGroup(g.name, g.param_names, 0.5 + i, float(w))
        for i, (g, w) in enumerate(zip(base, weights, strict=True))
    ]


def test_layer_groups_one_per_parameterised_module() -> None:
    model = tiny_model()
    groups = layer_groups(model, clip_norm=2.0)
    # conv, norm, conv, norm, linear, linear
    assert [g.name for g in groups] == ["0", "1", "4", "5", "9", "11"]
    assert groups[0].param_names == ("0.weight", "0.bias")
    assert all(g.clip_norm == 2.0 for g in groups)
    assert math.fsum(g.weight for g in groups) == pytest.approx(1.0)
    check_groups(model, groups)


def test_noise_stds_compose_to_sigma_eff() -> None:
    weights = [0.5, 0.3, 0.15, 0.05]
    stds = group_noise_stds(2.0, weights)
    assert stds[0] == pytest.approx(2.0 / math.sqrt(0.5))
    assert math.fsum(s**-2 for s in stds) == pytest.approx(2.0**-2)


def test_huge_clip_sums_equal_plain_per_example_loop() -> None:
    model = tiny_model()
    x, y = tiny_batch()
    groups = with_clip(layer_groups(model), HUGE)
    sums = clipped_grad_sums(model, x, y, groups, chunk_size=5)  # chunks of 5, 5, 2
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            assert p.grad is not None
            expected[n] += p.grad
    for n in expected:
        torch.testing.assert_close(sums[n], expected[n], rtol=1e-4, atol=1e-5)


def test_clipped_norms_are_bounded_per_group() -> None:
    model = tiny_model()
    x, y = tiny_batch(16)
    groups = with_clip(uneven_groups(model), 0.05)  # small: every example gets clipped
    names = [n for g in groups for n in g.param_names]
    grads = per_example_grads(model, x, y, names)
    factors = clip_factors(grads, groups)
    for g in groups:
        sq = sum(
            (factors[g.name][:, None] * grads[n].flatten(1)).pow(2).sum(1) for n in g.param_names
        )
        norms = torch.as_tensor(sq).sqrt()
        assert norms.max() <= g.clip_norm * (1 + 1e-5)
        assert norms.min() >= g.clip_norm * 0.99  # tiny clip: all at the bound
    # The reference sums are exactly Σ_i c_i g_i, whatever the chunking.
    a = clipped_grad_sums(model, x, y, groups, chunk_size=3)
    b = clipped_grad_sums(model, x, y, groups)
    for g in groups:
        for n in g.param_names:
            manual = (factors[g.name].view(-1, *[1] * (grads[n].dim() - 1)) * grads[n]).sum(0)
            torch.testing.assert_close(a[n], manual, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b[n], manual, rtol=1e-4, atol=1e-6)


def test_empty_batch_gives_zero_sums() -> None:
    model = tiny_model()
    x, y = tiny_batch(0)
    sums = clipped_grad_sums(model, x, y, layer_groups(model))
    assert all(torch.count_nonzero(s) == 0 for s in sums.values())


def test_noise_free_step_with_huge_clip_is_plain_sgd() -> None:
    model = tiny_model()
    reference = copy.deepcopy(model)
    x, y = tiny_batch(10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ladp_step(
        model,
        opt,
        x,
        y,
        groups=with_clip(layer_groups(model), HUGE),
        sigma_eff=0.0,
        expected_batch_size=10,
        rng=mechanism_rngs(0)[0],
    )
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(reference(x), y).backward()
    ref_opt.step()
    for (n, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=n)


def test_noise_std_per_group() -> None:
    # Empty batch + SGD with lr 1: each step moves the parameters by exactly -noise / B.
    model = tiny_model()
    groups = uneven_groups(model)
    stds = group_noise_stds(1.7, [g.weight for g in groups])
    batch, rng = 8.0, mechanism_rngs(1)[0]
    x, y = tiny_batch(0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    draws: dict[str, list[torch.Tensor]] = {g.name: [] for g in groups}
    for _ in range(20):
        ladp_step(
            model, opt, x, y, groups=groups, sigma_eff=1.7, expected_batch_size=batch, rng=rng
        )
        params = dict(model.named_parameters())
        for g in groups:
            moved = [(before[n] - params[n].detach()).flatten() for n in g.param_names]
            draws[g.name].append(torch.cat(moved))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for g, sigma_l in zip(groups, stds, strict=True):
        sample = torch.cat(draws[g.name])
        assert len(sample) >= 160
        expected = sigma_l * g.clip_norm / batch
        assert sample.std().item() == pytest.approx(expected, rel=0.10), g.name
        assert abs(sample.mean().item()) < 0.3 * expected


def test_noisy_gradient_is_reproducible() -> None:
    model = tiny_model()
    groups = layer_groups(model)
    sums = {n: torch.zeros_like(p) for n, p in model.named_parameters()}

    def draw(seed: int | None) -> dict[str, torch.Tensor]:
        rng = mechanism_rngs(seed)[0]
        return noisy_gradient(sums, groups, sigma_eff=1.0, expected_batch_size=4, rng=rng)

    a, b, c = draw(3), draw(3), draw(4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    # Secure (the default): fresh OS entropy every time.
    d, e = draw(None), draw(None)
    assert not any(torch.equal(d[n], e[n]) for n in d)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("digits")
    return data.x[:300], data.y[:300]


# "uniform": these runs have no public data (the default, "matched", reads it).
TINY = LADPConfig(
    epsilon=2.0, delta=1e-3, epochs=2, expected_batch_size=60, lr=0.5, allocation="uniform"
)


def test_train_ladp_spend_is_provable(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    calls: list[tuple[int, int]] = []
    result = train_ladp(
        tiny_model(), x, y, config=TINY, seed=0, progress=lambda d, t: calls.append((d, t))
    )
    spend = result.spend
    assert spend.epsilon <= TINY.epsilon
    assert spend.sample_rate == pytest.approx(60 / 300)
    assert result.steps_planned == result.steps_taken == spend.steps == 10
    assert not result.stopped_at_budget
    assert calls[-1] == (10, 10)
    assert not result.model.training
    fresh = PRVAccountant()
    for _ in range(spend.steps):
        fresh.step(noise_multiplier=spend.noise_multiplier, sample_rate=spend.sample_rate)
    assert spend.epsilon == pytest.approx(fresh.get_epsilon(delta=spend.delta), rel=1e-9)
    assert spend.to_dict()["mechanism"] == "ladp"


def test_train_ladp_stops_at_budget(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    config = LADPConfig(**{**TINY.__dict__, "noise_multiplier": 1.2, "epochs": 20})
    result = train_ladp(tiny_model(), x, y, config=config, seed=0)
    spend = result.spend
    assert result.stopped_at_budget
    assert 0 < result.steps_taken < result.steps_planned == 100
    assert spend.epsilon <= config.epsilon
    one_more = compute_epsilon(
        noise_multiplier=1.2,
        sample_rate=spend.sample_rate,
        steps=spend.steps + 1,
        delta=spend.delta,
    )
    assert one_more > config.epsilon


def test_noise_is_secure_by_default_and_reproducible_only_on_request(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    config = LADPConfig(**{**TINY.__dict__, "epochs": 1, "accountant": "rdp"})

    def train(noise_seed: int | None) -> tuple[list[torch.Tensor], LADPResult]:
        result = train_ladp(tiny_model(), x, y, config=config, seed=5, noise_seed=noise_seed)
        return list(result.model.parameters()), result

    (a, ra), (b, _) = train(None), train(None)  # the same public seed, fresh noise
    assert ra.noise_seed is None and ra.spend.noise == "secure"
    assert not any(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    (c, rc), (d, _), (e, _) = train(7), train(7), train(8)
    assert rc.noise_seed == 7 and rc.spend.noise == "reproducible"
    assert all(torch.equal(p, q) for p, q in zip(c, d, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(c, e, strict=True))


def test_train_ladp_takes_custom_groups(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    model = tiny_model()
    config = LADPConfig(**{**TINY.__dict__, "epochs": 1, "accountant": "rdp"})
    seen: list[int] = []

    def schedule(m: nn.Module, step: int) -> list[LayerGroup]:
        seen.append(step)
        return uneven_groups(m)

    result = train_ladp(model, x, y, config=config, seed=0, group_schedule=schedule)
    assert seen == list(range(result.steps_taken))


@pytest.mark.parametrize(
    "change",
    [
        {"epsilon": 0.0},
        {"epsilon": -1.0},
        {"delta": 1 / 300},  # delta must be < 1/n
        {"delta": 0.0},
        {"epochs": 0},
        {"expected_batch_size": 0},
        {"lr": 0.0},
        {"clip_norm": 0.0},
        {"accountant": "gdp"},
        {"optimizer": "lbfgs"},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": 0.3},  # not one step fits in the budget
    ],
)
def test_bad_config_is_a_value_error(digits: tuple[np.ndarray, np.ndarray], change: dict) -> None:
    x, y = digits
    config = LADPConfig(**{**TINY.__dict__, **change})
    with pytest.raises(ValueError) as info:
        train_ladp(tiny_model(), x, y, config=config, seed=0)
    assert "\n" not in str(info.value)


def test_bad_groups_are_a_value_error() -> None:
    model = tiny_model()
    groups = layer_groups(model)
    with pytest.raises(ValueError, match="cover"):
        check_groups(model, groups[1:])
    with pytest.raises(ValueError, match="sum to 1"):
        check_groups(model, [LayerGroup(g.name, g.param_names, 1.0, 0.5) for g in groups])
    with pytest.raises(ValueError):
        group_noise_stds(1.0, [0.5, 0.0, 0.5])
    with pytest.raises(ValueError):
        train_ladp(
            model, np.zeros((3, 1, 8, 8), np.float32), np.zeros(2, np.int64), config=TINY, seed=0
        )


def test_batchnorm_and_nan_data_are_value_errors() -> None:
    x = np.zeros((4, 1, 8, 8), np.float32)
    y = np.zeros(4, np.int64)
    config = LADPConfig(delta=0.1)
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 10))
    with pytest.raises(ValueError, match="BatchNorm"):
        train_ladp(bn, x, y, config=config, seed=0)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_ladp(tiny_model(), x, y, config=config, seed=0)
