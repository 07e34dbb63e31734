"""`pipeline sweep`: a 2×2 grid end to end (run dirs, sweep.json, composed ε, shared references,
resume), the composition helper against the accountant, and bad input as one line."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pipelines import sweep as sweep_module
from pipelines.cli import app
from pipelines.errors import PrivcompError
from pipelines.rundir import locked
from pipelines.selection import composed_privacy
from pipelines.spend import Spend
from pipelines.sweep import (
    Axis,
    PointJob,
    SweepOptions,
    default_out,
    parse_grid,
    points,
    split_values,
)
from privacy.accounting import history_epsilon
from privacy.composition import GaussianSteps, compose
from tests.pipelines.cli_testing import one_error_line, pipeline, snapshot, tiny_sets

STAGES = ["train-dpsgd", "prune"]
GRID = ["--grid", "train-dpsgd.epsilon=2,8", "--grid", "prune.ratio=0.3,0.5"]
FAST = [
    "run.evaluate=last",
    'evaluate.attacks=["loss", "lira"]',
    'prune.finetune="none"',
]


def sweep_args(out: Path, *extra: str) -> list[str]:
    sets = [a for item in FAST for a in ("--set", item)]
    return [
        "sweep",
        *STAGES,
        *GRID,
        "--out",
        str(out),
        "--executor",
        "serial",
        *tiny_sets(),
        *sets,
        *extra,
    ]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "s"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PRIVCOMP_DEBUG", raising=False)
        result = invoke(sweep_args(out))
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"sweep: {out / 'sweep.json'}" in result.stdout
    return out


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_a_2x2_sweep_runs_four_points_in_their_run_dirs(swept: Path) -> None:
    sweep = read(swept / "sweep.json")
    assert sweep["schema_version"] == 1 and sweep["stages"] == STAGES
    assert sweep["grid"] == {"train-dpsgd.epsilon": ["2", "8"], "prune.ratio": ["0.3", "0.5"]}
    names = [p["name"] for p in sweep["points"]]
    assert names == [
        "train-dpsgd.epsilon=2_prune.ratio=0.3",
        "train-dpsgd.epsilon=2_prune.ratio=0.5",
        "train-dpsgd.epsilon=8_prune.ratio=0.3",
        "train-dpsgd.epsilon=8_prune.ratio=0.5",
    ]
    for point in sweep["points"]:
        assert point["status"] == "ok" and point["error"] is None
        run_dir = swept / point["run_dir"]
        summary = read(run_dir / "summary.json")
        assert [s["name"] for s in summary["stages"]] == STAGES
        config = (run_dir / "config.toml").read_text()
        epsilon, ratio = (s.partition("=")[2] for s in point["settings"])
        assert f"epsilon = {float(epsilon)!r}" in config and f"ratio = {float(ratio)!r}" in config
        assert 'executor = "serial"' in config  # no pool inside a point's worker
        assert (run_dir / "sweep.log").read_text().count("run directory") == 1
    assert sorted(p.name for p in (swept / "runs").iterdir()) == sorted(names)


def test_the_sweep_writes_a_cross_run_report_with_its_pareto_front(swept: Path) -> None:
    """The 2×2 sweep's report: one point per run with the grid's settings, each beside the
    composed ε of the four (same members), the Pareto front recomputed from the points, and
    each point's own report linked."""
    sweep = read(swept / "sweep.json")
    data = read(swept / "report.json")
    points = data["tradeoff"]["points"]
    assert [p["settings"] for p in points] == [
        {"prune.ratio": r, "train-dpsgd.epsilon": e} for e in (2.0, 8.0) for r in (0.3, 0.5)
    ]
    for point, entry in zip(points, sweep["points"], strict=True):
        assert point["epsilon"] == pytest.approx(entry["epsilon"])
        assert point["composed"] == {
            "epsilon": entry["composed_epsilon"],
            "delta": entry["composed_delta"],
            "runs": 4,
            "note": "",
        }
        assert point["attack"]["tests"] == 2 * 4  # loss, lira × the FPR grid
    # Accuracy, bytes and ε only: attack power is measured on the members, no criterion.
    assert data["tradeoff"]["objectives"] == {
        "maximize": ["accuracy"],
        "minimize": ["bytes", "epsilon"],
    }
    objectives = [(p["test_accuracy"], -p["bytes"], -p["epsilon"]) for p in points]

    def dominated(i: int) -> bool:
        return any(
            all(a >= b for a, b in zip(o, objectives[i], strict=True)) and o != objectives[i]
            for o in objectives
        )

    assert data["tradeoff"]["pareto"] == [i for i in range(4) if not dominated(i)]
    page = (swept / "report.html").read_text()
    assert page.count("<tr>") >= 1 + 4  # the runs table: header + a row per point
    assert "composed ε" in page and "is itself a selection" in page
    for entry in sweep["points"]:
        assert (swept / entry["run_dir"] / "report.html").is_file()
        assert f"{entry['run_dir']}/report.html" in page
    assert (swept / "report-figures" / "tradeoff.png").read_bytes().startswith(b"\x89PNG")
    again = pipeline("report", str(swept), "--out", str(swept / "again"), cwd=Path.cwd())
    assert again.returncode == 0, again.stderr
    assert read(swept / "again" / "report.json")["tradeoff"] == data["tradeoff"]


