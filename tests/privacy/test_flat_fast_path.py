"""The fast path on groups of several whole modules (DP-SGD's flat group): the same clipped sums
as the vmap reference and as Opacus, on resnet18 too (where Opacus fails)."""

from __future__ import annotations

import torch
from torch import nn

from models.zoo import build_model, seeded_model
from privacy.clipping import clipped_grad_sums
from privacy.dpsgd import flat_group, opacus_clipped_sums
from privacy.fastpath import fast_clipped_grad_sums, per_example_sq_norms, supports_fast_path
from privacy.groups import LayerGroup, layer_groups

torch.set_num_threads(1)


def _close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)


def _cnn_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = seeded_model("cnn", seed=0, in_shape=(1, 8, 8), num_classes=3, width=4, hidden=16)
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(12, 1, 8, 8, generator=gen), torch.randint(0, 3, (12,), generator=gen)


def test_flat_group_fast_sums_equal_reference_and_opacus() -> None:
    model, x, y = _cnn_batch()
    group = [flat_group(model, clip_norm=0.05)]  # small: every example is clipped
    assert supports_fast_path(model, group)
    (norm,) = per_example_sq_norms(model, x, y, group).values()
    assert (norm.sqrt() > 0.05).all()
    fast = fast_clipped_grad_sums(model, x, y, group)
    _close(fast, clipped_grad_sums(model, x, y, group))
    _close(fast, opacus_clipped_sums(model, x, y, group))
    assert all(p.grad is None for p in model.parameters())


def test_groups_of_several_modules_each_clipped_by_its_own_factor() -> None:
    """Two groups of two and three modules, at different clip norms."""
    model, x, y = _cnn_batch()
    layers = layer_groups(model)
    split = 2
    groups = [
        LayerGroup(f"part{i}", tuple(n for g in part for n in g.param_names), clip, 0.5)
        for i, (part, clip) in enumerate([(layers[:split], 0.03), (layers[split:], 0.2)])
    ]
    assert supports_fast_path(model, groups)
    _close(fast_clipped_grad_sums(model, x, y, groups), clipped_grad_sums(model, x, y, groups))


def test_flat_group_on_resnet18() -> None:
    model = seeded_model("resnet18", seed=0, in_shape=(1, 8, 8), num_classes=4)
    owners = {type(m) for m in model.modules() if any(True for _ in m.parameters(recurse=False))}
    assert owners == {nn.Conv2d, nn.GroupNorm, nn.Linear}
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(3, 1, 8, 8, generator=gen), torch.randint(0, 4, (3,), generator=gen)
    group = [flat_group(model, clip_norm=0.5)]
    assert supports_fast_path(model, group)
    _close(fast_clipped_grad_sums(model, x, y, group), clipped_grad_sums(model, x, y, group))


def test_groups_with_part_of_a_module_are_refused() -> None:
    model = build_model("mlp", in_shape=(1, 4, 4), num_classes=3, hidden=5)
    names = [n for n, _ in model.named_parameters()]
    weight_only = [n for n in names if n.endswith("weight")]
    biases = [n for n in names if n.endswith("bias")]
    split = [
        LayerGroup("w", tuple(weight_only), 1.0, 0.5),
        LayerGroup("b", tuple(biases), 1.0, 0.5),
    ]
    assert not supports_fast_path(model, split)
    assert not supports_fast_path(model, [LayerGroup("some", tuple(names[:-1]), 1.0, 1.0)])
    assert supports_fast_path(model, [LayerGroup("all", tuple(names), 1.0, 1.0)])
    # A frozen parameter: the trainable ones are not that module's whole gradient.
    dict(model.named_parameters())[names[-1]].requires_grad_(False)
    assert not supports_fast_path(model, [LayerGroup("all", tuple(names[:-1]), 1.0, 1.0)])
