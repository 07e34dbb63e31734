"""LADP fast path (DESIGN §5.8): per-example clipping without per-example gradient tensors.

One forward and one backward pass capture, for every grouped module, its input activations a and
the gradient b of the summed loss with respect to its output (for example i only example i's loss
depends on row i, so b_i is example i's output gradient). From them, exactly:

- Linear, 2-D input: ||∇W_i||² = ||a_i||² ||b_i||² (ghost norm), ∇b_i = b_i.
- Linear on sequences (B, T, d) and Conv2d (im2col: a -> unfold(a), (B, L, D)): ∇W_i = b_iᵀ a_i,
  ||∇W_i||² = <a_i a_iᵀ, b_i b_iᵀ> (Gram matrices, T² or L² per example) or, when D·O < T², the
  per-example gradient of that one layer is formed directly (cheaper, still exact).
- When a stride-1 Conv2d with at least SHIFTED_MIN_CHANNELS input channels forms it directly, it
  does so one kernel tap at a time, from views of the padded input (no im2col copy).
- GroupNorm: ∇γ_i = Σ_spatial x̂_i ⊙ b_i, ∇β_i = Σ_spatial b_i (x̂ = the normalised input).

A group may hold several whole modules (DP-SGD's flat group holds them all): its per-example
squared norm is the sum of its modules' ||∇_i||² above, one factor c_i = min(1, C / ||g_i||) per
example per group, and each module's clipped sum Σ_i c_i ∇W_i is one contraction (Σ_i c_i b_iᵀ a_i)
with its group's c. A group of one module (LADP's layer groups) is the case of one term. Modules
other than these, or groups that hold part of a module's parameters (or a frozen one), are not
supported: `supports_fast_path` says so and the engine then keeps the reference path
(privacy/clipping.py, vmap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy.groups import LayerGroup

CLIP_EPS = 1e-6  # keeps c_{i,l} finite for zero gradients and ||c g|| strictly below C_l
SUPPORTED = (nn.Linear, nn.Conv2d, nn.GroupNorm)
# Below this many input channels im2col (F.unfold) is cheaper than one bmm per kernel tap.
SHIFTED_MIN_CHANNELS = 8


def clip_factor(norms: Tensor, clip_norm: float) -> Tensor:
    """c_i = min(1, C / ||g_i||) per example: the fast and the reference path share it."""
    return (clip_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def _supported(module: nn.Module) -> bool:
    if not isinstance(module, SUPPORTED):
        return False
    if isinstance(module, nn.Conv2d):
        return (
            module.groups == 1
            and not isinstance(module.padding, str)
            and module.padding_mode == "zeros"
        )
    return True


def _modules_for(
    modules: dict[str, nn.Module], group: LayerGroup
) -> list[tuple[str, nn.Module]] | None:
    """The supported modules whose trainable parameters together are exactly the group's (each
    module's every parameter, trainable, and nothing else), as (name, module); else None."""
    owners: dict[str, nn.Module] = {}
    for param in group.param_names:
        name = param.rpartition(".")[0]
        module = modules.get(name)
        if module is None or not _supported(module):
            return None
        owners.setdefault(name, module)
    own: set[str] = set()
    for name, module in owners.items():
        for p, t in module.named_parameters(recurse=False):
            if not t.requires_grad:
                return None  # a frozen parameter of a grouped module: not this module's gradient
            own.add(f"{name}.{p}" if name else p)
    if not owners or own != set(group.param_names) or len(own) != len(group.param_names):
        return None
    return list(owners.items())


def supports_fast_path(model: nn.Module, groups: Sequence[LayerGroup]) -> bool:
    """True when every group is the union of whole Linear / Conv2d (groups=1) / GroupNorm
    modules' parameters: one module (LADP's layer groups) or several (DP-SGD's flat group)."""
    modules = dict(model.named_modules())
    return all(_modules_for(modules, g) is not None for g in groups)


def _group_modules(
    model: nn.Module, groups: Sequence[LayerGroup]
) -> list[list[tuple[str, nn.Module]]]:
    modules = dict(model.named_modules())
    found = []
    for g in groups:
        owned = _modules_for(modules, g)
        if owned is None:
            raise ValueError(f"fast path does not support group '{g.name}'")
        found.append(owned)
    return found


@dataclass
class _Capture:
    module: nn.Module
    prefix: str
    inputs: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)


