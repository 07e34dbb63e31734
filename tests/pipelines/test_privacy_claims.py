"""What an adversary with the code and every file of a run could use, and what they find:

- noise and sampling are fresh OS entropy by default: two runs with the same seed share their
  split but not their weights; reproducible noise is an opt-in that every artifact announces;
- a DP stage is never silently run again with fresh noise: resume reuses it, a forced re-run
  composes every earlier release;
- a private hyper-parameter search is accounted (its RDP curve in the ledger) and leaves no trace
  of its number of repetitions in the run dir;
- printed ε is rounded up.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from models.io import load_model
from models.onnx_io import read_metadata
from pipelines.cli import app
from pipelines.config import load_config
from pipelines.errors import PrivcompError
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from pipelines.table import summary_table
from privacy.accounting import format_epsilon
from privacy.composition import RDPCurve, compose
from privacy.hyperparameters import SearchConfig, search_rdp
from privacy.randomness import REPRODUCIBLE_WARNING
from privacy.rdp import RDP_ORDERS, gaussian_rdp
from tests.conftest import TINY

QUIET = [*TINY, 'run.evaluate="none"']


def run(run_dir: Path, stages: list[str], *extra: str, rerun_dp: bool = False) -> dict[str, Any]:
    config = load_config(None, [*QUIET, *extra])
    return run_pipeline(
        stages, config=config, run_dir=run_dir, reporter=Reporter(), rerun_dp=rerun_dp
    )


def weights(run_dir: Path) -> list[torch.Tensor]:
    return list(load_model(run_dir / "01-train-ladp")[0].parameters())


def table_text(summary: dict[str, Any]) -> str:
    console = Console(record=True, width=100)
    console.print(summary_table(summary))
    return " ".join(console.export_text().split())


def test_same_seed_same_split_fresh_noise(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    summary = run(a, ["train-ladp", "quantize"])
    run(b, ["train-ladp", "quantize"])
    assert (a / "splits.json").read_text() == (b / "splits.json").read_text()
    assert not any(torch.equal(p, q) for p, q in zip(weights(a), weights(b), strict=True))
    assert summary["run"]["noise"] == "secure"
    assert "warning" not in table_text(summary)
    ledger = json.loads((a / "ledger.json").read_text())
    assert ledger["stages"][0]["noise"] == "secure"


def test_reproducible_noise_is_an_opt_in_every_artifact_announces(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    summary = run(a, ["train-ladp", "quantize"], "run.reproducible_noise=true")
    run(b, ["train-ladp", "quantize"], "run.reproducible_noise=true")
    assert all(torch.equal(p, q) for p, q in zip(weights(a), weights(b), strict=True))
    assert summary["run"]["noise"] == "reproducible"
    assert summary["run"]["noise_note"] == REPRODUCIBLE_WARNING
    assert json.loads((a / "ledger.json").read_text())["stages"][0]["noise"] == "reproducible"
    assert REPRODUCIBLE_WARNING in table_text(summary)
    onnx_file = a / "02-quantize" / "model.int8.onnx"
    meta = read_metadata(onnx_file)
    assert json.loads(meta["privcomp.noise"]) == "reproducible"
    assert json.loads(meta["privcomp.noise_note"]) == REPRODUCIBLE_WARNING
    shown = CliRunner().invoke(app, ["inspect", str(onnx_file)])
    assert shown.exit_code == 0 and REPRODUCIBLE_WARNING in " ".join(shown.output.split())


def test_a_released_dp_stage_is_never_silently_run_again(tmp_path: Path) -> None:
    first = run(tmp_path, ["train-ladp"])
    again = run(tmp_path, ["train-ladp"])  # resume: the release is reused as it is
    assert again["stages"] == first["stages"]
    (tmp_path / "01-train-ladp" / "model.safetensors").unlink()  # its outputs are gone
    with pytest.raises(PrivcompError, match="second release"):
        run(tmp_path, ["train-ladp"])
    forced = run(tmp_path, ["train-ladp"], rerun_dp=True)
    eps_once = first["stages"][0]["privacy"]["epsilon"]
    eps_twice = forced["stages"][0]["privacy"]["epsilon"]
    assert eps_twice > 1.3 * eps_once  # both releases composed
    entry = forced["ledger"]["stages"][0]
    assert entry["earlier_releases"] == 1
    assert len(forced["ledger"]["datasets"]["members"]["history"]) == 2
    releases = json.loads((tmp_path / "releases.json").read_text())["releases"]
    assert len(releases) == 2
    # Resuming after the forced re-run keeps composing the lost release.
    assert run(tmp_path, ["train-ladp"])["stages"][0]["privacy"]["epsilon"] == eps_twice


def test_a_budget_pays_for_the_lost_releases_too(tmp_path: Path) -> None:
    capped = "budget.epsilon=5.0"  # one run at ε 4 fits, two composed do not
    run(tmp_path, ["train-ladp"], capped)
    (tmp_path / "01-train-ladp" / "model.safetensors").unlink()
    with pytest.raises(PrivcompError, match="budget: stage 'train-ladp' would bring"):
        run(tmp_path, ["train-ladp"], capped, rerun_dp=True)


def test_another_pipelines_release_in_the_run_dir_counts_in_the_total(tmp_path: Path) -> None:
    alone = run(tmp_path, ["train-ladp"])["stages"][0]["privacy"]["epsilon"]
    both = run(tmp_path, ["train-dpsgd", "train-ladp"])  # train-ladp moved to position 2
    assert [s["privacy"]["epsilon"] for s in both["stages"]] == pytest.approx([alone, alone])
    total = both["ledger"]["total"]["epsilon"]
    history = both["ledger"]["datasets"]["members"]["history"]
    assert len(history) == 3 and total > 1.2 * both["ledger"]["stages"][1]["epsilon"]
    assert both["ledger"]["stages"][0]["kind"] == "earlier-release"


def test_an_interrupted_release_that_wrote_files_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.runner

    def killed(*args: Any) -> str:  # after the weights are written, before the log says done
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipelines.runner, "artifact_hash", killed)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, ["train-ladp"])
    assert (tmp_path / "01-train-ladp" / "model.safetensors").is_file()
    with pytest.raises(PrivcompError, match="second release"):
        run(tmp_path, ["train-ladp"])
    forced = run(tmp_path, ["train-ladp"], rerun_dp=True)
    assert forced["ledger"]["stages"][0]["earlier_releases"] == 1


def test_an_attempt_that_wrote_nothing_released_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.stages.training

    def killed(*args: Any, **kwargs: Any) -> None:  # training interrupted: no file written
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipelines.stages.training, "build_engine", killed)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, ["train-ladp"])
    resumed = run(tmp_path, ["train-ladp"])  # no --rerun-dp needed
    assert "earlier_releases" not in resumed["ledger"]["stages"][0]


def test_a_second_process_is_kept_out_of_a_run_dir(tmp_path: Path) -> None:
    from pipelines.rundir import locked

    with locked(tmp_path), pytest.raises(PrivcompError, match="in use by another"):
        run(tmp_path, ["train-ladp"])
    assert not (tmp_path / "releases.json").exists()


def test_a_private_search_is_accounted_and_hides_its_repetitions(tmp_path: Path) -> None:
    console = io.StringIO()
    config = load_config(None, [*QUIET, 'train-ladp.lr="search"', "search.mean=2.0"])
    reporter = Reporter(Console(file=console, force_terminal=True, width=120))
    summary = run_pipeline(["train-ladp"], config=config, run_dir=tmp_path, reporter=reporter)
    assert not re.search(r"search.*\d+:\d\d:\d\d", console.getvalue())  # no clock on it
    stage = summary["stages"][0]
    entry = summary["ledger"]["stages"][0]
    assert entry["accountant"] == "rdp" and entry["mechanism"].startswith("hyper-parameter search")
    assert entry["chosen"]["lr"] in (0.025, 0.05, 0.1, 0.2)
    assert stage["privacy"]["epsilon"] <= 4.0  # the target covers the whole search
    assert stage["seconds"] is None  # the wall time would reveal K
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"][0]["seconds"] is None
    # The search's curve, composed by the ledger, costs more than one run at its σ.
    curve = RDPCurve(tuple(entry["rdp_orders"]), tuple(entry["rdp"]))
    single = gaussian_rdp(
        noise_multiplier=entry["noise_multiplier"],
        sample_rate=entry["sample_rate"],
        steps=entry["steps"],
    )
    rebuilt = search_rdp(RDP_ORDERS, single, config=SearchConfig(mean=2.0))
    assert list(rebuilt) == pytest.approx(list(curve.rdp))
    assert compose([curve], delta=1e-4).epsilon == pytest.approx(stage["privacy"]["epsilon"])
    words = " ".join(p.read_text() for p in tmp_path.rglob("*.json"))
    assert "repetition" not in words.replace("steps_per_repetition", "")


def test_searching_a_setting_that_changes_the_accounting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrivcompError, match="cannot be searched"):
        run(tmp_path, ["train-ladp"], "train-ladp.epochs=[1, 2]")
    with pytest.raises(PrivcompError, match="expects a float"):
        run(tmp_path, ["train-ladp"], 'train-ladp.lr="fast"')


@pytest.mark.parametrize(
    ("epsilon", "printed"),
    [(2.9949, "3"), (2.99, "2.99"), (2.9901, "3"), (7.981, "7.99"), (0.12341, "0.124")],
)
def test_printed_epsilon_is_rounded_up(epsilon: float, printed: str) -> None:
    assert format_epsilon(epsilon) == printed
    assert float(printed) >= epsilon
