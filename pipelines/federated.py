"""Flower glue for `train-fl`: a simulation in process (flwr.simulation.run_simulation, on its
Ray backend) whose ServerApp runs privcomp's strategy and whose ClientApp trains one client.

The mechanisms are privcomp's (privacy.federated: client sampling, clipping, noise; the local
DP engine of privacy.engines; compress.updates for what a client sends); this module only moves
arrays through Flower's Message API and measures the bytes of what was sent.

Ray: Flower's Ray backend initialises Ray when it is not running and always calls
`ray.shutdown()` when the simulation ends, which would cut a session the caller (the Ray
executor, a notebook) had open. `ray_session` starts Ray only when none is running (and then
stops it), and the simulation runs with the backend's shutdown suppressed, so an existing
session is left as it was found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.updates import decode, encode
from models.training import fit
from models.zoo import seeded_model
from privacy.config import LADPConfig
from privacy.engines import build_engine
from privacy.federated import DPAggregator, RecordLevelPlan, mean_update, sample_clients
from privacy.randomness import child_seed, mechanism_rngs

# Flower reads this when it is first imported: no usage telemetry from a privacy tool.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

State = dict[str, np.ndarray]
_LOCK = threading.Lock()  # one simulation at a time per process (the backend patch is global)


def model_state(model: nn.Module) -> State:
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def load_state(model: nn.Module, state: State) -> nn.Module:
    model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in state.items()})
    return model


@dataclass(frozen=True)
class ClientTask:
    """What every client process needs (shipped to the Ray actors with the ClientApp): the
    shards (client k trains on shards[k] only), the architecture, the local recipe."""

    shards: tuple[tuple[np.ndarray, np.ndarray], ...]
    arch: dict[str, Any]
    privacy: str  # "record" | "client"
    compression: str
    topk_fraction: float
    local_epochs: int
    local_batch_size: int
    lr: float
    seed: int
    # record mode: the local DP engine and its plan
    engine: str = "dp-sgd"
    ladp: LADPConfig | None = None
    plan: RecordLevelPlan | None = None
    noise_seed: int | None = None
    public: tuple[np.ndarray, np.ndarray] | None = None
    # client mode: the client-side clip before compression (the server clips again, below)
    clip_norm: float = 1.0

    def fresh_model(self) -> nn.Module:
        kwargs = {**self.arch["kwargs"], "in_shape": tuple(self.arch["kwargs"]["in_shape"])}
        return seeded_model(self.arch["name"], seed=self.seed, **kwargs)

    def local_update(self, client: int, round_: int, start: State) -> State:
        """Client `client`'s update in round `round_` from the global weights `start`."""
        torch.set_num_threads(1)
        x, y = self.shards[client]
        model = load_state(self.fresh_model(), start)
        seed = int(np.random.SeedSequence([self.seed, round_, client]).generate_state(1)[0])
        if self.privacy == "record":
            assert self.ladp is not None and self.plan is not None
            engine = build_engine(
                self.engine,
                model,
                x,
                y,
                config=self.ladp,
                seed=seed,
                noise_seed=child_seed(self.noise_seed, round_, client),
                public=self.public,
                planned_n=self.plan.planned_n,
            )
            result = engine.run()
            spent = result.spend
            ran = (spent.noise_multiplier, spent.sample_rate, spent.steps)
            if ran != (
                self.plan.noise_multiplier,
                self.plan.sample_rate,
                self.plan.steps_per_round,
            ):
                raise RuntimeError(f"client {client} ran {ran}, not the planned mechanism")
            model = result.model
        elif len(x) > 0:  # client mode: plain local training; an empty client sends zeros
            fit(
                model,
                x,
                y,
                epochs=self.local_epochs,
                batch_size=self.local_batch_size,
                lr=self.lr,
                seed=seed,
            )
        trained = model_state(model)
        update = {k: trained[k] - start[k] for k in start}
        if self.privacy == "client":
            # Clipping here only sets the scale the compression sees; the guarantee rests on the
            # server's clip of the decoded update (DPAggregator), whatever a client sends.
            update = {
                k: v.astype(np.float32)
                for k, v in DPAggregator(
                    clip_norm=self.clip_norm,
                    noise_multiplier=0.0,
                    sample_rate=1.0,
                    clients=1,
                    rng=np.random.default_rng(0),
                )
                .clip(update)
                .items()
            }
        return encode(update, method=self.compression, topk_fraction=self.topk_fraction)


@dataclass
class ServerPlan:
    """The server side: rounds, Poisson client rate, the aggregation of the privacy mode."""

    clients: int
    rounds: int
    client_rate: float
    privacy: str
    compression: str
    noise_multiplier: float = 0.0  # client mode
    clip_norm: float = 1.0  # client mode
    noise_seed: int | None = None
    # filled by the run
    joined: list[int] = field(default_factory=list)  # rounds joined, per client
    sampled: list[int] = field(default_factory=list)  # clients per round
    bytes_per_round: list[int] = field(default_factory=list)  # serialised bytes sent by clients
    fp32_bytes_per_round: list[int] = field(default_factory=list)  # what fp32 would have been