def _capture(
    model: nn.Module, x: Tensor, y: Tensor, modules: Sequence[tuple[str, nn.Module]]
) -> list[tuple[Tensor, Tensor]]:
    """(input activation, output gradient of the summed loss) per module, one backward pass."""
    caps: list[_Capture] = []
    handles: list[Any] = []
    for name, module in modules:
        cap = _Capture(module, name)
        caps.append(cap)

        def fwd(_m: nn.Module, inp: tuple[Tensor, ...], out: Tensor, cap: _Capture = cap) -> None:
            cap.inputs.append(inp[0].detach())
            # A tensor hook (not a module backward hook): it gets the gradient of this output
            # even when a later in-place op (ReLU(inplace=True) in resnet18) modifies it.
            out.register_hook(lambda grad, cap=cap: cap.grads.append(grad.detach()))

        handles.append(module.register_forward_hook(fwd))
    try:
        # Differentiate with respect to the input only: autograd then skips every weight
        # gradient (not needed for it), and the tensor hooks still see every output gradient.
        leaf = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(leaf), y, reduction="sum")
        torch.autograd.grad(loss, leaf)
    finally:
        for h in handles:
            h.remove()
    result = []
    for cap in caps:
        if len(cap.inputs) != 1 or len(cap.grads) != 1:
            raise ValueError(f"fast path: module '{cap.prefix}' must run exactly once per forward")
        result.append((cap.inputs[0], cap.grads[0]))
    return result


def _sequence_weight(a: Tensor, b: Tensor) -> tuple[Tensor, Any]:
    """a (B, T, D), b (B, T, O): per-example ||b_iᵀ a_i||² and a function c -> Σ_i c_i b_iᵀ a_i."""
    t, d, o = a.shape[1], a.shape[2], b.shape[2]
    if d * o < t * t:
        per_example = torch.bmm(b.transpose(1, 2), a)  # (B, O, D): this layer only

        def from_grads(c: Tensor) -> Tensor:
            return torch.tensordot(c, per_example, dims=1)

        return per_example.flatten(1).pow(2).sum(1), from_grads
    sq = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(b, b.transpose(1, 2))).sum((1, 2))

    def from_activations(c: Tensor) -> Tensor:
        return torch.einsum("bto,btd->od", b * c[:, None, None], a)

    return sq, from_activations


def _shifted_applies(module: nn.Conv2d, a: Tensor, b: Tensor) -> bool:
    """Stride 1, many input channels, and per-example gradients cheaper than Gram matrices."""
    out_positions = b.shape[2] * b.shape[3]
    return (
        tuple(module.stride) == (1, 1)
        and module.in_channels >= SHIFTED_MIN_CHANNELS
        and module.weight[0].numel() * module.out_channels < out_positions**2
    )


def _conv_tap_grads(module: nn.Conv2d, a: Tensor, b: Tensor) -> Tensor:
    """Per-example weight gradients of a stride-1 conv without im2col, one kernel tap at a time:
    (kh·kw, B, O, C), tap t = (i, j) holding ∇W_b[:, :, i, j].

    Flatten the padded input rows to one axis of row length Wp; the input window of tap (i, j)
    for every output position is then one contiguous slice starting at i·dh·Wp + j·dw, read as a
    view. Output gradients are padded with zero columns to the same row length, so the positions
    that wrap into the next row contribute nothing: exact, one bmm per tap.
    """
    (kh, kw), (dh, dw) = module.kernel_size, module.dilation
    ph, pw = (int(p) for p in module.padding)  # never "same"/"valid": see _module_for
    out_h, out_w = b.shape[2], b.shape[3]
    row = a.shape[3] + 2 * pw
    # One extra zero row keeps the last tap's slice inside the tensor.
    rows = F.pad(a, (pw, pw, ph, ph + 1)).flatten(2)  # (B, C, (Hp + 1)·Wp)
    grads = F.pad(b, (0, row - out_w)).flatten(2)  # (B, O, Ho·Wp)
    span = out_h * row
    taps = a.new_empty(kh * kw, a.shape[0], b.shape[1], a.shape[1])
    for i in range(kh):
        for j in range(kw):
            start = i * dh * row + j * dw
            window = rows[:, :, start : start + span].transpose(1, 2)  # (B, Ho·Wp, C), a view
            torch.bmm(grads, window, out=taps[i * kw + j])
    return taps


