"""train-fl: federated training in a Flower simulation (on Ray), record- and client-level DP.

One simulation per privacy mode (module fixtures; Flower + Ray start-up is the slow part), on
digits with 4 clients and 3 rounds. The mechanisms the stage calls (client assignment, Poisson
client sampler, DP aggregation, update compression) are tested directly, each with the mutation
it must catch in mind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("flwr")

from dp_accounting import dp_event  # noqa: E402
from dp_accounting.pld import PLDAccountant  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon as dpa_rdp_epsilon  # noqa: E402

from compress.updates import decode, encode  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.federated import ServerPlan, make_strategy  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.progress import Reporter  # noqa: E402
from pipelines.runner import run_pipeline  # noqa: E402
from pipelines.spend import Spend  # noqa: E402
from privacy.composition import GaussianSteps, compose  # noqa: E402
from privacy.federated import (  # noqa: E402
    DPAggregator,
    assign_clients,
    record_level_plan,
    sample_clients,
)
from privacy.randomness import mechanism_rngs  # noqa: E402
from tests.conftest import TINY  # noqa: E402

FL = ["train-fl.clients=4", "train-fl.rounds=3", 'evaluate.attacks=["loss"]']
DELTA = 1e-5


def within(ours: float, reference: float) -> bool:
    return abs(ours - reference) <= max(0.02 * reference, 0.02)


def _run(tmp: Path, settings: list[str]) -> dict[str, Any]:
    config = load_config(None, [*TINY, *FL, *settings])
    summary = run_pipeline(["train-fl"], config=config, run_dir=tmp, reporter=Reporter())
    result = json.loads((tmp / "01-train-fl" / "result.json").read_text())
    ledger = json.loads((tmp / "ledger.json").read_text())
    return {"summary": summary, "result": result, "ledger": ledger, "run_dir": tmp}


@pytest.fixture(scope="module")
def record_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # 3 local epochs: DP noise at ε 3 on 4 small shards leaves one epoch's model near chance
    settings = ['train-fl.privacy="record"', "train-fl.local_epochs=3"]
    return _run(tmp_path_factory.mktemp("fl-record"), settings)


@pytest.fixture(scope="module")
def client_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Client mode with int8 updates, run inside a Ray session opened before it (as the Ray
    executor's would be): the session must still work afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        out = _run(
            tmp_path_factory.mktemp("fl-client"),
            [
                'train-fl.privacy="client"',
                'train-fl.update_compression="int8"',
                "train-fl.client_rate=0.75",
                "train-fl.local_epochs=3",
                "train-fl.epsilon=1000",  # 4 clients: client-level DP needs a huge ε to learn
            ],
        )
        out["ray_still_up"] = ray.is_initialized()
        out["ray_task"] = ray.get(ray.remote(lambda: 41 + 1).remote())
    finally:
        ray.shutdown()
    return out


# ---- record mode ---------------------------------------------------------------------------


def test_record_mode_epsilon_is_the_independent_accountants(record_run: dict[str, Any]) -> None:
    spend = record_run["result"]["spend"]
    d = spend["details"]
    sigma, q, steps = d["noise_multiplier"], d["sample_rate"], d["client_steps"]
    assert d["privacy_level"] == "record" and len(steps) == 4
    reference = []
    for s in steps:
        pld = PLDAccountant(value_discretization_interval=3e-4)
        pld.compose(
            dp_event.SelfComposedDpEvent(
                dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), s
            )
        )
        reference.append(pld.get_epsilon(spend["delta"]))
    assert within(spend["epsilon"], max(reference))  # parallel composition: the worst client
    assert spend["epsilon"] <= 3.0 * (1 + 1e-9)  # the target ([train-fl] epsilon default)
    members = record_run["ledger"]["datasets"]["members"]
    assert len(members["history"][0]["parts"]) == 4  # one history per client


def test_record_mode_beats_chance(record_run: dict[str, Any]) -> None:
    assert record_run["summary"]["stages"][0]["utility"]["test_accuracy"] > 0.2


def test_record_mode_plans_q_on_a_public_count() -> None:
    plan = record_level_plan(
        epsilon=3,
        delta=DELTA,
        members=720,
        clients=4,
        expected_batch_size=32,
        local_epochs=1,
        rounds=3,
    )
    assert plan.planned_n == 180 and math.isclose(plan.sample_rate, 32 / 180)
    assert plan.max_steps == 3 * plan.steps_per_round


# ---- client mode -----------------------------------------------------------------------------


def test_client_mode_epsilon_is_the_independent_accountants(client_run: dict[str, Any]) -> None:
    spend = client_run["result"]["spend"]
    d = spend["details"]
    sigma, q, rounds = d["noise_multiplier"], d["sample_rate"], d["steps"]
    assert (q, rounds, d["privacy_level"]) == (0.75, 3, "client")
    # client level: σ, q, rounds by dp_accounting's RDP (PRV/PLD grids fail at this tiny σ)
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), rounds
    )
    orders = [float(a) for a in d["rdp_orders"]]
    rdp = RdpAccountant(orders=[2 * a for a in orders] + [2 * a - 1 for a in orders])
    rdp.compose(event)
    curve = np.asarray(rdp._rdp)  # noqa: SLF001 - the composed curve at those orders
    big, small = curve[: len(orders)], curve[len(orders) :]
    lam = np.asarray(orders)
    record_curve = (lam - 0.5) / (lam - 1) * big + small  # two add/remove-client steps
    reference, _ = dpa_rdp_epsilon(orders, record_curve, spend["delta"])
    assert within(spend["epsilon"], reference)
    assert spend["epsilon"] <= 1000 * (1 + 1e-9)
    client = RdpAccountant(orders=orders)
    client.compose(event)
    assert d["client_epsilon"] <= client.get_epsilon(spend["delta"]) * 1.02 + 0.02


def test_client_mode_beats_chance(client_run: dict[str, Any]) -> None:
    assert client_run["summary"]["stages"][0]["utility"]["test_accuracy"] > 0.2


def test_int8_updates_are_at_most_a_third_of_fp32(client_run: dict[str, Any]) -> None:
    m = client_run["result"]["metrics"]
    assert m["update_compression"] == "int8"
    assert 0 < m["bytes_per_client_update"] <= m["fp32_bytes_per_client_update"] / 3


def test_client_mode_writes_no_record_of_which_clients_were_sampled(
    client_run: dict[str, Any],
) -> None:
    """Both of client mode's ε rest on nobody knowing whether a client took part in a round:
    no file of the run says how many came or who (the expected bytes per round instead)."""
    m = client_run["result"]["metrics"]
    for key in ("clients_per_round", "rounds_joined", "bytes_per_round"):
        assert key not in m and key not in m.get("audit_only", {})
    assert m["expected_bytes_per_round"] > 0


def test_a_ray_session_open_before_train_fl_is_still_usable(client_run: dict[str, Any]) -> None:
    assert client_run["ray_still_up"] and client_run["ray_task"] == 42


# ---- the mechanisms the stage calls ---------------------------------------------------------


def _strategy(initial: dict[str, np.ndarray], **plan: Any) -> Any:
    """The stage's strategy over a one-round, uncompressed, noiseless plan unless told."""
    settings = {"rounds": 1, "compression": "none", "noise_multiplier": 0.0, **plan}
    return make_strategy(ServerPlan(**settings), initial)


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]


