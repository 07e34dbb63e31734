"""Knowledge distillation for membership privacy, in the spirit of DMP (Shejwalkar & Houmansadr
2021): a teacher trained on the members labels the public split's inputs with its softmax at
temperature T; the released student (same architecture, another init) is trained only on those
inputs and soft labels, so it never sees a member: what it knows of them passes through the
teacher's answers on other data. (DMP also selects low-entropy reference samples; here the whole
public split is the transfer set.)

Released: the student's full class scores. Not DP: ε is infinite (the soft labels are no DP
mechanism). Reads the members (teacher) and the public split's inputs, never its labels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar

from torch import nn

from models.training import ProgressFn, distillation_loss, soft_labels
from privacy.defenses.base import Arch, Data, Defense, TrainingPlan, knob, register_defense
from privacy.defenses.fitting import build, stage_progress, steps, sub_seed, train


@dataclass(frozen=True)
class DistillationDefense(Defense):
    temperature: float = knob(3.0, "softmax temperature of the soft labels")
    student_epochs: int = knob(0, "epochs of the student on the public split (0: [train] epochs)")

    name: ClassVar[str] = "knowledge-distillation"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "Distillation for membership privacy: Shejwalkar & Houmansadr 2021, Membership Privacy "
        "for Machine Learning Models Through Knowledge Transfer (AAAI)"
    )

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {self.temperature}")
        if self.student_epochs < 0:
            raise ValueError(f"student_epochs must be >= 0, got {self.student_epochs}")

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
        transfer = public[0]
        if len(transfer) == 0:
            raise ValueError("knowledge-distillation needs public inputs to distil on")
        student_plan = replace(plan, epochs=self.student_epochs or plan.epochs)
        teacher_progress, student_progress = stage_progress(
            progress, [steps(plan, len(members[0])), steps(student_plan, len(transfer))]
        )
        teacher = build(arch, seed=sub_seed(seed, 0))
        train(teacher, *members, plan=plan, seed=seed, progress=teacher_progress)
        probs = soft_labels(teacher, transfer, temperature=self.temperature)
        return train(
            build(arch, seed=sub_seed(seed, 1)),
            transfer,
            probs,
            plan=student_plan,
            seed=sub_seed(seed, 2),
            progress=student_progress,
            loss_fn=partial(distillation_loss, temperature=self.temperature),
        )


register_defense(DistillationDefense)
