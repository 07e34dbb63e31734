"""Safe persistence: weights in safetensors, architecture (including pruned widths) in arch.json.

Nothing here unpickles. A pruned model is rebuilt from its registered architecture, then every
module's structural attributes and tensor shapes are set from arch.json and the weights file.
A folder that does not hold such a pair (a file missing, empty, truncated or of another format,
tensors that do not fit arch.json) is a ModelFileError naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.errors import ModelFileError
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
    path = directory / ARCH
    try:
        arch = json.loads(_existing(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not an architecture record (JSON): {exc}") from exc
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs"), dict) or "name" not in arch:
        raise ModelFileError(f"{path} is not an architecture record: it needs name and kwargs")
    kwargs = arch["kwargs"]
    if "in_shape" in kwargs:
        kwargs["in_shape"] = tuple(kwargs["in_shape"])
    return arch


def load_model(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in directory; returns (model in eval mode, arch record)."""
    arch = read_arch(directory)
    try:
        model = build_model(arch["name"], **arch["kwargs"])
    except (KeyError, TypeError, ValueError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ModelFileError(f"{directory / ARCH}: cannot build its model: {reason}") from exc
    modules = dict(model.named_modules())
    for name, attrs in arch.get("structure", {}).items():
        if name not in modules or not isinstance(attrs, dict):
            raise ModelFileError(f"{directory / ARCH}: '{arch['name']}' has no module '{name}'")
        for attr, value in attrs.items():
            setattr(modules[name], attr, value)
    weights = directory / WEIGHTS
    try:
        state = load_file(str(_existing(weights)))
    except SafetensorError as exc:
        raise ModelFileError(f"{weights} is not a safetensors weights file: {exc}") from exc
    _check_tensors(model, state, weights)
    _resize_to(model, state)
    model.load_state_dict(state, strict=True)
    _check_forward(model.eval(), arch, directory)
    return model, arch


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file (a model folder holds {ARCH} and {WEIGHTS})")
    return path


def _expected_shape(module: nn.Module, attr: str) -> tuple[int, ...]:
    """The shape a structural module's tensor must have, from its (possibly pruned) widths."""
    if isinstance(module, nn.Conv2d):
        if attr == "weight":
            kernel = tuple(module.kernel_size)
            return (module.out_channels, module.in_channels // module.groups, *kernel)
        return (module.out_channels,)
    if isinstance(module, nn.Linear):
        return (
            (module.out_features, module.in_features)
            if attr == "weight"
            else (module.out_features,)
        )
    if isinstance(module, nn.GroupNorm):
        return (module.num_channels,)
    assert isinstance(module, nn.BatchNorm2d)
    return () if attr == "num_batches_tracked" else (module.num_features,)


def _check_tensors(model: nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    """Every tensor the model has, and no other, each of the shape arch.json gives it."""
    current = model.state_dict()
    missing, extra = sorted(current.keys() - state.keys()), sorted(state.keys() - current.keys())
    if missing or extra:
        names = ", ".join([*(f"no '{k}'" for k in missing), *(f"extra '{k}'" for k in extra)][:3])
        raise ModelFileError(f"{weights} does not hold the tensors of {ARCH}: {names}")
    for key in current:  # in the model's order: the first bad tensor is the one named
        tensor = state[key]
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if type(owner) in _STRUCTURAL:
            expected = _expected_shape(owner, attr)
        else:
            expected = tuple(current[key].shape)  # a module that pruning does not resize
        if tuple(tensor.shape) != expected:
            raise ModelFileError(
                f"{weights}: tensor '{key}' has shape {tuple(tensor.shape)}, "
                f"but {ARCH} gives {expected}"
            )


def _check_forward(model: nn.Module, arch: dict[str, Any], directory: Path) -> None:
    """One zero input through the model: widths that fit each module but not each other (a
    foreign or edited arch.json) fail here, not in the middle of a stage."""
    in_shape = arch["kwargs"].get("in_shape")
    if in_shape is None:
        return
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    except (RuntimeError, ValueError) as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{directory}: {ARCH} and {WEIGHTS} do not fit: {line}") from exc


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