def test_the_strategy_samples_clients_by_poisson_sampling() -> None:
    """The stage's strategy (configure_train) over many rounds: the count varies as a
    Binomial(K, q) and every client joins at rate q. A fixed-size sample fails the variance."""
    from flwr.app import ArrayRecord, ConfigRecord

    plan = ServerPlan(
        clients=10,
        rounds=1,
        client_rate=0.3,
        privacy="client",
        compression="none",
        noise_multiplier=1.0,
        noise_seed=5,
    )
    strategy = make_strategy(plan, {"w": np.zeros(3, np.float32)})
    for r in range(2000):
        strategy.configure_train(r + 1, ArrayRecord(), ConfigRecord(), _Grid())
    counts = np.asarray(plan.sampled)
    assert abs(counts.mean() - 3.0) < 0.15
    assert abs(counts.var() - 10 * 0.3 * 0.7) < 0.3  # fixed-size sampling: variance 0
    assert (counts == 0).any()
    rates = np.asarray(plan.joined) / 2000
    assert np.all(np.abs(rates - 0.3) < 0.05)


def test_poisson_sampler_is_independent_between_rounds() -> None:
    rng = mechanism_rngs(3)[0]
    draws = np.zeros((3000, 8), dtype=bool)
    for r in range(3000):
        draws[r, sample_clients(rng, 8, 0.5)] = True
    both = (draws[1:, 0] & draws[:-1, 0]).mean()
    assert abs(both - 0.25) < 0.03  # a round-robin or shuffled cycle would not be


