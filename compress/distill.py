"""Knowledge distillation into a smaller student, trained on public data only.

- soft labels (Hinton et al. 2015): the teacher's softmax at temperature T on the public split;
  the student minimises T² · KL(teacher_T || student_T). When the teacher is a DP model this is
  post-processing: the student's ε is the teacher's. T = 3.0 by default (the original study's).
- PATE (privacy/pate.py): noisy-max labels from teachers trained on private shards; the student
  is trained on the answered public queries with ordinary cross-entropy (`fit`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from models.training import ProgressFn, distillation_loss, fit, predict_logits
from models.training import soft_labels as soft_labels  # where the distill stage finds it
from models.zoo import MODELS, seeded_model

DEFAULT_TEMPERATURE = 3.0


def student_model(
    name: str,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    width: int | None = None,
    hidden: int | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh registry model and its arch record; width / hidden go to factories that take
    them (cnn: both; mlp: hidden), so one setting shrinks any of them."""
    if name not in MODELS:
        raise ValueError(f"unknown student model '{name}' (known: {', '.join(sorted(MODELS))})")
    accepted = inspect.signature(MODELS[name]).parameters
    kwargs: dict[str, Any] = {"in_shape": in_shape, "num_classes": num_classes}
    for key, value in (("width", width), ("hidden", hidden)):
        if value is not None and key in accepted:
            if value < 1:
                raise ValueError(f"student {key} must be >= 1, got {value}")
            kwargs[key] = int(value)
    model = seeded_model(name, seed=seed, **kwargs)
    return model, {"name": name, "kwargs": {**kwargs, "in_shape": list(in_shape)}}


@dataclass(frozen=True)
class DistillResult:
    student: nn.Module
    steps: int
    final_loss: float  # distillation loss over all of x after training


def distill_soft(
    student: nn.Module,
    x: np.ndarray,
    teacher_probs: np.ndarray,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> DistillResult:
    """Train `student` (in place) to match teacher_probs on x with Adam; eval mode on return."""
    if len(x) != len(teacher_probs) or len(x) == 0:
        raise ValueError(f"x and teacher_probs must be non-empty and equal in length: {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("student data contains NaN or infinite values")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    loss_fn = partial(distillation_loss, temperature=temperature)
    x, probs = np.asarray(x, dtype=np.float32), np.asarray(teacher_probs, dtype=np.float32)
    fit(
        student,
        x,
        probs,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        loss_fn=loss_fn,
    )
    with torch.no_grad():
        final = loss_fn(torch.as_tensor(predict_logits(student, x)), torch.as_tensor(probs))
    steps = epochs * -(-len(x) // batch_size)
    return DistillResult(student=student, steps=steps, final_loss=float(final))