def _all_nodes(grid: Any, count: int, *, timeout: float = 120.0) -> list[int]:
    """The simulation's node ids, once all `count` have registered (the ServerApp thread starts
    before the simulation engine registers its nodes). Any node serves any client: a message
    names the client whose shard it trains on."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes[:count]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {count} Flower nodes registered")
        time.sleep(0.05)


def _shapes(state: State) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def make_strategy(plan: ServerPlan, initial: State) -> Any:
    """privcomp's Flower strategy: Poisson client sampling (privacy.federated.sample_clients)
    and the privacy mode's aggregation; no client-side evaluation (it would release statistics
    of the clients' data that no ε covers)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy import Strategy

    sample_rng, noise_rng = mechanism_rngs(plan.noise_seed, 2)
    shapes = _shapes(initial)
    plan.joined = [0] * plan.clients
    aggregator = DPAggregator(
        clip_norm=plan.clip_norm,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.client_rate,
        clients=plan.clients,
        rng=noise_rng,
    )

    class PrivcompStrategy(Strategy):
        def __init__(self) -> None:
            self.current: State = dict(initial)
            self.expected = 0  # messages sent this round

        def summary(self) -> None:
            pass

        def configure_train(
            self, server_round: int, arrays: Any, config: Any, grid: Any
        ) -> Iterable[Any]:
            nodes = _all_nodes(grid, plan.clients)
            chosen = sample_clients(sample_rng, plan.clients, plan.client_rate)
            plan.sampled.append(len(chosen))
            messages = []
            for k in chosen:
                plan.joined[int(k)] += 1
                content = RecordDict(
                    {
                        "global": arrays,
                        "config": ConfigRecord({"client": int(k), "round": server_round}),
                    }
                )
                messages.append(Message(content, dst_node_id=nodes[int(k)], message_type="train"))
            self.expected = len(messages)
            return messages

        def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
            updates: list[Mapping[str, np.ndarray]] = []
            sent, fp32 = 0, 0
            replies = list(replies)
            if len(replies) != self.expected:
                # A client dropped by Flower's reply timeout would leave the average by how long
                # it trained (its shard's size): no ε covers that, so the run stops instead.
                raise RuntimeError(f"{len(replies)} of {self.expected} sampled clients replied")
            for reply in replies:
                if reply.has_error():
                    raise RuntimeError(f"a client failed: {reply.error.reason}")
                record = reply.content["update"]
                sent += sum(len(array.data) for array in record.values())
                fp32 += sum(len(Array(v).data) for v in self.current.values())
                payload = {k: array.numpy() for k, array in record.items()}
                updates.append(decode(payload, method=plan.compression, shapes=shapes))
            plan.bytes_per_round.append(sent)
            plan.fp32_bytes_per_round.append(fp32)
            if plan.privacy == "client":
                step = aggregator.aggregate(updates, shapes)  # noise even when nobody came
            else:
                step = mean_update(updates, shapes)
            self.current = {k: (self.current[k] + step[k]).astype(np.float32) for k in shapes}
            arrays = ArrayRecord({k: Array(v) for k, v in self.current.items()})
            # Client level: how many came is the sampling's secret (no count in Flower's logs).
            shown: dict[str, int | float | list[int] | list[float]] = (
                {} if plan.privacy == "client" else {"clients": len(updates), "bytes": sent}
            )
            return arrays, MetricRecord(shown)

        def configure_evaluate(
            self, server_round: int, arrays: Any, config: Any, grid: Any
        ) -> Iterable[Any]:
            return []

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
            return None

    return PrivcompStrategy()


@contextlib.contextmanager
def ray_session(num_cpus: int | None) -> Iterator[bool]:
    """A Ray session for the simulation: the existing one when Ray is initialised (left
    running), else a local one started here and stopped on exit. Yields whether it was ours."""
    import ray

    if ray.is_initialized():
        yield False
        return
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    try:
        yield True
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _backend_keeps_ray() -> Iterator[None]:
    """Flower's RayBackend.terminate without its ray.shutdown() (ray_session owns Ray)."""
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    original = RayBackend.terminate

    def terminate(self: Any) -> None:
        if self.pool:
            self.pool.terminate_all_actors()

    RayBackend.terminate = terminate  # type: ignore[method-assign]
    try:
        yield
    finally:
        RayBackend.terminate = original  # type: ignore[method-assign]


def simulate(
    task: ClientTask,
    plan: ServerPlan,
    initial: State,
    *,
    num_cpus: int | None = None,
) -> State:
    """Run the federated training in a Flower simulation; returns the final global weights
    (and fills plan's per-round record)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Any) -> Message:
        config: Any = msg.content["config"]
        client, round_ = int(config["client"]), int(config["round"])
        arrays: Any = msg.content["global"]
        start = {k: a.numpy() for k, a in arrays.items()}
        payload = task.local_update(client, round_, start)
        record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in payload.items()})
        return Message(RecordDict({"update": record}), reply_to=msg)

    strategy = make_strategy(plan, initial)
    server_app = ServerApp()
    outcome: dict[str, State] = {}

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        arrays = ArrayRecord({k: Array(v) for k, v in initial.items()})
        strategy.start(
            grid=grid, initial_arrays=arrays, num_rounds=plan.rounds, train_config=ConfigRecord()
        )
        outcome["state"] = strategy.current

    logging.getLogger("flwr").setLevel(logging.WARNING)
    resources = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    with _LOCK, ray_session(num_cpus), _backend_keeps_ray():
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=plan.clients,
            backend_config=resources,  # type: ignore[arg-type]
        )
    if "state" not in outcome:
        raise RuntimeError("the Flower simulation ended without a global model")
    return outcome["state"]
