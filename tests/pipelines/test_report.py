"""The tradeoff report: `pipeline run` writes it, `pipeline report` rewrites it or compares run
dirs; the page renders in headless Chromium with every image, one row per artifact and nothing
wider than the page; a ROC above the DP bound is flagged in red at the top."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pipelines.cli import app
from pipelines.rundir import sha256_of
from privacy.accounting import format_epsilon
from tests.browser import launch_browser, render
from tests.pipelines.cli_testing import pipeline, tiny_sets

MAIN = ["train-ladp", "prune", "quantize", "evaluate"]


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny main run through the command line, as `make run` does it."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    proc = pipeline("run", *MAIN, "--run-dir", str(run_dir), *tiny_sets(), cwd=Path.cwd())
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc.stdout


def report(*args: str) -> Result:
    """`pipeline report` in this process (the run itself goes through a subprocess above)."""
    return CliRunner().invoke(app, ["report", *args])


def _data(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return data


def test_run_writes_its_report_and_prints_the_path(reported: tuple[Path, str]) -> None:
    run_dir, stdout = reported
    assert f"report: {run_dir / 'report.html'}" in " ".join(stdout.split())
    for name in ("report.html", "report.md", "report.json"):
        assert (run_dir / name).is_file()
    data = _data(run_dir)
    assert data["schema_version"] == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    artifacts = {s["artifact_hash"] for s in summary["stages"]}
    rows = data["runs"][0]["rows"]
    assert len(rows) == len(artifacts) == 3  # train-ladp, prune, quantize (evaluate adds attacks)
    assert [r["stage"] for r in rows] == ["train-ladp", "prune", "quantize"]
    last = rows[-1]
    assert last["latency_ms"] and last["latency_ms"]["1"] > 0  # onnxruntime, measured by quantize
    for row in rows:
        assert row["epsilon"] == pytest.approx(summary["stages"][0]["privacy"]["epsilon"])
        for metrics in row["attacks"].values():
            for key in ("auc_ci", "tpr_at_1pct_fpr_ci", "tpr_at_0_1pct_fpr_ci"):
                assert len(metrics[key]) == 2
        population = row["findings"]["population"]
        assert population["consistency"] == "checked" and population["violations"] == []
        strongest = population["strongest"]["0.01"]
        best = max(m["tpr_at_1pct_fpr"] for m in row["attacks"].values())
        assert strongest["tpr"] == pytest.approx(best)  # the stored ROC keeps 1% FPR exactly
        assert strongest["tpr_lower"] <= strongest["tpr"] <= strongest["tpr_upper"]
        assert strongest["tests"] == len(row["attacks"]) * 4


def test_files_are_listed_with_their_hashes_and_the_snippet_loads_the_model(
    reported: tuple[Path, str],
) -> None:
    run_dir, _ = reported
    report = _data(run_dir)["runs"][0]
    listed = {f["path"]: f["sha256"] for f in report["files"]}
    assert "03-quantize/model.int8.onnx" in listed and "ledger.json" in listed
    for path, digest in listed.items():
        assert sha256_of(run_dir / path) == digest
    assert not any(p.startswith("references") for p in listed)
    assert report["references"]["models"] == 2
    md = (run_dir / "report.md").read_text()
    snippet = md.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) == 3
    namespace: dict[str, Any] = {}
    exec(snippet.replace('"03-quantize', f'"{run_dir}/03-quantize'), namespace)  # noqa: S102
    assert namespace["logits"].shape == (1, 10)


def test_markdown_images_lie_beside_it_and_the_html_is_self_contained(
    reported: tuple[Path, str],
) -> None:
    run_dir, _ = reported
    md = (run_dir / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 1 + 3  # the stage chart, one ROC figure per artifact
    for image in images:
        assert (run_dir / image).read_bytes().startswith(b"\x89PNG")
    page = (run_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(images)
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing fetched


def test_the_page_renders_in_headless_chromium(reported: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = reported
    rows = len(_data(run_dir)["runs"][0]["rows"])
    with launch_browser() as browser:  # skips with a clear message where there is no browser
        check = render(
            run_dir / "report.html",
            screenshot=tmp_path / "report.png",
            rows_selector="table#artifacts tbody tr",
            browser=browser,
        )
    assert check.problems() == []  # every image loads, nothing overflows, nothing fetched
    assert check.rows == rows
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


def _break_the_bound(run_dir: Path) -> None:
    """A claim of ε = 0.05 and a LiRA curve with TPR 0.9 from FPR 0 on: with 60 non-members no
    curve can break ε = 4 (the FPR's upper bound is 0.12 even with no false positive), so the
    claim is made small, as a broken accountant would."""
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text())
    for stage in summary["stages"]:
        stage["privacy"]["epsilon"] = 0.05
    summary_file.write_text(json.dumps(summary))
    for metrics_file in sorted(run_dir.glob("0*/metrics.json")):
        data = json.loads(metrics_file.read_text())
        curve = data["roc"].get("lira")
        if curve is not None:
            curve["tpr"] = [max(t, 0.9) for t in curve["tpr"]]
            metrics_file.write_text(json.dumps(data))


def test_a_roc_above_the_dp_bound_is_flagged_in_red_at_the_top(
    reported: tuple[Path, str], tmp_path: Path
) -> None:
    run_dir, _ = reported
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    result = report(str(broken))
    assert result.exit_code == 0, result.output
    assert "Consistency check passed" in (broken / "report.md").read_text()
    _break_the_bound(broken)
    result = report(str(broken))
    assert result.exit_code == 0, result.output
    page = (broken / "report.html").read_text()
    alert = page.index('<p class="alert">Consistency check failed')
    assert alert < page.index("<h2>Artifacts</h2>")
    assert "lira: TPR" in page and "exceeds e^ε·FPR + δ" in page
    flagged = [v for r in _data(broken)["runs"][0]["rows"] for v in _violations(r)]
    assert flagged and all(v["attack"] == "lira" for v in flagged)


def _violations(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for f in row["findings"].values() for v in f["violations"]]


def test_report_compares_several_run_dirs(reported: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = reported
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = other / "config.toml"
    config.write_text(config.read_text().replace("ratio = 0.5", "ratio = 0.25"))
    out = tmp_path / "both"
    result = report(str(run_dir), str(other), "--out", str(out))
    assert result.exit_code == 0, result.output
    data = _data(out)
    points = data["tradeoff"]["points"]
    assert [p["settings"] for p in points] == [{"prune.ratio": 0.5}, {"prune.ratio": 0.25}]
    assert data["tradeoff"]["pareto"] == [0, 1]  # equal on every objective: neither dominates
    # The same members twice (a copy of the release): each point's composed ε is both's.
    for point in points:
        composed = point["composed"]
        assert composed["runs"] == 2 and composed["epsilon"] > point["epsilon"]
    assert "is itself a selection" in (out / "report.html").read_text()
    assert (out / "report-figures" / "tradeoff.png").is_file()
    assert '<table id="runs">' in (out / "report.html").read_text()


def test_bad_report_arguments_are_one_line(reported: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = reported
    cases = {
        "no such run dir": [str(tmp_path / "missing")],
        "no summary.json": [str(tmp_path)],
        "named twice": [str(run_dir), str(run_dir)],
    }
    for expected, args in cases.items():
        result = report(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], result.stderr


def test_the_report_shows_the_privacy_card_with_the_owners_attack_results(
    reported: tuple[Path, str],
) -> None:
    """The card that ships (PRIVACY.md) states ε, δ and the noise mode and names the attacks;
    the report shows it with the attack results beside it, which the shipped card leaves out."""
    run_dir, _ = reported
    report = _data(run_dir)["runs"][0]
    [card] = report["cards"]
    assert card["path"] == "03-quantize/PRIVACY.md"
    assert card["text"] == (run_dir / card["path"]).read_text()
    last = report["rows"][-1]
    delta = f"δ = {last['delta']:g}"
    for stated in (format_epsilon(last["epsilon"]), delta, "secure", "lira", "rmia"):
        assert stated in card["text"], stated
    lira_auc = f"{last['attacks']['lira']['auc']:.3f}"
    assert lira_auc not in card["text"]
    md = (run_dir / "report.md").read_text()
    section = md.split("\n## Privacy cards", 1)[1].split("\n## Load the shipped model", 1)[0]
    assert card["text"].splitlines()[0] in section
    assert "not in the card that ships" in section
    assert f"| lira | {lira_auc} [" in section


def _reported_again(
    reported: tuple[Path, str], folder: Path, edit: Callable[[dict[str, Any]], None]
) -> str:
    """The report of a copy of the tiny run whose summary.json `edit` changed, as Markdown."""
    shutil.copytree(reported[0], folder)
    summary = json.loads((folder / "summary.json").read_text())
    edit(summary)
    (folder / "summary.json").write_text(json.dumps(summary))
    assert report(str(folder)).exit_code == 0
    return (folder / "report.md").read_text()


def test_a_run_without_attacks_says_the_check_was_not_made(
    reported: tuple[Path, str], tmp_path: Path
) -> None:
    def no_attacks(summary: dict[str, Any]) -> None:
        for stage in summary["stages"]:
            stage["attacks"] = {}

    md = _reported_again(reported, tmp_path / "quiet", no_attacks)
    assert "Consistency check: not made, no attack ran" in md and "check passed" not in md


def test_a_row_that_is_not_private_names_no_noise_mode(
    reported: tuple[Path, str], tmp_path: Path
) -> None:
    def prune_not_private(summary: dict[str, Any]) -> None:
        (prune,) = [s for s in summary["stages"] if s["name"] == "prune"]
        prune["privacy"]["epsilon"] = None  # as if it had read the members without DP

    md = _reported_again(reported, tmp_path / "plain", prune_not_private)
    table = md.split("\n## Artifacts\n\n", 1)[1].split("\n\n")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()]
    noise = rows[0].index("noise")
    by_stage = {row[0]: row for row in rows[2:]}
    assert by_stage["train-ladp"][noise] == "secure"
    assert by_stage["prune"][noise] == "-"