def _history(run_dir: Path) -> list[GaussianSteps]:
    account = read(run_dir / "ledger.json")["datasets"]["members"]
    return [GaussianSteps(**m) for m in account["history"]]


def test_the_composed_epsilon_is_the_accountant_on_every_points_history(swept: Path) -> None:
    sweep = read(swept / "sweep.json")
    entries = sweep["points"]
    assert len({p["group"] for p in entries}) == 1  # one split: the same members
    composed = entries[0]["composed_epsilon"]
    histories = [m for p in entries for m in _history(swept / p["run_dir"])]
    assert len(histories) == 4  # one DP release per point
    ledger = read(swept / entries[0]["run_dir"] / "ledger.json")["datasets"]["members"]
    delta, accountant = ledger["delta"], ledger["accountant"]
    direct = history_epsilon(
        [(m.noise_multiplier, m.sample_rate, m.steps) for m in histories],
        delta=delta,
        accountant=accountant,
    )
    assert composed == pytest.approx(direct, rel=1e-6)
    assert composed == pytest.approx(compose(histories, delta=delta).epsilon, rel=1e-6)
    for point in entries:
        assert point["composed_epsilon"] == composed and point["composed_delta"] == delta
        # Beyond each point's own ε (composing one point would give its own).
        assert composed > point["epsilon"] + 1.0
    assert sweep["groups"][0]["points"] == [p["name"] for p in entries]


def test_points_with_the_same_recipe_share_one_set_of_references(swept: Path) -> None:
    # The references are trained like the DP target: one recipe per ε, whatever the ratio.
    folders = [p for p in (swept / "references").iterdir() if p.is_dir()]
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "membership.json").is_file() and (folder / ".lock").exists()
        assert read(folder / "recipe.json")["recipe"]["engine"] == "dp-sgd"
    for run_dir in (swept / "runs").iterdir():
        assert not (run_dir / "references").exists()
    logs = [(d / "sweep.log").read_text() for d in sorted((swept / "runs").iterdir())]
    trained = ["reference models (2" in log for log in logs]
    assert trained == [True, False, True, False]  # the second of each ε reuses the first's