def _replies(updates: list[dict[str, np.ndarray]], method: str = "none") -> list[Any]:
    from flwr.app import Array, ArrayRecord

    class Reply:
        def __init__(self, payload: dict[str, np.ndarray]) -> None:
            self.content = {"update": ArrayRecord({k: Array(v) for k, v in payload.items()})}

        def has_error(self) -> bool:
            return False

    return [Reply(encode(u, method=method)) for u in updates]


def test_the_server_divides_by_q_times_clients_not_by_who_came() -> None:
    strategy = _strategy(
        {"w": np.zeros(2, np.float32)}, clients=4, client_rate=0.5, privacy="client", clip_norm=10.0
    )
    strategy.expected = 1  # as configure_train records for one client
    strategy.aggregate_train(1, _replies([{"w": np.array([1.0, 2.0], np.float32)}]))
    assert np.allclose(strategy.current["w"], [0.5, 1.0])  # / (0.5 · 4), not / 1


def test_the_server_clips_the_decoded_update() -> None:
    strategy = _strategy(
        {"w": np.zeros(2, np.float32)},
        clients=1,
        client_rate=1.0,
        privacy="client",
        compression="int8",
        clip_norm=1.0,
    )
    strategy.expected = 1  # as configure_train records for one client
    strategy.aggregate_train(1, _replies([{"w": np.array([30.0, 40.0], np.float32)}], "int8"))
    assert math.isclose(float(np.linalg.norm(strategy.current["w"])), 1.0, rel_tol=1e-3)


def test_the_noise_is_added_and_moves_the_model() -> None:
    strategy = _strategy(
        {"w": np.zeros(20000, np.float32)},
        clients=4,
        client_rate=0.5,
        privacy="client",
        noise_multiplier=50.0,
        clip_norm=1.0,
    )
    strategy.aggregate_train(1, [])  # nobody came: the noise is still added
    std = float(np.std(strategy.current["w"]))
    assert math.isclose(std, 50.0 * 1.0 / (0.5 * 4), rel_tol=0.03)


def test_aggregator_template_phases() -> None:
    agg = DPAggregator(
        clip_norm=1.0, noise_multiplier=0.0, sample_rate=1.0, clients=2, rng=mechanism_rngs(0)[0]
    )
    clipped = agg.clip({"a": np.array([3.0]), "b": np.array([4.0])})
    assert math.isclose(float(np.hypot(clipped["a"][0], clipped["b"][0])), 1.0)
    bad = agg.clip({"a": np.array([np.nan])})
    assert bad["a"][0] == 0.0  # a diverged client counts as an empty one


# ---- assignment, compression, the ledger ----------------------------------------------------


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_one_record_more_or_fewer_moves_no_other_record(partition: str) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 5)).astype(np.float32), rng.integers(0, 10, 300)
    kw: dict[str, Any] = {"key": 99, "partition": partition, "alpha": 0.3, "num_classes": 10}
    full = assign_clients(x, y, 6, **kw)
    without = assign_clients(np.delete(x, 17, 0), np.delete(y, 17), 6, **kw)
    assert np.array_equal(np.delete(full, 17), without)
    if partition == "dirichlet":  # skewed: some class is concentrated on few clients
        shares = [np.bincount(full[y == c], minlength=6).max() / (y == c).sum() for c in range(10)]
        assert max(shares) > 0.5


