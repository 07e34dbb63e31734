"""The privacy card (PRIVACY.md, PRIVACY.json) beside every exported ONNX file, on tiny runs: it
states the guarantee as the ledger has it, the noise mode, the steps and the attacks' names, and
holds none of the members' statistics unless the user opted in (then labelled as the audit's)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from models.onnx_io import read_metadata
from pipelines.artifacts import ONNX_MODEL, artifact_hash
from pipelines.config import load_config
from pipelines.onnx_metadata import ATTACK_METADATA_NOTE
from pipelines.privacy_card import (
    CARD_FILE,
    FACTS_FILE,
    NOT_DP_HEADING,
    NOT_PRIVATE_HEADING,
    CardFacts,
    _step_descriptions,
    note_selection,
    privacy_card_markdown,
    read_card_facts,
)
from pipelines.progress import Reporter
from pipelines.runner import _attack_plan, plan, run_pipeline
from privacy.accounting import format_epsilon
from privacy.randomness import REPRODUCIBLE_WARNING, SECURE_DESCRIPTION
from tests.conftest import TINY

DP_STAGES = ["train-ladp", "prune", "quantize", "evaluate"]
DP_SETTINGS = [
    *TINY,
    'prune.finetune="public"',
    "prune.finetune_epochs=1",
    "quantize.timing_samples=64",
    'run.evaluate="each"',
    'evaluate.attacks=["loss", "confidence"]',
    'evaluate.audit_attacks=["loss", "lira"]',
]
QUIET = [*TINY, 'run.evaluate="none"']
METRICS = ("auc", "balanced_accuracy", "advantage", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")


def run(tmp: Path, stages: list[str], settings: list[str]) -> Path:
    run_pipeline(stages, config=load_config(None, settings), run_dir=tmp, reporter=Reporter())
    return tmp


def card(folder: Path) -> str:
    return (folder / CARD_FILE).read_text()


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("card-dp"), DP_STAGES, DP_SETTINGS)


def attack_values(run_dir: Path) -> list[float]:
    """Every attack number the run measured (each stage's metrics.json, summary.json)."""
    values: list[float] = []

    def collect(attacks: dict[str, dict[str, Any]]) -> None:
        for metrics in attacks.values():
            values.extend(float(metrics[k]) for k in METRICS if metrics.get(k) is not None)
            values.extend(float(v) for v in metrics.get("auc_ci") or [])
            if metrics.get("epsilon_lower_bound") is not None:
                values.append(float(metrics["epsilon_lower_bound"]))

    for path in run_dir.glob("*/metrics.json"):
        collect(json.loads(path.read_text()).get("attacks", {}))
    for row in json.loads((run_dir / "summary.json").read_text())["stages"]:
        collect(row["attacks"])
        if row.get("strongest"):
            values.extend(float(row["strongest"][k]) for k in ("tpr", "tpr_lower", "tpr_upper"))
    return values


def leaked(text: str, values: list[float], allowed: set[str]) -> list[str]:
    """Attack values found in text at 2-4 decimals (numbers the card states for another reason,
    such as a test accuracy, are `allowed`)."""
    numbers = set(re.findall(r"\d+\.\d+", text)) - allowed
    shown = {f"{v:.{d}f}" for v in values for d in (2, 3, 4)}
    return sorted(numbers & shown)


def legitimate_numbers(facts: CardFacts) -> set[str]:
    """The numbers the default card states that are not attack results, at 2-4 decimals."""
    numbers = {format_epsilon(facts.epsilon), f"{facts.delta:g}"}
    for f in facts.files:
        if f.test_accuracy is not None:
            numbers |= {f"{f.test_accuracy:.{d}f}" for d in (2, 3, 4)}
    return numbers


# ---- a DP run ---------------------------------------------------------------------------------


def test_a_dp_run_writes_a_card_beside_both_onnx_files_of_quantize(dp_run: Path) -> None:
    folder = dp_run / "03-quantize"
    assert (folder / "model.onnx").is_file() and (folder / "model.int8.onnx").is_file()
    text = card(folder)
    assert "`model.onnx`" in text and "`model.int8.onnx`" in text
    facts = read_card_facts(folder)  # PRIVACY.json: the facts the report renders
    assert privacy_card_markdown(facts) == text
    assert CardFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
    assert not (dp_run / "01-train-ladp" / CARD_FILE).exists()  # torch models have none
    assert not (dp_run / "02-prune" / FACTS_FILE).exists()


def test_the_card_states_the_guarantee_as_the_ledger_has_it(dp_run: Path) -> None:
    text = card(dp_run / "03-quantize")
    ledger = json.loads((dp_run / "ledger.json").read_text())
    entry = next(e for e in ledger["stages"] if e["stage"] == "quantize")
    assert f"ε = {format_epsilon(entry['epsilon'])}, δ = {entry['delta']:g}" in text
    assert f"accountant: {entry['accountant']}" in text
    assert SECURE_DESCRIPTION in text and REPRODUCIBLE_WARNING not in text
    assert "`train-ladp → prune → quantize`" in text
    assert "calibrat" in text and "32 public examples" in text
    assert "digits" in text and "`cnn`" in text and "1×8×8" in text and "10 classes" in text
    members = json.loads((dp_run / "splits.json").read_text())["splits"]["members"]
    assert f"| members | {len(members):,} |" in text
    assert "Spent ε on the members: train-ladp." in text
    assert "(no private data read; the guarantee carries over): prune, quantize." in text
    int8 = read_metadata(dp_run / "03-quantize" / "model.int8.onnx")
    accuracy = json.loads(int8["privcomp.test_accuracy"])
    assert f"{accuracy:.4f}" in text
    version = json.loads(int8["privcomp.version"])
    assert re.search(rf"privcomp {re.escape(version)} · \d{{4}}-\d{{2}}-\d{{2}} \(UTC\) ·", text)
    assert not re.search(r"\d{2}:\d{2}", text)  # a date, no time: resumed runs write the same


def test_the_card_names_the_attacks_and_holds_none_of_their_results(dp_run: Path) -> None:
    folder = dp_run / "03-quantize"
    text = card(folder)
    # quantize's own evaluation (run.evaluate = each) and the evaluate stage's audit after it
    assert "audit runs these attacks on `model.int8.onnx`: `loss`, `confidence`, `lira`." in text
    for where in ("report.html", "report.md", "summary.json"):
        assert where in text
    values = attack_values(dp_run)
    assert values, "the run measured attacks: the check below would check nothing"
    facts = read_card_facts(folder)
    assert leaked(text, values, legitimate_numbers(facts)) == []
    for word in ("AUC", "TPR", "FPR", "advantage", "lower bound", ATTACK_METADATA_NOTE):
        assert word not in text
    assert all(f.attack is None for f in facts.files)
    assert "privcomp.attack.note" not in read_metadata(folder / "model.int8.onnx")
    # The check catches the strongest attack's numbers when a card shows them.
    rows = json.loads((dp_run / "summary.json").read_text())["stages"]
    best = next(r["strongest"] for r in rows if r["name"] == "prune")
    strongest = {
        "attack": best["attack"],
        "fpr": best["fpr_point"],
        "tpr": best["tpr"],
        "tpr_interval": [best["tpr_lower"], best["tpr_upper"]],
        "beats_chance": best["beats_chance"],
        "measured_on": "02-prune",
    }
    files = [replace(f, attack=strongest) for f in facts.files]
    shown = privacy_card_markdown(replace(facts, attack_metadata=True, files=files))
    assert leaked(shown, values, legitimate_numbers(facts)) != []


def test_the_card_is_outside_the_artifact_hash_and_stays_on_resume(dp_run: Path) -> None:
    manifest = json.loads((dp_run / "manifest.json").read_text())["stages"]
    int8 = dp_run / "03-quantize" / "model.int8.onnx"
    assert manifest[2]["outputs"][ONNX_MODEL] == artifact_hash(ONNX_MODEL, int8)
    before = card(dp_run / "03-quantize")
    run(dp_run, DP_STAGES, DP_SETTINGS)  # every stage reused
    assert card(dp_run / "03-quantize") == before


def test_inspect_says_where_the_card_is(dp_run: Path) -> None:
    from pipelines.cli import app

    path = dp_run / "03-quantize" / "model.int8.onnx"
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "privacy card:" in result.output and CARD_FILE in result.output


# ---- opt-in attack metadata, reproducible noise, defenses, no DP ------------------------------


def test_with_attack_metadata_the_numbers_appear_under_the_labelled_heading(
    tmp_path: Path,
) -> None:
    settings = [*DP_SETTINGS, "export.attack_metadata=true"]
    run_dir = run(tmp_path, ["train-ladp", "prune", "export"], settings)
    folder = run_dir / "03-export"
    text = card(folder)
    meta = read_metadata(folder / "model.onnx")
    attack = {k: json.loads(v) for k, v in meta.items() if k.startswith("privcomp.attack.")}
    # The summary's headline of the artifact it was measured on, corrected interval and all.
    rows = json.loads((run_dir / "summary.json").read_text())["stages"]
    (source,) = [r for r in rows if r["name"] == "prune"]
    strongest = source["strongest"]
    assert attack["privcomp.attack.attack"] == strongest["attack"]
    assert attack["privcomp.attack.tpr"] == strongest["tpr"]
    assert attack["privcomp.attack.tpr_interval"] == [
        strongest["tpr_lower"],
        strongest["tpr_upper"],
    ]
    assert attack["privcomp.attack.beats_chance"] == strongest["beats_chance"]
    assert attack["privcomp.attack.fpr"] == 0.01
    heading = next(line for line in text.splitlines() if ATTACK_METADATA_NOTE in line)
    assert heading.startswith("## ") and "not covered by ε" in heading
    below = text[text.index(heading) :]
    tpr, (low, high) = strongest["tpr"], attack["privcomp.attack.tpr_interval"]
    assert f"{tpr:.4f} at 1% [{low:.4f}, {high:.4f}]" in below
    assert f"[{low:.4f}, {high:.4f}]" not in text[: text.index(heading)]  # nowhere else
    assert json.loads(meta["privcomp.attack.measured_on"]) in below


def test_reproducible_noise_says_epsilon_does_not_hold_against_the_seed(tmp_path: Path) -> None:
    run_dir = run(tmp_path, ["train-ladp", "export"], [*QUIET, "run.reproducible_noise=true"])
    text = card(run_dir / "02-export")
    assert REPRODUCIBLE_WARNING in text
    assert text.index(REPRODUCIBLE_WARNING) < text.index("## The model")  # up front
    assert "neither config.toml nor the seed" in text and "here also the noise" in text
    facts = read_card_facts(run_dir / "02-export")
    assert facts.noise == "reproducible" and facts.seed is None  # the seed rebuilds the noise
    assert "run.seed = " not in text
    assert json.loads((run_dir / "02-export" / FACTS_FILE).read_text())["seed"] is None


def test_a_defended_run_says_not_dp_and_infinite_epsilon(tmp_path: Path) -> None:
    run_dir = run(tmp_path, ["train", "export"], [*QUIET, 'train.defense="l2"'])
    text = card(run_dir / "02-export")
    assert NOT_DP_HEADING in text and "ε = ∞" in text
    assert "`l2`" in text and "promises nothing against an attack nobody ran" in text
    assert "δ =" not in text
    facts = read_card_facts(run_dir / "02-export")
    assert (facts.epsilon, facts.defense) == (None, "l2")


def test_a_defended_run_calibrated_on_the_members_names_that_step_too(tmp_path: Path) -> None:
    calibrated = [
        'train.defense="l2"',
        'quantize.mode="static"',
        'quantize.calibration="members"',
        "quantize.allow_private_calibration=true",
    ]
    run_dir = run(tmp_path, ["train", "quantize"], [*QUIET, *calibrated])
    text = card(run_dir / "02-quantize")
    warning = "**Also read without DP or defense:** the members, by quantize"
    assert NOT_DP_HEADING in text and warning in text
    assert text.index(warning) < text.index("## The model")  # up front, with the defense's
    plain = run(tmp_path / "plain", ["train", "export"], [*QUIET, 'train.defense="l2"'])
    assert "Also read without DP" not in card(plain / "02-export")


def test_the_steps_are_the_files_lineage_and_the_total_the_runs(tmp_path: Path) -> None:
    """A defended model trained first, then a DP one that export ships: the card's steps start
    at the DP training; the earlier non-DP read shows as the members' total, ε = ∞."""
    run_dir = run(tmp_path, ["train", "train-ladp", "export"], [*QUIET, 'train.defense="l2"'])
    facts = read_card_facts(run_dir / "03-export")
    assert [s.stage for s in facts.steps] == ["train-ladp", "export"]
    assert facts.defense is None and facts.epsilon is not None and facts.total_epsilon is None
    text = card(run_dir / "03-export")
    assert NOT_DP_HEADING not in text and "the members' total so far is ε = ∞" in text


def test_a_pate_students_steps_start_at_the_distillation(tmp_path: Path) -> None:
    """A PATE student is a new lineage whose ε is PATE's own: the teacher's training is no step
    of it (its release is in the members' total)."""
    pate = [
        'distill.mode="pate"',
        "distill.teachers=4",
        "distill.teacher_epochs=1",
        "distill.queries=40",
        "distill.gnmax_sigma=10.0",
        "distill.delta=1e-4",
    ]
    run_dir = run(tmp_path, ["train-dpsgd", "distill", "export"], [*QUIET, *pate])
    facts = read_card_facts(run_dir / "03-export")
    assert [s.stage for s in facts.steps] == ["distill", "export"]
    assert facts.epsilon is not None and facts.total_epsilon is not None
    assert facts.total_epsilon > facts.epsilon


def test_a_non_private_run_says_not_private(tmp_path: Path) -> None:
    run_dir = run(tmp_path, ["train", "export"], QUIET)
    text = card(run_dir / "02-export")
    assert NOT_PRIVATE_HEADING in text and "ε = ∞" in text
    assert NOT_DP_HEADING not in text and "δ =" not in text
    assert "Covered: nothing" in text and "train read the members without DP" in text
    assert "No attack is configured" in text  # run.evaluate = none, no evaluate stage


@pytest.mark.parametrize(
    ("settings", "said", "public"),
    [
        ([], "each client runs DP-SGD on its own records", []),
        (
            ['train-fl.engine="ladp"', 'train-fl.update_compression="int8"'],
            "each client runs LADP on its own records, int8 updates",
            ["LADP's layer sensitivities (Fisher information) and allocation"],
        ),
        (['train-fl.privacy="client"'], "the server clips each client's update", []),
    ],
)
def test_a_federated_step_says_its_mode(settings: list[str], said: str, public: list[str]) -> None:
    ctx = SimpleNamespace(config=load_config(None, ["train-fl.clients=3", *settings]))
    text, uses, test = _step_descriptions(ctx, "train-fl", {}, "dp")  # type: ignore[arg-type]
    assert "the members split among 3 clients (iid)" in text and said in text
    assert (uses, test) == (public, [])


# ---- which attacks a card names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "stages", "expected"),
    [
        ("each", ["train", "export", "evaluate"], [("loss",), ("loss", "lira"), ("loss", "lira")]),
        ("last", ["train", "export", "evaluate"], [(), ("loss", "lira"), ("loss", "lira")]),
        ("last", ["train", "export"], [(), ("loss",)]),
        ("none", ["train", "export", "evaluate"], [(), ("lira",), ("lira",)]),
    ],
)
def test_the_attack_plan_follows_the_runner(
    mode: str, stages: list[str], expected: list[tuple[str, ...]]
) -> None:
    config = load_config(
        None,
        [
            *TINY,
            f'run.evaluate="{mode}"',
            'evaluate.attacks=["loss"]',
            'evaluate.audit_attacks=["lira"]',
        ],
    )
    assert _attack_plan(config, plan(stages, config)) == expected


