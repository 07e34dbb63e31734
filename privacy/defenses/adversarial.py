"""Adversarial regularization (Nasr, Shokri & Houmansadr, "Machine Learning with Membership
Privacy using Adversarial Regularization", CCS 2018): a min-max game during training.

An inference adversary h, a small MLP on concat(softmax(f(x)), one_hot(y)) that outputs a
membership logit, is trained to tell member batches (in) from reference batches drawn from the
public split (out); in alternation, the classifier f minimises its cross-entropy plus λ times the
adversary's gain on the member batch (the mean log h(f(x), y)), so that its outputs on members
look like its outputs on other data.

Released: the classifier's full scores (h is discarded). Not differentially private: ε is
infinite. Reads, besides the members, the public split only (the adversary's reference set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.training import ProgressFn
from models.zoo import seeded_model
from privacy.defenses.base import Arch, Data, TrainingPlan, knob, register_defense
from privacy.defenses.fitting import build
from privacy.defenses.loops import (
    DrawPublic,
    LoopDefense,
    Metrics,
    Trained,
    train_with_public,
)

# A seed offset for the adversary's initial weights, so that they differ from the classifier's.
ADVERSARY_SEED = 0xAD7


@dataclass(frozen=True)
class AdversarialRegularization(LoopDefense):
    name: ClassVar[str] = "adversarial-regularization"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "min-max training against a membership-inference adversary on (scores, label); "
        "Nasr, Shokri & Houmansadr, CCS 2018"
    )

    weight: float = knob(0.1, "λ: the inference adversary's gain in the classifier's loss")
    adversary_steps: int = knob(1, "adversary updates per classifier step")
    adversary_hidden: int = knob(64, "hidden width of the inference adversary (an MLP)")
    adversary_lr: float = knob(1e-3, "Adam learning rate of the inference adversary")

    def __post_init__(self) -> None:
        if not self.weight >= 0:  # also refuses NaN
            raise ValueError(f"{self.name}: weight must be >= 0, got {self.weight}")
        if self.adversary_steps < 1:
            raise ValueError(
                f"{self.name}: adversary_steps must be >= 1, got {self.adversary_steps}"
            )
        if self.adversary_hidden < 1:
            raise ValueError(
                f"{self.name}: adversary_hidden must be >= 1, got {self.adversary_hidden}"
            )
        if not self.adversary_lr > 0:
            raise ValueError(f"{self.name}: adversary_lr must be > 0, got {self.adversary_lr}")

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
        """train's model with the per-epoch history (the adversary's loss and accuracy over its
        updates, its gain on members that the classifier's loss adds λ times) and the
        adversary (auxiliary["adversary"])."""
        model = build(arch, seed=seed)
        classes = int(arch["kwargs"]["num_classes"])
        adversary = self.adversary(classes, seed=seed + ADVERSARY_SEED)
        adversary_opt = torch.optim.Adam(adversary.parameters(), lr=self.adversary_lr)

        def features(logits: Tensor, y: Tensor) -> Tensor:
            return torch.cat([F.softmax(logits, dim=1), F.one_hot(y, classes).float()], dim=1)

        def step(x: Tensor, y: Tensor, draw: DrawPublic) -> tuple[Tensor, Metrics]:
            logits = model(x)
            # The adversary learns from detached scores: its updates must not move f.
            member_in = features(logits.detach(), y)
            losses, correct, seen = 0.0, 0.0, 0
            for _ in range(self.adversary_steps):
                rx, ry = draw()
                with torch.no_grad():
                    reference_in = features(model(rx), ry)
                scores = adversary(torch.cat([member_in, reference_in])).squeeze(1)
                is_member = torch.cat([torch.ones(len(x)), torch.zeros(len(rx))])
                loss = F.binary_cross_entropy_with_logits(scores, is_member)
                adversary_opt.zero_grad(set_to_none=True)
                loss.backward()
                adversary_opt.step()
                losses += loss.item()
                correct += float(((scores > 0).float() == is_member).sum())
                seen += len(is_member)
            # The gain's gradient reaches f through its scores; h's own .grad is cleared by
            # adversary_opt.zero_grad before its next update.
            gain = F.logsigmoid(adversary(features(logits, y))).mean()
            metrics = {
                "adversary_loss": losses / self.adversary_steps,
                "adversary_accuracy": correct / seen,
                "member_gain": gain.item(),
            }
            return F.cross_entropy(logits, y) + self.weight * gain, metrics

        trained = train_with_public(
            model, members, public, plan=plan, seed=seed, step=step, progress=progress
        )
        return replace(trained, auxiliary={"adversary": adversary.eval()})

    def adversary(self, classes: int, *, seed: int) -> nn.Module:
        """h: (scores, one-hot label) of 2 x classes values -> one membership logit."""
        return seeded_model(
            "mlp",
            seed=seed,
            in_shape=(1, 1, 2 * classes),
            num_classes=1,
            hidden=self.adversary_hidden,
            depth=2,
        )


register_defense(AdversarialRegularization)