def _conv_weight(module: nn.Conv2d, a: Tensor, b: Tensor) -> tuple[Tensor, Any]:
    """Per-example ||∇W_i||² and c -> Σ_i c_i ∇W_i, by kernel taps or by im2col."""
    shape = module.weight.shape
    if _shifted_applies(module, a, b):
        taps = _conv_tap_grads(module, a, b)  # (kh·kw, B, O, C)

        def from_taps(c: Tensor) -> Tensor:
            summed = torch.tensordot(c, taps, dims=([0], [1]))  # (kh·kw, O, C)
            return summed.permute(1, 2, 0).reshape(shape)

        return taps.pow(2).sum((0, 2, 3)), from_taps
    unfolded = F.unfold(
        a,
        module.kernel_size,
        dilation=module.dilation,
        padding=module.padding,  # type: ignore[arg-type]
        stride=module.stride,
    )  # (B, D, L)
    sq, from_sequence = _sequence_weight(unfolded.transpose(1, 2), b.flatten(2).transpose(1, 2))
    return sq, lambda c: from_sequence(c).reshape(shape)


def _layer(module: nn.Module, a: Tensor, b: Tensor) -> list[tuple[str, Tensor, Any]]:
    """Per parameter of the module: (local name, per-example squared norms, c -> clipped sum)."""
    out: list[tuple[str, Tensor, Any]] = []
    if isinstance(module, nn.Linear):
        if a.dim() == 2:
            sq_w = a.pow(2).sum(1) * b.pow(2).sum(1)

            def lin_w(c: Tensor) -> Tensor:
                return (b * c[:, None]).T @ a

            out.append(("weight", sq_w, lin_w))
            bias_grad = b
        else:
            a3, b3 = a.flatten(1, -2), b.flatten(1, -2)
            sq_w, seq_w = _sequence_weight(a3, b3)
            out.append(("weight", sq_w, seq_w))
            bias_grad = b3.sum(1)
        if module.bias is not None:
            out.append(("bias", bias_grad.pow(2).sum(1), lambda c, g=bias_grad: c @ g))
    elif isinstance(module, nn.Conv2d):
        sq_w, conv_w = _conv_weight(module, a, b)
        out.append(("weight", sq_w, conv_w))
        if module.bias is not None:
            bias_grad = b.flatten(2).sum(2)
            out.append(("bias", bias_grad.pow(2).sum(1), lambda c, g=bias_grad: c @ g))
    elif isinstance(module, nn.GroupNorm):
        normed = F.group_norm(a, module.num_groups, eps=module.eps)
        dims = tuple(range(2, a.dim()))
        grads = {"weight": normed.mul_(b).sum(dims), "bias": b.sum(dims)}
        for local, g in grads.items():
            if getattr(module, local) is not None:
                out.append((local, g.pow(2).sum(1), lambda c, g=g: c @ g))
    return out


def _per_group(
    model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
) -> list[list[tuple[str, Tensor, Any]]]:
    """Per group, per parameter of its modules: (full name, per-example squared norms, c ->
    clipped sum). A group's squared norm is the sum over its parameters, whichever module."""
    owned = _group_modules(model, groups)
    flat = [m for modules in owned for m in modules]
    captured = _capture(model, x, y, flat)
    result, start = [], 0
    for modules in owned:
        parts: list[tuple[str, Tensor, Any]] = []
        mine, start = captured[start : start + len(modules)], start + len(modules)
        for (name, module), (a, b) in zip(modules, mine, strict=True):
            prefix = f"{name}." if name else ""
            parts.extend((prefix + n, sq, fn) for n, sq, fn in _layer(module, a, b))
        result.append(parts)
    return result


def per_example_sq_norms(
    model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
) -> dict[str, Tensor]:
    """Per group: ||g_{i,l}||² for every example (shape (B,)), from one backward pass."""
    return {
        g.name: torch.stack([sq for _, sq, _ in parts]).sum(0)
        for g, parts in zip(groups, _per_group(model, x, y, groups), strict=True)
    }


def fast_clipped_grad_sums(
    model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
) -> dict[str, Tensor]:
    """Σ_i c_{i,l} g_{i,l} per parameter, c_{i,l} = min(1, C_l / ||g_{i,l}||), as the reference."""
    params = dict(model.named_parameters())
    if len(x) == 0:
        return {
            n: torch.zeros_like(params[n], memory_format=torch.contiguous_format)
            for g in groups
            for n in g.param_names
        }
    sums: dict[str, Tensor] = {}
    for g, parts in zip(groups, _per_group(model, x, y, groups), strict=True):
        with torch.no_grad():
            norms = torch.stack([sq for _, sq, _ in parts]).sum(0).sqrt()
            factors = clip_factor(norms, g.clip_norm)
            for name, _, fn in parts:
                sums[name] = fn(factors).reshape(params[name].shape).contiguous()
    return sums