def test_a_rerun_reuses_every_point(swept: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    results = sorted(swept.glob("runs/*/*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in [*results, *swept.glob("references/*/recipe.json")]}
    first = read(swept / "sweep.json")
    result = invoke(sweep_args(swept))
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before
    again = read(swept / "sweep.json")
    keys = ("name", "config", "status", "epsilon", "composed_epsilon", "group")
    assert [{k: p[k] for k in keys} for p in again["points"]] == [
        {k: p[k] for k in keys} for p in first["points"]
    ]


def test_another_sweep_in_the_same_folder_is_refused(
    swept: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    before = snapshot(swept)
    other = sweep_args(swept)
    other[other.index("prune.ratio=0.3,0.5")] = "prune.ratio=0.3"
    proc = invoke(other)
    assert proc.exit_code == 2 and "holds another sweep" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(swept) == before


def test_a_sweep_folder_in_use_names_the_option_to_change(
    swept: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    with locked(swept):
        proc = invoke(sweep_args(swept))
    assert proc.exit_code == 2 and "in use by another privcomp process" in proc.stderr
    assert "pass another --out" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


BAD = [
    ([], "sweep needs at least one --grid"),
    (["--grid", "train-dpsgd.nosuch=1,2"], "unknown config key 'train-dpsgd.nosuch'"),
    (["--grid", "train-dpsgd.epsilon=3,0"], "train-dpsgd.epsilon=0: train-dpsgd: epsilon must be"),
    (["--grid", "train-dpsgd.epsilon="], "--grid train-dpsgd.epsilon: an empty value"),
    (["--grid", "prune.ratio=0.3,,0.5"], "--grid prune.ratio: an empty value"),
    (["--grid", "prune.ratio=0.3", "--grid", "prune.ratio=0.5"], "names 'prune.ratio' twice"),
    (["--grid", "train-dpsgd.epsilon=3,3.0"], "names a value twice"),
    (["--grid", "ratio"], "--grid expects section.key=v1,v2,..."),
    (["--grid", "run.executor=local,serial"], "the sweep sets it for every point"),
    (
        ["--grid", "prune.ratio=0.3", "--set", "evaluate.reference_cache=elsewhere"],
        "evaluate.reference_cache = 'elsewhere': the sweep shares <out>/references",
    ),
    (["--grid", "nosuch.key=1"], "unknown config section 'nosuch'"),
    (["--grid", "prune.ratio=0.3", "--set", "run.dataset=nosuch"], "unknown dataset 'nosuch'"),
    (["--grid", "prune.ratio=0.3", "--executor", "nosuch"], "unknown executor 'nosuch'"),
    (["nosuch", "--grid", "prune.ratio=0.3"], "unknown stage 'nosuch'"),
]


@pytest.mark.parametrize(("grid", "words"), BAD, ids=[w for _, w in BAD])
def test_bad_sweep_input_is_one_line(
    grid: list[str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    args = ["sweep", *STAGES, "--out", str(tmp_path / "s"), *tiny_sets(), *grid]
    result = invoke(args)
    assert result.exit_code == 2, (grid, result.output)
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_a_point_that_cannot_run_is_refused_before_any_trains(tmp_path: Path) -> None:
    """Each value is valid alone; the point that pairs them is not (the attacks need a
    population): the whole sweep is refused, through the console entry point."""
    grid = ["--grid", "data.population=0.2,0", "--grid", "prune.ratio=0.3"]
    args = ["sweep", *STAGES, "--out", str(tmp_path / "s"), *tiny_sets(), *grid]
    line = one_error_line(pipeline(*args, cwd=tmp_path))
    assert "sweep point data.population=0_prune.ratio=0.3: " in line
    assert not (tmp_path / "s").exists()


def test_a_failing_point_is_reported_and_the_others_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)

    def run_point(job: PointJob) -> dict[str, Any]:
        if "0.5" in job.point.name:
            return {"name": job.point.name, "status": "error", "error": "boom"}
        return {"name": job.point.name, "status": "ok", "error": None}

    monkeypatch.setattr(sweep_module, "run_point", run_point)
    out = tmp_path / "s"
    result = invoke(sweep_args(out))
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(error) == 1, result.stderr
    assert "2 of 4 sweep points failed" in error[0] and error[0].endswith(": boom")
    assert (
        "(train-dpsgd.epsilon=2_prune.ratio=0.5, train-dpsgd.epsilon=8_prune.ratio=0.5;" in error[0]
    )
    status = [p["status"] for p in read(out / "sweep.json")["points"]]
    assert status == ["ok", "error", "ok", "error"]


# ---- the grid ------------------------------------------------------------------------------


def test_grid_values_split_on_top_level_commas_only() -> None:
    assert split_values("1, 3,8") == ["1", "3", "8"]
    assert split_values('["loss", "lira"],["rmia"]') == ['["loss", "lira"]', '["rmia"]']
    assert split_values('"a,b",c') == ['"a,b"', "c"]


def test_point_names_are_readable_safe_and_unique() -> None:
    axes = [Axis("train-ladp.epsilon", ("1", "3")), Axis("evaluate.attacks", ('["loss"]',))]
    names = [p.name for p in points(axes)]
    assert names == [
        "train-ladp.epsilon=1_evaluate.attacks=loss",
        "train-ladp.epsilon=3_evaluate.attacks=loss",
    ]
    alike = points([Axis("run.model", ('"a b"', '"a-b"'))])  # one safe name: told apart
    assert len({p.name for p in alike}) == 2
    assert all(p.name.startswith("run.model=a-b-") for p in alike)
    assert points([Axis("x.y", ("-1",))])[0].name == "x.y=-1"
    assert [p.settings for p in points(parse_grid(["x.y=1,2", "a.b=c"]))] == [
        ("x.y=1", "a.b=c"),
        ("x.y=2", "a.b=c"),
    ]


def test_the_default_folder_names_the_sweep() -> None:
    options = SweepOptions(stages=("train-dpsgd",), grid=("train-dpsgd.epsilon=1,3",))
    out = default_out(options)
    assert out.parent == Path("runs") and out.name.startswith("sweep-")
    assert default_out(options) == out
    other = SweepOptions(stages=("train-dpsgd",), grid=("train-dpsgd.epsilon=1,8",))
    assert default_out(other) != out


# ---- composed privacy on hand-made run dirs -------------------------------------------------


def prv(entries: list[tuple[float, float, int]]) -> float:
    """The accountant itself on a history, at the fake runs' δ."""
    return history_epsilon(entries, delta=1e-5, accountant="prv")


STEPS = GaussianSteps(noise_multiplier=1.1, sample_rate=0.05, steps=200)


def fake_run(
    path: Path,
    members: list[int],
    releases: list[GaussianSteps],
    *,
    private: bool = True,
    neighbours: str = "add/remove",
) -> Path:
    """A run dir as composed_privacy reads it: split, config, ledger and release log."""
    path.mkdir(parents=True)
    (path / "splits.json").write_text(json.dumps({"seed": 0, "splits": {"members": members}}))
    (path / "config.toml").write_text('[run]\ndataset = "digits"\ndata_root = ""\n')
    spends = []
    for m in releases:
        details = {**asdict(m), "accountant": "prv"}
        eps = prv([(m.noise_multiplier, m.sample_rate, m.steps)])
        spends.append(Spend("dp", eps, 1e-5, details=details, neighbours=neighbours))
    entries = [{"position": 1, "stage": "train-dpsgd", "status": "done", "outputs": {}}]
    log = [{**entries[0], "position": i + 1, "spend": s.to_json()} for i, s in enumerate(spends)]
    (path / "releases.json").write_text(json.dumps({"releases": log}))
    own = compose(releases, delta=1e-5) if len(releases) > 1 else None
    epsilon = own.epsilon if own else (spends[0].epsilon if spends else 0.0)
    account = {
        "epsilon": epsilon if private else None,
        "delta": 1e-5,
        "accountant": "prv",
        "private": private,
        "history": [asdict(m) for m in releases],
    }
    ledger = {"datasets": {"members": account}, "budget": {"epsilon": None, "delta": None}}
    (path / "ledger.json").write_text(json.dumps(ledger))
    return path


def test_two_identical_points_compose_beyond_one(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", [1, 2, 3], [STEPS])
    b = fake_run(tmp_path / "b", [1, 2, 3], [STEPS])
    pa, pb = composed_privacy([a, b])
    alone = prv([(1.1, 0.05, 200)])
    both = prv([(1.1, 0.05, 200)] * 2)
    assert pa.epsilon == pytest.approx(alone) and pb.epsilon == pytest.approx(alone)
    assert pa.group == pb.group
    assert pa.composed_epsilon == pytest.approx(both, rel=1e-6) and both > alone
    assert pa.composed_delta == 1e-5 and pa.releases == 1
    # One point alone composes to its own ε.
    (single,) = composed_privacy([a])
    assert single.composed_epsilon == pytest.approx(alone)


def test_groups_follow_the_members(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", [1, 2, 3], [STEPS])
    other_seed = fake_run(tmp_path / "b", [3, 4, 5], [STEPS])  # overlaps a: the same people
    disjoint = fake_run(tmp_path / "c", [7, 8], [STEPS, STEPS])
    pa, pb, pc = composed_privacy([a, other_seed, disjoint])
    assert pa.group == pb.group != pc.group
    assert pa.composed_epsilon == pytest.approx(prv([(1.1, 0.05, 200)] * 2))
    assert pc.composed_epsilon == pytest.approx(pc.epsilon)  # its own two releases only


def test_a_point_without_dp_makes_its_group_not_private(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", [1, 2, 3], [STEPS])
    plain = fake_run(tmp_path / "b", [1, 2, 3], [], private=False)
    pa, pb = composed_privacy([a, plain])
    assert pa.epsilon is not None and pb.epsilon is None
    assert pa.composed_epsilon is None and pb.composed_epsilon is None
    assert "without DP" in pa.note
    (missing,) = composed_privacy([tmp_path / "never-ran"])
    assert missing.group is None and missing.releases == 0


def test_a_point_accounted_under_another_neighbour_relation_is_refused(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", [1, 2, 3], [STEPS])
    b = fake_run(tmp_path / "b", [1, 2, 3], [STEPS], neighbours="replace-one")
    with pytest.raises(PrivcompError, match="accounted under replace-one neighbours"):
        composed_privacy([a, b])


def test_points_run_at_once_in_worker_processes_train_one_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two points with one reference recipe, in two spawned workers at once: the folder's lock
    makes one train the set and the other wait and reuse it."""
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    out = tmp_path / "s"
    args = sweep_args(out, "--executor", "local", "--workers", "2")
    args[args.index("train-dpsgd.epsilon=2,8")] = "train-dpsgd.epsilon=2"
    result = invoke(args)
    assert result.exit_code == 0, result.output
    sweep = read(out / "sweep.json")
    assert sweep["workers"] == min(2, os.cpu_count() or 1)
    assert [p["status"] for p in sweep["points"]] == ["ok", "ok"]
    assert len([p for p in (out / "references").iterdir() if p.is_dir()]) == 1
    logs = [(out / p["run_dir"] / "sweep.log").read_text() for p in sweep["points"]]
    assert sorted("reference models (2" in log for log in logs) == [False, True]


def test_reproducible_noise_in_a_group_voids_the_composed_epsilon(tmp_path: Path) -> None:
    """Points with one seed and reproducible noise draw the same noise: composition, which
    assumes independent noise, does not hold, and the group says so."""
    a = fake_run(tmp_path / "a", [1, 2, 3], [STEPS])
    b = fake_run(tmp_path / "b", [1, 2, 3], [STEPS])
    config = b / "config.toml"
    config.write_text(config.read_text() + "reproducible_noise = true\n")
    pa, pb = composed_privacy([a, b])
    assert "composed ε does not hold" in pa.note and pa.note == pb.note
    (alone,) = composed_privacy([b])
    assert alone.note == ""  # one point alone composes nothing


def test_points_sharing_references_do_not_run_side_by_side_first() -> None:
    """Round-robin over the first key: with two workers, the first two points train the two
    reference sets at once instead of one waiting for the other's lock."""
    axes = parse_grid(["train-dpsgd.epsilon=2,8", "prune.ratio=0.3,0.5,0.7"])
    todo = [PointJob(p, tuple(STAGES), None, p.settings, "") for p in points(axes)]
    order = sweep_module.interleaved(todo)
    assert sorted(order) == list(range(6))
    firsts = [todo[i].point.settings[0] for i in order]
    assert firsts == ["train-dpsgd.epsilon=2", "train-dpsgd.epsilon=8"] * 3
