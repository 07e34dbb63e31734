"""What the defenses that change the training loss share: an Adam loop over the members'
mini-batches in which each step may draw batches from the public split (a reference or
validation set), with per-epoch means of what each step measured."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.training import ProgressFn, minibatches, steps_per_epoch
from privacy.defenses.base import Arch, Data, Defense, TrainingPlan

Metrics = dict[str, float]
# draw() -> (x, y): a fresh batch of the public split, as large as the current member batch.
DrawPublic = Callable[[], tuple[Tensor, Tensor]]
# step(x, y, draw) -> (the loss the model's optimizer minimises, what this step measured)
Step = Callable[[Tensor, Tensor, DrawPublic], tuple[Tensor, Metrics]]


@dataclass(frozen=True)
class Trained:
    model: nn.Module  # in eval mode
    history: list[Metrics] = field(default_factory=list)  # per epoch: each metric's mean
    # modules trained alongside the model and not released (an inference adversary), by name
    auxiliary: dict[str, nn.Module] = field(default_factory=dict)


def train_with_public(
    model: nn.Module,
    members: Data,
    public: Data,
    *,
    plan: TrainingPlan,
    seed: int,
    step: Step,
    progress: ProgressFn | None = None,
) -> Trained:
    """Adam (plan's lr and weight decay) on step's loss over the members' shuffled mini-batches
    (drawn like models.training.fit's; the public draws share the generator, so the
    order differs from fit's after the first public batch)."""
    if len(public[0]) == 0:
        raise ValueError("this defense reads the public split, which is empty")
    gen = torch.Generator().manual_seed(seed)
    mx, my = torch.as_tensor(members[0]), torch.as_tensor(members[1])
    px, py = torch.as_tensor(public[0]), torch.as_tensor(public[1])
    opt = torch.optim.Adam(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    total = plan.epochs * steps_per_epoch(len(mx), plan.batch_size)
    per_epoch: list[list[Metrics]] = [[] for _ in range(plan.epochs)]
    model.train()
    batches = minibatches(len(mx), plan.batch_size, plan.epochs, gen)
    for done, (epoch, idx) in enumerate(batches, 1):

        def draw(size: int = len(idx)) -> tuple[Tensor, Tensor]:
            # without replacement within a batch; a public split smaller than it gives all of it
            pick = torch.randperm(len(px), generator=gen)[:size]
            return px[pick], py[pick]

        opt.zero_grad(set_to_none=True)
        loss, metrics = step(mx[idx], my[idx], draw)
        loss.backward()
        opt.step()
        per_epoch[epoch].append(metrics)
        if progress:
            progress(done, total)
    history = [
        {key: sum(m[key] for m in steps) / len(steps) for key in steps[0]}
        for steps in per_epoch
        if steps
    ]
    return Trained(model.eval(), history)


@dataclass(frozen=True)
class LoopDefense(Defense):
    """A defense whose training loop records a history (and trains auxiliary modules): `fit`
    returns all of it, `train` the released model."""

    @abstractmethod
    def fit(
        self,
        arch: Arch,
        members: Data,
        *,
        public: Data,
        plan: TrainingPlan,
        seed: int,
        progress: ProgressFn | None = None,
    ) -> Trained:
        """The trained model with its per-epoch history and auxiliary modules."""

    def train(
        self,
        arch: Arch,
        members: Data,
        *,
        public: Data,
        plan: TrainingPlan,
        seed: int,
        progress: ProgressFn | None = None,
    ) -> nn.Module:
        return self.fit(arch, members, public=public, plan=plan, seed=seed, progress=progress).model
