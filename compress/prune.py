"""Structural pruning with Torch-Pruning: whole channels and neurons go, so tensors really shrink.

The importance criterion is an object handed to the pruner (Torch-Pruning's style). Magnitude
(L1, L2), LAMP and FPGM look only at the weights, so pruning a DP-trained model with them is
post-processing and costs no privacy budget. Taylor importance reads data (the gradient of the
loss): prune_model only accepts it together with an explicit `importance_data` array, which the
pipeline fills with the public split. The classifier keeps its outputs (the classes); GroupNorm
layers keep their group count because Torch-Pruning removes the same positions from every group.

Pruning may run in several steps (`iterative_steps`), with a callback between them for
fine-tuning (`after_step`): the pipeline fine-tunes with LADP on the members (accounted) or
without DP on the public split (free).

`prune(source, out_dir, settings=, data=)` is the transform a run applies (model folder -> model
folder). What it chose is recorded: Torch-Pruning's pruning history (which channels of which
layer group went, step by step; `replay_history` redoes it exactly on a model of the same
architecture) and the widths that result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from compress.macs import torch_macs
from models.io import load_model, read_arch, save_model
from models.zoo import count_params, output_layers

# name -> factory of a fresh criterion object. `reads_data` marks criteria that need samples.
IMPORTANCES: dict[str, Callable[[], object]] = {
    "l1": partial(tp.importance.MagnitudeImportance, p=1),
    "l2": partial(tp.importance.MagnitudeImportance, p=2),
    "lamp": partial(tp.importance.LAMPImportance, p=2),
    "fpgm": partial(tp.importance.FPGMImportance, p=2),
    "taylor": tp.importance.TaylorImportance,
}
DATA_DRIVEN: set[str] = {"taylor"}

# A layer never loses more than this share of its channels under global ranking: a layer pruned
# to zero width would cut the network in two.
MAX_LAYER_RATIO = 0.9
TAYLOR_BATCH = 128

# after_step(model, step, steps): called after each pruning step (fine-tuning hook).
AfterStep = Callable[[nn.Module, int, int], None]
# Torch-Pruning's record of one pruned group: [root module name, out-channel pruning?, indices].
PruningHistory = list[list[Any]]


@dataclass(frozen=True)
class PruneResult:
    params_before: int
    params_after: int
    macs_before: int = 0
    macs_after: int = 0
    steps: int = 1
    history: PruningHistory = field(default_factory=list)  # in the order the groups went

    @property
    def factor(self) -> float:
        """How many times fewer parameters the pruned model has."""
        return self.params_before / max(self.params_after, 1)


def _importance(name: str) -> object:
    if name not in IMPORTANCES:
        known = ", ".join(sorted(IMPORTANCES))
        raise ValueError(f"unknown importance '{name}' (known: {known})")
    return IMPORTANCES[name]()


def _accumulate_gradients(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Gradients of the mean cross-entropy over (x, y), left in .grad for Taylor importance."""
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for i in range(0, len(x), TAYLOR_BATCH):
        xb = torch.as_tensor(x[i : i + TAYLOR_BATCH], device=device)
        yb = torch.as_tensor(y[i : i + TAYLOR_BATCH], device=device)
        (loss_fn(model(xb), yb) / len(x)).backward()


def prune_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: float = 0.5,
    importance: str = "l2",
    global_pruning: bool = False,
    iterative_steps: int = 1,
    importance_data: tuple[np.ndarray, np.ndarray] | None = None,
    after_step: AfterStep | None = None,
) -> PruneResult:
    """Remove `ratio` of the channels, in place, in `iterative_steps` equal steps.

    ratio applies to every prunable layer group (per layer) or to all of them ranked together
    (global_pruning; a layer keeps at least 10% of its channels). A data-driven criterion
    (Taylor) scores channels with gradients on importance_data, which must be data the caller
    may read for free (the public split). Parameters are replaced by smaller ones: build any
    optimizer after pruning (or inside after_step), not before.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio}")
    if iterative_steps < 1:
        raise ValueError(f"iterative_steps must be >= 1, got {iterative_steps}")
    criterion = _importance(importance)
    if importance in DATA_DRIVEN:
        if importance_data is None or len(importance_data[0]) == 0:
            raise ValueError(
                f"importance '{importance}' reads data: pass importance_data (the public split)"
            )
        if not np.isfinite(importance_data[0]).all():
            raise ValueError("importance_data contains NaN or infinite values")
    was_training = model.training
    in_shape = tuple(example_input.shape[1:])
    params_before, macs_before = count_params(model), torch_macs(model, in_shape)
    # Torch-Pruning traces the autograd graph of one forward pass, so gradients must be enabled.
    with torch.enable_grad():
        model.eval()
        pruner = tp.pruner.MetaPruner(
            model,
            example_input,
            importance=criterion,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            max_pruning_ratio=MAX_LAYER_RATIO if global_pruning else 1.0,
            iterative_steps=iterative_steps,
            ignored_layers=output_layers(model),
        )
        for step in range(iterative_steps):
            if importance in DATA_DRIVEN and importance_data is not None:
                _accumulate_gradients(model, *importance_data)
            pruner.step()
            model.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step(model, step, iterative_steps)
                model.eval()
    model.train(was_training)
    return PruneResult(
        params_before=params_before,
        params_after=count_params(model),
        macs_before=macs_before,
        macs_after=torch_macs(model, in_shape),
        steps=iterative_steps,
        history=[
            [str(n), bool(out), [int(i) for i in idx]] for n, out, idx in pruner.pruning_history()
        ],
    )


def replay_history(model: nn.Module, example_input: torch.Tensor, history: PruningHistory) -> None:
    """Remove, in place, exactly the channels a recorded pruning removed (whatever the weights).

    The model must have the architecture the recorded pruning started from.
    """
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        graph.load_pruning_history([[n, out, list(idx)] for n, out, idx in history])


@dataclass(frozen=True)
class PruneSettings:
    ratio: float = 0.5
    importance: str = "l2"  # a key of IMPORTANCES
    global_pruning: bool = False
    iterative_steps: int = 1


@dataclass(frozen=True, eq=False)
class PruneData:
    example: np.ndarray  # inputs that trace the graph (two rows)
    importance: tuple[np.ndarray, np.ndarray] | None = None  # read by DATA_DRIVEN criteria only


@dataclass(frozen=True)
class PrunedArtifact:
    path: Path  # the model folder
    settings: PruneSettings
    result: PruneResult
    structure: dict[str, dict[str, int]]  # the widths after pruning, as arch.json holds them

    def record(self) -> dict[str, Any]:
        """What pruning chose, as JSON: its settings, the pruning history, the widths."""
        return {
            "settings": asdict(self.settings),
            "history": self.result.history,
            "structure": self.structure,
        }


def prune(
    source: Path,
    out_dir: Path,
    *,
    settings: PruneSettings,
    data: PruneData,
    after_step: AfterStep | None = None,
) -> PrunedArtifact:
    """The model saved in folder `source`, pruned as prune_model prunes, saved in out_dir."""
    model, arch = load_model(source)
    result = prune_model(
        model,
        torch.as_tensor(data.example),
        ratio=settings.ratio,
        importance=settings.importance,
        global_pruning=settings.global_pruning,
        iterative_steps=settings.iterative_steps,
        importance_data=data.importance,
        after_step=after_step,
    )
    save_model(model, out_dir, arch=arch)
    return PrunedArtifact(out_dir, settings, result, read_arch(out_dir)["structure"])
