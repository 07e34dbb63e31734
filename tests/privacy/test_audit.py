"""`pipeline audit`: the empirical audit of the mechanism that ships, and mutations it must catch.

The audit runs the run's own engine (privacy.engines, the stage's settings and allocation, the
ledger's σ and q) with and without a white-box gradient canary. A tiny DP run on digits with
reproducible noise (so that the test is deterministic; the audit of a secure run draws fresh
noise) is audited honestly and with two mutations of the shipped code, each patched into
privacy.ladp where the stage's engine reads it: the noise halved, and one layer group without
noise. Both must fail the audit; the honest mechanism must pass it, and the audit must be strong
enough to see most of the signal the claim allows (else an audit that measures nothing would
pass too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privacy.ladp
import privacy.step
from pipelines.audit import _training_entry, audit_run
from pipelines.audit_statistics import gdp_bounds, threshold_epsilon
from pipelines.cli import app
from pipelines.config import load_config
from pipelines.progress import Reporter
from pipelines.rundir import locked
from pipelines.runner import run_pipeline
from privacy.accounting import compute_epsilon, gaussian_epsilon
from tests.conftest import TINY

TRIALS, STEPS = 120, 1
AUDITED = [
    *TINY,
    "model.width=8",
    "model.hidden=32",
    "train-ladp.epsilon=1.0",  # a large σ: a small claim that the bounds can reach
    "run.reproducible_noise=true",
    'run.evaluate="none"',
]
MUTATED_GROUP = "4"  # the cnn's second conv


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("audited")
    run_pipeline(["train-ladp"], config=load_config(None, AUDITED), run_dir=run_dir)
    return run_dir


def audit(run_dir: Path) -> dict:
    report = audit_run(run_dir, trials=TRIALS, steps=STEPS, executor="serial", reporter=Reporter())
    print(report.line())
    return report.to_dict()


def test_gaussian_epsilon_is_the_accountants_at_q_1() -> None:
    for sigma in (0.8, 1.0, 3.0):
        claimed = compute_epsilon(noise_multiplier=sigma, sample_rate=1.0, steps=1, delta=1e-5)
        assert gaussian_epsilon(1 / sigma, 1e-5) == pytest.approx(claimed, rel=0.02)


def test_bounds_stay_below_a_gaussian_pairs_epsilon_and_see_most_of_it() -> None:
    rng = np.random.default_rng(0)
    mu, n = 1.0, 4000
    out, inn = rng.normal(0, 1, n), rng.normal(mu, 1, n)
    truth = gaussian_epsilon(mu, 1e-5)
    cp = threshold_epsilon(out, inn, delta=1e-5, confidence=0.95)
    estimate, lower, mu_hat = gdp_bounds(out, inn, delta=1e-5, alpha=0.05)
    assert 0 < cp < truth and lower < truth
    assert mu_hat == pytest.approx(mu, abs=0.1) and estimate == pytest.approx(truth, rel=0.15)


def test_the_honest_mechanism_passes_and_the_audit_is_strong(dp_run: Path) -> None:
    report = audit(dp_run)
    assert report["passed"]
    assert report["cp_epsilon_lower_bound"] <= report["claimed_epsilon"]
    assert report["gdp_epsilon_lower_bound"] <= report["claimed_epsilon"]
    combined = next(s for s in report["statistics"] if s["name"] == "combined")
    claimed_mu = math.sqrt(STEPS) / report["noise_multiplier"]
    # The canary's signal is the claim's (momentum and the members' sampling only dilute it).
    assert 0.7 * claimed_mu < combined["mu_estimate"] < 1.15 * claimed_mu
    assert report["steps"] == STEPS and report["trials"] == TRIALS
    assert (dp_run / "audit.json").is_file()


Stds = Callable[[float, Sequence[float]], list[float]]


def test_halved_noise_fails_the_audit(dp_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    honest: Stds = privacy.step.group_noise_stds
    monkeypatch.setattr(
        privacy.step, "group_noise_stds", lambda s, w: [x / 2 for x in honest(s, w)]
    )
    report = audit(dp_run)
    assert not report["passed"]
    failed = CliRunner().invoke(
        app, ["audit", str(dp_run), "--trials", str(TRIALS), "--steps", "1", "--executor", "serial"]
    )
    assert failed.exit_code == 3 and "audit FAILED" in failed.output


def test_a_group_without_noise_fails_the_audit(
    dp_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest_noisy_gradient = privacy.ladp.noisy_gradient

    def one_group_unnoised(sums: dict, groups: Sequence, **kwargs: object) -> dict:
        out = honest_noisy_gradient(sums, groups, **kwargs)  # type: ignore[arg-type]
        for g in groups:
            if g.name == MUTATED_GROUP:
                for n in g.param_names:
                    out[n] = sums[n] / kwargs["expected_batch_size"]  # type: ignore[operator]
        return out

    monkeypatch.setattr(privacy.ladp, "noisy_gradient", one_group_unnoised)
    report = audit(dp_run)
    assert not report["passed"]
    group = next(s for s in report["statistics"] if s["name"] == MUTATED_GROUP)
    assert max(group["cp_lower_bound"], group["gdp_lower_bound"]) > report["claimed_epsilon"]


def test_cli_prints_one_line_and_refuses_a_run_without_dp(dp_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["audit", str(dp_run), "--trials", "8", "--executor", "serial"]
    )
    assert result.exit_code == 0, result.output
    assert "audit passed" in result.output and "claimed ε" in result.output
    plain = tmp_path / "plain"
    run_pipeline(["train"], config=load_config(None, [*TINY, 'run.evaluate="none"']), run_dir=plain)
    refused = CliRunner().invoke(app, ["audit", str(plain)])
    assert refused.exit_code == 2 and "has none" in refused.output
    missing = CliRunner().invoke(app, ["audit", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a privcomp run directory" in missing.output


def test_the_audit_tests_the_last_dp_training_and_waits_for_a_busy_run(dp_run: Path) -> None:
    """The latest artifact descends from the last training stage: its entry is the audited one.
    A run dir another process holds is refused in one line that asks to wait (the run dir is
    the command's argument: there is no --run-dir to change)."""
    first = {"stage": "train-dpsgd", "kind": "dp", "engine": "dp-sgd"}
    last = {"stage": "train-ladp", "kind": "dp", "engine": "ladp"}
    entry, engine = _training_entry({"stages": [first, {"stage": "prune", "kind": "x"}, last]})
    assert (entry["stage"], engine) == ("train-ladp", "ladp")
    with locked(dp_run):
        busy = CliRunner().invoke(app, ["audit", str(dp_run), "--trials", "8"])
    assert busy.exit_code == 2 and "in use by another privcomp process" in busy.output
    assert "wait for it to finish" in busy.output and "--run-dir" not in busy.output