def test_the_card_renders_a_search_and_a_larger_run_total(dp_run: Path) -> None:
    facts = read_card_facts(dp_run / "03-quantize")
    assert facts.epsilon is not None
    more = replace(facts, searched=["train-ladp"], total_epsilon=facts.epsilon + 2.5)
    text = privacy_card_markdown(more)
    assert "the private search of train-ladp is inside it" in text
    assert f"the members' total so far is ε = {format_epsilon(facts.epsilon + 2.5)}" in text
    assert "members' total" not in privacy_card_markdown(facts)


def test_a_sweep_point_card_says_it_was_one_of_several_and_the_composed_epsilon(
    dp_run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "03-quantize"
    folder.mkdir()
    for name in (CARD_FILE, FACTS_FILE):
        (folder / name).write_bytes((dp_run / "03-quantize" / name).read_bytes())
    selection = {"sweep": "s", "points": 4, "composed_epsilon": 11.2, "composed_delta": 1e-4}
    for _ in range(2):  # a resumed sweep notes it again: once
        note_selection(folder, selection)
    text = card(folder)
    assert text.count("One of 4 sweep points on the same members") == 1
    assert "composed ε = 11.2, δ = 0.0001" in text
    assert text.index("One of 4 sweep points") < text.index("## The model")
    assert read_card_facts(folder).selection == selection
    no_dp = {**selection, "composed_epsilon": None}
    note_selection(folder, no_dp)
    assert "composed ε = ∞ (a point read the members without DP)" in card(folder)
