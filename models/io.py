"""Safe persistence: weights in safetensors, architecture (including pruned widths) in arch.json.

Nothing here unpickles. A pruned model is rebuilt from its registered architecture, then every
module's structural attributes and tensor shapes are set from arch.json and the weights file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.zoo import build_model

WEIGHTS = "model.safetensors"
ARCH = "arch.json"

# Attributes that structural pruning changes, per module type.
_STRUCTURAL: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.BatchNorm2d: ("num_features",),
}


def _structure(model: nn.Module) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        attrs = _STRUCTURAL.get(type(module))
        if attrs:
            out[name] = {a: int(getattr(module, a)) for a in attrs}
    return out


def save_model(model: nn.Module, directory: Path, *, arch: dict[str, Any]) -> None:
    """Write model.safetensors and arch.json ({"name", "kwargs"} plus the current structure)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    record = {"name": arch["name"], "kwargs": arch["kwargs"], "structure": _structure(model)}
    tmp_w = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp_w))
    tmp_w.replace(directory / WEIGHTS)
    tmp_a = directory / (ARCH + ".tmp")
    tmp_a.write_text(json.dumps(record, indent=2))
    tmp_a.replace(directory / ARCH)


def read_arch(directory: Path) -> dict[str, Any]:
    arch: dict[str, Any] = json.loads((directory / ARCH).read_text())
    kwargs = arch["kwargs"]
    if "in_shape" in kwargs:
        kwargs["in_shape"] = tuple(kwargs["in_shape"])
    return arch


def load_model(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in directory; returns (model in eval mode, arch record)."""
    arch = read_arch(directory)
    model = build_model(arch["name"], **arch["kwargs"])
    modules = dict(model.named_modules())
    for name, attrs in arch.get("structure", {}).items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, value)
    state = load_file(str(directory / WEIGHTS))
    _resize_to(model, state)
    model.load_state_dict(state, strict=True)
    return model.eval(), arch


def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter and buffer the shape stored in the weights file."""
    for key, tensor in state.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        current = getattr(owner, attr)
        if current is None or current.shape == tensor.shape:
            continue
        fresh = torch.empty_like(tensor)
        if isinstance(current, nn.Parameter):
            setattr(owner, attr, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            owner.register_buffer(attr, fresh)


def model_bytes(directory: Path) -> int:
    """Size on disk of the weights file (what would ship)."""
    return (directory / WEIGHTS).stat().st_size
