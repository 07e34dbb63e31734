"""Non-private training loop and batched inference, shared by targets, shadows and references,
and the soft-label distillation loss (shared by compress.distill and the distillation defense)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# progress(done, total): called by long loops so that a CLI can draw a bar.
ProgressFn = Callable[[int, int], None]
# loss_fn(outputs, targets) -> mean loss over the batch.
LossFn = Callable[[Tensor, Tensor], Tensor]


def fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
    loss_fn: LossFn = F.cross_entropy,
) -> nn.Module:
    """Plain Adam training with shuffled mini-batches; returns the model in eval mode.

    y holds class labels for the default cross-entropy, or whatever targets loss_fn takes
    (soft labels for distillation)."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * steps_per_epoch(len(xt), batch_size)
    model.train()
    for step, (_, idx) in enumerate(minibatches(len(xt), batch_size, epochs, gen), 1):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xt[idx]), yt[idx]).backward()
        opt.step()
        if progress:
            progress(step, total)
    return model.eval()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))


def minibatches(
    n: int, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[tuple[int, Tensor]]:
    """(epoch, indices) of shuffled mini-batches of range(n): a fresh permutation each epoch, cut
    into steps_per_epoch batches (the last may be short). Shared by fit and the defenses' loops
    so that they draw the same batches from the same seed."""
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(steps_per_epoch(n, batch_size)):
            yield epoch, order[i * batch_size : (i + 1) * batch_size]


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [
        model(torch.as_tensor(x[i : i + batch_size])).float().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def soft_labels(teacher: nn.Module, x: np.ndarray, *, temperature: float) -> np.ndarray:
    """softmax(teacher(x) / T), float32 (N, classes)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = torch.as_tensor(predict_logits(teacher, x), dtype=torch.float64)
    return torch.softmax(logits / temperature, dim=1).float().numpy()


def distillation_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """T² · KL(teacher_T || student_T), averaged over the batch (Hinton et al.'s scaling keeps
    gradient sizes comparable across temperatures)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature**2


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())
