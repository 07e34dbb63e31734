"""`train-fl`: federated training of the members, split into clients by a per-record rule, in a
Flower simulation (pipelines.federated), with record-level or client-level DP accounted by
privcomp (privacy.federated). The global model is a `model` artifact like train's.

record: each client trains locally with DP-SGD (or LADP) on its own shard; q and the local steps
are planned on members / clients (public), σ so that a client joining every round stays within
(ε, δ). The spend keeps one history per client (privacy.composition.Parallel), so a later DP
stage on the members composes with each record's own client's history.

client: central DP at the server (Poisson client sampling at rate q, each decoded update clipped
to C, N(0, σ²C²) on the sum, division by q·clients); σ, q and rounds bound the add/remove-client
relation (client_epsilon, reported), and the record level the ledger composes is the RDP curve
of two client steps (privacy.federated.record_level_rdp).

Update compression (int8, top-k) is applied to what a client sends: in record mode to an
output of the client's DP mechanism (post-processing); in client mode before the server's clip,
which is applied to the decoded update, so the sensitivity is C whatever a client sends.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from models.io import save_model
from models.training import accuracy, predict_logits
from pipelines.artifacts import MODEL
from pipelines.context import RunContext
from pipelines.cost import measured
from pipelines.errors import PrivcompError
from pipelines.settings.training import TrainFLSettings
from pipelines.stage import Spend, Stage, StageResult, register_stage
from pipelines.stages.training import _fresh_model
from privacy.composition import compose
from privacy.config import LADPConfig
from privacy.federated import (
    ClientLevelPlan,
    RecordLevelPlan,
    assign_clients,
    client_level_plan,
    client_shards,
    record_level_plan,
)


@register_stage
class TrainFL(Stage[TrainFLSettings]):
    name = "train-fl"
    requires = ("splits",)
    provides = (MODEL,)
    privacy_cost = (
        "(epsilon, delta)-DP per record: record mode, each client's local DP-SGD (parallel "
        "composition); client mode, central DP at client level (reported) and its group-of-two "
        "record-level bound"
    )
    summary = "federated training (Flower simulation on Ray), record- or client-level DP"
    Config = TrainFLSettings

    # -- the plan (fixed before the members are read; reads only their number)

    def _plan(self, ctx: RunContext) -> RecordLevelPlan | ClientLevelPlan:
        c, n = self.config, len(ctx.splits["members"])
        sigma = c.noise_multiplier or None
        try:
            if not 0 < c.delta < 1 / n:
                raise ValueError(f"delta must be in (0, 1/n) = (0, {1 / n:.3g}) for n = {n}")
            if c.privacy == "client":
                return client_level_plan(
                    epsilon=c.epsilon,
                    delta=c.delta,
                    sample_rate=c.client_rate,
                    rounds=c.rounds,
                    accountant=c.accountant,
                    noise_multiplier=sigma,
                )
            return record_level_plan(
                epsilon=c.epsilon,
                delta=c.delta,
                members=n,
                clients=c.clients,
                expected_batch_size=c.local_batch_size,
                local_epochs=c.local_epochs,
                rounds=c.rounds,
                accountant=c.accountant,
                noise_multiplier=sigma,
            )
        except ValueError as exc:
            raise PrivcompError(f"{self.name}: {exc}") from exc

    def check(self, ctx: RunContext) -> None:
        self._plan(ctx)

    def planned_spend(self, ctx: RunContext) -> Spend:
        plan = self._plan(ctx)
        rounds = [self.config.rounds] * self.config.clients  # every client in every round
        return self._spend(ctx, plan, rounds)

    def _spend(
        self, ctx: RunContext, plan: RecordLevelPlan | ClientLevelPlan, joined: list[int]
    ) -> Spend:
        c = self.config
        common: dict[str, Any] = {
            "accountant": c.accountant,
            "clients": c.clients,
            "rounds": c.rounds,
            "client_rate": c.client_rate,
            "partition": c.partition,
            "update_compression": c.update_compression,
            "noise": ctx.noise_mode,
        }
        if isinstance(plan, ClientLevelPlan):
            details = {
                **common,
                "mechanism": "federated, central DP (client level): Poisson clients, clip, noise",
                "privacy_level": "client",
                "noise_multiplier": plan.noise_multiplier,
                "sample_rate": plan.sample_rate,
                "steps": plan.rounds,
                "clip_norm": c.clip_norm,
                "client_epsilon": plan.client_epsilon,
                "record_level": "two add/remove-client steps: RDP weak triangle inequality",
                "rdp_orders": list(plan.orders),
                "rdp": [r if math.isfinite(r) else None for r in plan.rdp],  # JSON has no ∞
            }
            return Spend(kind="dp", epsilon=plan.epsilon, delta=plan.delta, details=details)
        client_steps = [plan.steps_per_round * r for r in joined]
        mechanism = plan.mechanism(joined)
        epsilon = compose([mechanism], delta=c.delta, accountant=c.accountant).epsilon
        details = {
            **common,
            "mechanism": f"federated, local {c.engine} per client (record level)",
            "privacy_level": "record",
            "engine": c.engine,
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "steps": max(client_steps, default=0),
            "client_steps": client_steps,
            "planned_n": plan.planned_n,
        }
        return Spend(kind="dp", epsilon=epsilon, delta=c.delta, details=details)

    # -- the run

    def run(self, ctx: RunContext) -> StageResult:
        from pipelines.federated import ClientTask, ServerPlan, load_state, model_state, simulate

        c = self.config
        plan = self._plan(ctx)
        x, y = ctx.split("members")
        key = ctx.derived_seed(7)  # public: the assignment rule is fixed before the data
        owners = assign_clients(
            x,
            y,
            c.clients,
            key=key,
            partition=c.partition,
            alpha=c.alpha,
            num_classes=ctx.dataset.num_classes,
        )
        shards = tuple((x[idx], y[idx]) for idx in client_shards(owners, c.clients))
        model, arch = _fresh_model(ctx)
        initial = model_state(model)
        ladp = None
        if isinstance(plan, RecordLevelPlan):
            ladp = LADPConfig(
                epsilon=c.epsilon,
                delta=c.delta,
                epochs=c.local_epochs,
                expected_batch_size=c.local_batch_size,
                lr=c.local_lr,
                momentum=c.momentum,
                clip_norm=c.clip_norm,
                accountant=c.accountant,
                noise_multiplier=plan.noise_multiplier,
                per_example="privcomp",
            )
        task = ClientTask(
            shards=shards,
            arch=arch,
            privacy=c.privacy,
            compression=c.update_compression,
            topk_fraction=c.topk_fraction,
            local_epochs=c.local_epochs,
            local_batch_size=c.local_batch_size,
            lr=c.local_lr,
            seed=ctx.seed,
            engine=c.engine,
            ladp=ladp,
            plan=plan if isinstance(plan, RecordLevelPlan) else None,
            noise_seed=ctx.noise_seed(1),
            public=ctx.split("public") if c.engine == "ladp" else None,
            clip_norm=c.clip_norm,
        )
        server = ServerPlan(
            clients=c.clients,
            rounds=c.rounds,
            client_rate=c.client_rate,
            privacy=c.privacy,
            compression=c.update_compression,
            noise_multiplier=plan.noise_multiplier if isinstance(plan, ClientLevelPlan) else 0.0,
            clip_norm=c.clip_norm,
            noise_seed=ctx.noise_seed(0),
        )
        cpus = c.workers or min(c.clients, os.cpu_count() or 1)
        label = f"{self.name}: {c.rounds} rounds, {c.clients} clients"
        with ctx.reporter.task(label), measured() as cost:
            try:
                state = simulate(task, server, initial, num_cpus=cpus)
            except ImportError as exc:
                raise PrivcompError(
                    "train-fl needs Flower with its simulation extra: pip install 'privcomp[fl]'"
                ) from exc
        load_state(model, state)
        save_model(model.eval(), ctx.stage_dir, arch=arch)
        spend = self._spend(ctx, plan, server.joined)
        per_update = _per_update(server.bytes_per_round, server.sampled)
        metrics: dict[str, Any] = {
            "bytes_per_client_update": per_update,
            "fp32_bytes_per_client_update": _per_update(
                server.fp32_bytes_per_round, server.sampled
            ),
            "update_compression": c.update_compression,
            "cost": cost.to_dict(),
            # Statistics of the members that no ε covers: the data owner's, never shipped.
            "audit_only": {
                "shard_sizes": [len(s[0]) for s in shards],
                "train_accuracy": accuracy(predict_logits(model, x), y),
            },
        }
        if c.privacy == "client":
            # Which clients the Poisson sampling chose is the mechanism's secret: both ε's rest
            # on nobody knowing whether a client took part in a round, so neither the counts nor
            # the bytes per round (a fixed size per update times the count) are written; the
            # expected bytes per round are (the size of an update is data-independent).
            metrics["expected_bytes_per_round"] = per_update * c.client_rate * c.clients
        else:
            # Record level takes no credit from the client sampling: the counts may be known.
            metrics.update(
                clients_per_round=server.sampled,
                rounds_joined=server.joined,
                bytes_per_round=server.bytes_per_round,
            )
        if isinstance(plan, ClientLevelPlan):
            metrics["client_level"] = {
                "epsilon": plan.client_epsilon,
                "delta": plan.delta,
                "noise_multiplier": plan.noise_multiplier,
                "sample_rate": plan.sample_rate,
                "rounds": plan.rounds,
            }
        return StageResult({MODEL: ctx.stage_dir}, spend, metrics)


def _per_update(totals: list[int], counts: list[int]) -> float:
    """Mean serialised bytes of one client's update over the rounds where clients came."""
    sizes = [t / k for t, k in zip(totals, counts, strict=True) if k]
    return float(np.mean(sizes)) if sizes else 0.0