@pytest.mark.parametrize("method", ["none", "int8", "topk"])
def test_update_compression_round_trips(method: str) -> None:
    rng = np.random.default_rng(1)
    update: dict[str, np.ndarray] = {
        "w": rng.normal(size=(16, 8)).astype(np.float32),
        "b": rng.normal(size=8),
    }
    shapes = {k: v.shape for k, v in update.items()}
    back = decode(encode(update, method=method, topk_fraction=0.25), method=method, shapes=shapes)
    err = max(float(np.abs(back[k] - update[k]).max()) for k in update)
    if method == "none":
        assert err < 1e-6
    elif method == "int8":
        assert err <= max(float(np.abs(v).max()) for v in update.values()) / 127
    else:
        assert (back["w"] != 0).sum() == 32  # a quarter of 128 entries


def test_record_mode_histories_compose_per_client_with_a_later_dp_stage() -> None:
    """A DP fine-tune on all members after train-fl: each record has seen its own client's
    steps and the fine-tune's, so the total is the worst client's history plus the fine-tune;
    neither the fine-tune alone nor every client's steps in sequence."""
    sigma, q = 1.2, 0.2
    fl = Spend(
        kind="dp",
        epsilon=None,
        delta=DELTA,
        details={
            "noise_multiplier": sigma,
            "sample_rate": q,
            "steps": 30,
            "client_steps": [30, 10, 0, 20],
            "accountant": "prv",
        },
    )
    fl = Spend(
        kind="dp",
        epsilon=compose([fl.mechanism], delta=DELTA).epsilon,
        delta=DELTA,
        details=fl.details,
    )
    tune = Spend(
        kind="dp",
        epsilon=None,
        delta=DELTA,
        lineage="continue",
        details={"noise_multiplier": 2.0, "sample_rate": 0.1, "steps": 50, "accountant": "prv"},
    )
    ledger = Ledger()
    ledger.record("train-fl", fl)
    after = ledger.record("prune", tune)
    worst = compose([GaussianSteps(sigma, q, 30), GaussianSteps(2.0, 0.1, 50)], delta=DELTA)
    sequential = compose([GaussianSteps(sigma, q, 60), GaussianSteps(2.0, 0.1, 50)], delta=DELTA)
    assert after.epsilon is not None and worst.epsilon is not None
    assert math.isclose(after.epsilon, worst.epsilon, rel_tol=1e-9)
    assert after.epsilon < (sequential.epsilon or 0.0)
    assert ledger.dataset_total().epsilon == after.epsilon


def test_the_run_files_are_standard_json(client_run: dict[str, Any]) -> None:
    """No Infinity in the ledger (the record-level RDP curve is unbounded at its top orders):
    jq and JSON.parse read what privcomp writes, and the ledger reads it back unchanged."""
    run_dir = Path(client_run["run_dir"])
    for name in ("ledger.json", "releases.json", "01-train-fl/result.json"):
        json.loads((run_dir / name).read_text(), parse_constant=_refuse)


def _refuse(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name}")


def test_audit_refuses_a_federated_run_in_one_line(record_run: dict[str, Any]) -> None:
    from pipelines.audit import audit_run
    from pipelines.errors import PrivcompError

    with pytest.raises(PrivcompError, match="not train-fl"):
        audit_run(Path(record_run["run_dir"]), trials=4, steps=1, executor="serial")


def test_a_round_where_a_sampled_client_did_not_reply_stops_the_run() -> None:
    """Flower drops a client that misses its reply timeout; the average would then depend on
    how long a client trained (its shard's size), which no ε covers."""
    strategy = _strategy(
        {"w": np.zeros(2, np.float32)}, clients=4, client_rate=1.0, privacy="record", clip_norm=1.0
    )
    strategy.expected = 2
    with pytest.raises(RuntimeError, match="1 of 2 sampled clients replied"):
        strategy.aggregate_train(1, _replies([{"w": np.array([1.0, 2.0], np.float32)}]))
