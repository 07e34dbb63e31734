"""LADP's reference per-example clipping: Σ_i c_{i,l} g_{i,l} per group l, from materialised
per-example gradients (torch.func vmap), c_{i,l} = min(1, C_l / ||g_{i,l}||).

privacy.fastpath computes the same sums without per-example gradient tensors where every group is
made of whole supported modules; `auto_clipped_sums` takes it there and this path elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from privacy.fastpath import clip_factor, fast_clipped_grad_sums, supports_fast_path
from privacy.groups import LayerGroup

# Per-example gradients of one chunk are held at once. Small chunks are also faster: blocks
# over 32 MiB go back to the OS on free (glibc), and re-faulting them each step, plus the cache
# misses, cost several times the arithmetic (measured on the cnn: chunks of ~14 are best).
CHUNK_BYTES = 24 << 20

# (model, x, y, groups) -> {param name: Σ_i c_{i,l} g_{i,l}}; the fast path replaces this.
ClippedSumFn = Callable[[nn.Module, Tensor, Tensor, Sequence[LayerGroup]], dict[str, Tensor]]


def per_example_grads(
    model: nn.Module, x: Tensor, y: Tensor, param_names: Sequence[str]
) -> dict[str, Tensor]:
    """Per-example gradients of the cross-entropy loss (leading dimension = examples)."""
    all_params = dict(model.named_parameters())
    params = {n: all_params[n].detach() for n in param_names}

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        # Parameters not passed (frozen ones) and buffers come from the module itself.
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    # "different": each example draws its own dropout mask, as in ordinary batched training.
    per_example = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")
    return per_example(params, x, y)


def clip_factors(grads: dict[str, Tensor], groups: Sequence[LayerGroup]) -> dict[str, Tensor]:
    """Per group: c_{i,l} = min(1, C_l / ||g_{i,l}||), one factor per example."""
    factors = {}
    for g in groups:
        # vector_norm reduces in place; g.pow(2) would copy the (large) per-example grads.
        per_param = [torch.linalg.vector_norm(grads[n].flatten(1), dim=1) for n in g.param_names]
        norms = torch.linalg.vector_norm(torch.stack(per_param), dim=0)
        factors[g.name] = clip_factor(norms, g.clip_norm)
    return factors


def examples_per_chunk(model: nn.Module) -> int:
    """How many examples' per-example gradients fit in CHUNK_BYTES."""
    per_example = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, CHUNK_BYTES // max(1, per_example))


def clipped_grad_sums(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    groups: Sequence[LayerGroup],
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Reference path: Σ_i c_{i,l} g_{i,l} per parameter, from materialised per-example grads.

    Examples are processed in chunks so that memory stays bounded; chunking changes nothing in
    the result. An empty batch gives zeros.
    """
    params = dict(model.named_parameters())
    names = [n for g in groups for n in g.param_names]
    sums = {n: torch.zeros_like(params[n], memory_format=torch.contiguous_format) for n in names}
    step = chunk_size or examples_per_chunk(model)
    for start in range(0, len(x), step):
        grads = per_example_grads(model, x[start : start + step], y[start : start + step], names)
        factors = clip_factors(grads, groups)
        for g in groups:
            for n in g.param_names:
                sums[n] += torch.tensordot(factors[g.name], grads[n], dims=1)
    return sums


def auto_clipped_sums(
    model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
) -> dict[str, Tensor]:
    """The fast path where it supports every group, else the reference path (same sums)."""
    if supports_fast_path(model, groups):
        return fast_clipped_grad_sums(model, x, y, groups)
    return clipped_grad_sums(model, x, y, groups)
