"""The report's content: blocks built from report.json's data (pipelines.report.collect), the
same for the HTML page and the Markdown file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from attacks.consistency import ALPHA, FPR_GRID
from pipelines.findings import HEADLINE_FPR
from pipelines.report.collect import attack_power, violations
from pipelines.report.document import (
    Block,
    Code,
    Figures,
    Heading,
    Image,
    Items,
    Paragraph,
    Table,
)
from pipelines.report.figures import roc_figure, stage_figure, tradeoff_figure
from pipelines.table import compact
from privacy.accounting import format_epsilon
from privacy.randomness import REPRODUCIBLE

OWNER_ONLY = (
    "This report is the data owner's audit: its attack results are statistics of the members "
    "that ε does not cover. Keep it with the run dir; ship the ONNX file and its PRIVACY.md."
)


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _interval(value: Any, ci: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not ci or ci[0] is None:
        return _num(value, digits)
    return f"{float(value):.{digits}f} [{float(ci[0]):.{digits}f}, {float(ci[1]):.{digits}f}]"


def _eps(value: float | None) -> str:
    return format_epsilon(value)


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:.0e}"


def _percent(rate: float) -> str:
    return f"{100 * rate:g}%"


def _power_cell(power: dict[str, Any] | None) -> str:
    if not power:
        return "-"
    verdict = "beats chance" if power["beats_chance"] else "not distinguishable from chance"
    interval = _interval(power["tpr"], [power["tpr_lower"], power["tpr_upper"]])
    return f"{power['attack']}: {interval}, {verdict}"


def _latency(row: dict[str, Any]) -> str:
    latency = row["latency_ms"]
    return _num(latency.get("1"), 3) if latency and "1" in latency else "-"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


# ---- one run ---------------------------------------------------------------------------------


def _top(report: dict[str, Any]) -> list[Block]:
    """What must be read first: a broken bound in red, reproducible noise, what the page is."""
    run = report["run"]
    title = f"privcomp report · {run['dataset']} · {run['model']} · seed {run['seed']}"
    blocks: list[Block] = [Heading(1, title)]
    found = violations(report)
    grid = ", ".join(_percent(p) for p in FPR_GRID)
    tests = f"the points of largest TPR at FPR ≤ and of smallest FPR at FNR ≤ each of {grid}"
    if found:
        blocks.append(
            Paragraph(
                f"Consistency check failed: {len(found)} DP-bound violation(s) (an attack's "
                "operating point outside TPR ≤ e^ε·FPR + δ or TNR ≤ e^ε·FNR + δ beyond its "
                "corrected confidence intervals; one point may break both). Either "
                "the privacy claim or the attack (its evaluation) is broken; do not ship until "
                "it is explained.",
                "alert",
            )
        )
        blocks.append(
            Items(tuple(f"{v['artifact']} ({v['population']}): {v['line']}" for v in found))
        )
    elif not any(r["findings"] for r in report["rows"]):
        blocks.append(Paragraph("Consistency check: not made, no attack ran on this run.", "note"))
    elif any(r["epsilon"] is not None for r in report["rows"]):
        blocks.append(
            Paragraph(
                "Consistency check passed: no attack breaks TPR ≤ e^ε·FPR + δ or TNR ≤ "
                f"e^ε·FNR + δ beyond its confidence intervals at {tests}, Bonferroni-corrected "
                f"over the attacks × points (family-wise α = {ALPHA} per artifact, on the pair "
                "and on the canaries apart).",
                "ok",
            )
        )
    if run.get("noise") == REPRODUCIBLE:
        blocks.append(Paragraph(f"Reproducible noise: {run.get('noise_note', '')}", "alert"))
    blocks.append(
        Paragraph(
            f"Run dir {report['run_dir']} · stages {' → '.join(report['stages'])} · privcomp "
            f"{run.get('version', '?')} · noise: {run.get('noise_note', run.get('noise', '?'))}"
        )
    )
    blocks.append(Paragraph(OWNER_ONLY, "note"))
    return blocks


def _artifact_table(report: dict[str, Any]) -> list[Block]:
    rows = []
    for row in report["rows"]:
        defense = f" (defense {row['defense']})" if row["defense"] else ""
        rows.append(
            (
                " + ".join(row["stages"]),
                row["artifact"],
                _eps(row["epsilon"]) + defense,
                _delta(row["delta"]),
                row["noise"] if row["epsilon"] is not None else "-",  # no DP noise to speak of
                _num(row["test_accuracy"]),
                compact(row["params"]),
                compact(row["bytes"], unit="B"),
                compact(row["macs"]) if row["macs"] is not None else "-",
                _latency(row),
                _power_cell(attack_power(row)),
            )
        )
    columns = (
        "stage",
        "artifact",
        "ε",
        "δ",
        "noise",
        "test acc",
        "params",
        "bytes",
        "MACs",
        "latency (ms, batch 1)",
        f"strongest attack: TPR at {_percent(HEADLINE_FPR)} FPR [corrected 95% interval]",
    )
    caption = (
        "One row per artifact. ε rounded up (∞: not private; a defense is not DP). Noise: how "
        "the DP noise was drawn (secure; reproducible: from the seed), - where not private. "
        "Latency: onnxruntime on this machine, where the stage measured it. Strongest attack: "
        "the largest TPR among the attacks run, its interval Bonferroni-corrected for that "
        "choice over the attacks × FPRs; 'beats chance' when its lower end exceeds the "
        "corrected upper bound of the FPR (guessing has TPR = FPR)."
    )
    return [
        Heading(2, "Artifacts"),
        Table(columns, tuple(rows), id="artifacts", caption=caption),
        Image(
            "stages.png",
            stage_figure(report["rows"], [attack_power(r) for r in report["rows"]]),
            "Stage by stage: test accuracy (with ε), size, and the strongest attack's TPR at "
            "1% FPR with its corrected interval",
        ),
    ]


def _attack_rows(attacks: dict[str, Any], canaries: bool) -> tuple[tuple[str, ...], ...]:
    rows = []
    for name, metrics in sorted(attacks.items()):
        m = metrics.get("canaries") if canaries else metrics
        if not m:
            continue
        rows.append(
            (
                name,
                _interval(m["auc"], m.get("auc_ci")),
                _interval(m["tpr_at_1pct_fpr"], m.get("tpr_at_1pct_fpr_ci")),
                _interval(m["tpr_at_0_1pct_fpr"], m.get("tpr_at_0_1pct_fpr_ci")),
                _num(m.get("epsilon_lower_bound"), 2),
            )
        )
    return tuple(rows)


ATTACK_COLUMNS = ("attack", "AUC [95%]", "TPR at 1% FPR [95%]", "TPR at 0.1% FPR [95%]", "ε lower")


def _attacks(report: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Attacks per artifact"),
        Paragraph(
            "Bootstrap 95% intervals per attack (not corrected: read one attack at a time; the "
            "artifact table's strongest attack is corrected). ε lower: the Clopper–Pearson "
            "lower bound on ε from the attack's errors at its threshold. At 0.1% FPR with a few "
            "hundred non-members a TPR is a handful of records: read it with its interval.",
            "note",
        ),
    ]
    images = []
    for row in report["rows"]:
        if not row["attacks"]:
            continue
        name = " + ".join(row["stages"])
        findings = row["findings"].get("population", {})
        blocks += [
            Heading(3, f"{name}: {row['artifact']}"),
            Table(ATTACK_COLUMNS, _attack_rows(row["attacks"], canaries=False)),
        ]
        canary_rows = _attack_rows(row["attacks"], canaries=True)
        if canary_rows:
            blocks += [Paragraph("On the canaries alone (mislabelled records among the pair):")]
            blocks.append(Table(ATTACK_COLUMNS, canary_rows))
        if row["roc"]:
            images.append(
                Image(
                    f"roc-{_slug(name)}.png",
                    roc_figure(
                        row["roc"],
                        title=f"{name} (ε = {_eps(row['epsilon'])})",
                        epsilon=row["epsilon"],
                        delta=row["delta"],
                        n_nonmembers=findings.get("n_nonmembers", 1),
                    ),
                    f"ROC of every attack on {name}, log-log, with chance and the DP bound",
                )
            )
    if images:
        blocks += [Heading(2, "ROC curves"), Figures(tuple(images))]
    return blocks


def _shadow(report: dict[str, Any]) -> list[Block]:
    rows = []
    for row in report["rows"]:
        shadow = row["attacks"].get("shadow")
        r = shadow.get("report") if shadow else None
        if not r:
            continue
        rows.append(
            (
                " + ".join(row["stages"]),
                _num(r["accuracy"]),
                _num(r["macro_precision"]),
                _num(r["macro_recall"]),
                _num(r["macro_f1"]),
                _num(r["weighted_precision"]),
                _num(r["weighted_recall"]),
                _num(r["weighted_f1"]),
            )
        )
    if not rows:
        return []
    columns = (
        "artifact",
        "accuracy",
        "macro precision",
        "macro recall",
        "macro F1",
        "weighted precision",
        "weighted recall",
        "weighted F1",
    )
    caption = "Member vs non-member classification at the attack's threshold (0.5 = chance)."
    return [
        Heading(2, "Shadow-model attack (Shokri et al.): precision, recall, F1"),
        Table(columns, tuple(rows), caption=caption),
    ]


def _no_dp(entry: dict[str, Any]) -> str:
    if entry.get("kind") == "post-processing":
        return "no private data read"
    if entry.get("kind") == "none":
        return "read the members without DP (ε = ∞)"
    return str(entry.get("kind"))


def _ledger(report: dict[str, Any]) -> list[Block]:
    ledger = report["ledger"]
    rows = []
    for i, entry in enumerate(ledger["stages"], start=1):
        dp = entry.get("kind") == "dp"
        details = (
            f"{entry.get('mechanism', '?')}: σ = {entry['noise_multiplier']:.4g}, q = "
            f"{entry['sample_rate']:.4g}, {entry['steps']} steps"
            if dp and "noise_multiplier" in entry
            else ("spends on " + str(entry.get("dataset", "?")) if dp else _no_dp(entry))
        )
        rows.append(
            (
                str(i),
                entry["stage"],
                entry.get("kind", "?"),
                details,
                _eps(entry.get("epsilon")),
                _delta(entry.get("delta")),
                str(entry.get("accountant") or "-"),
            )
        )
    total = ledger["total"]
    budget = ledger.get("budget") or {}
    lines = [
        f"Total: ε = {_eps(total.get('epsilon'))}, δ = {_delta(total.get('delta'))} "
        f"({total.get('accountant') or 'no accountant'})",
        "Budget: "
        + (
            f"ε ≤ {budget['epsilon']}, δ ≤ {budget.get('delta')}"
            if budget.get("epsilon") is not None
            else "none set"
        ),
    ]
    for name, data in ledger.get("datasets", {}).items():
        lines.append(
            f"Data set '{name}': ε = {_eps(data.get('epsilon'))} over "
            f"{len(data.get('history', []))} DP release(s)"
        )
    lines += [f"Warning: {w}" for w in ledger.get("warnings", [])]
    columns = ("#", "stage", "kind", "what it did", "ε so far", "δ", "accountant")
    caption = "In order; post-processing spends nothing (ε carries over)."
    return [
        Heading(2, "Privacy ledger"),
        Table(columns, tuple(rows), caption=caption),
        Items(tuple(lines)),
    ]


def _audit(report: dict[str, Any]) -> list[Block]:
    audit = report["audit"]
    if audit is None:
        line = f"Not run. `pipeline audit {report['run_dir']}` tests the DP training mechanism."
        return [Heading(2, "Audit of the DP mechanism"), Paragraph(line)]
    passed = "passed" if audit.get("passed") else "FAILED: a lower bound exceeds the claim"
    lower = max(audit.get("cp_epsilon_lower_bound", 0.0), audit.get("gdp_epsilon_lower_bound", 0.0))
    items = (
        f"Stage audited: {audit.get('stage')} ({audit.get('engine')}), "
        f"σ = {audit.get('noise_multiplier', math.nan):.4g}, "
        f"q = {audit.get('sample_rate', math.nan):.4g}, "
        f"{audit.get('steps')} steps, {audit.get('trials')} trials per world",
        f"Claimed ε of the audited mechanism: {_eps(audit.get('claimed_epsilon'))} at δ = "
        f"{_delta(audit.get('delta'))}",
        f"Empirical lower bound at {audit.get('confidence', 0.95):g} confidence: "
        f"{format_epsilon(lower, lower_bound=True)} (Clopper–Pearson "
        f"{format_epsilon(audit.get('cp_epsilon_lower_bound'), lower_bound=True)}, GDP "
        f"{format_epsilon(audit.get('gdp_epsilon_lower_bound'), lower_bound=True)})",
        f"Result: {passed}",
    )
    kind = "ok" if audit.get("passed") else "alert"
    return [
        Heading(2, "Audit of the DP mechanism (pipeline audit)"),
        Items(items),
        Paragraph(f"audit.json: {passed}", kind),
    ]


def _cards(report: dict[str, Any]) -> list[Block]:
    rows_by_artifact = {r["artifact"]: r for r in report["rows"]}
    blocks: list[Block] = []
    for card in report["cards"]:
        row = rows_by_artifact.get(card["model"])
        blocks += [Heading(3, card["path"]), Code(card["text"], "markdown")]
        if row and row["attacks"]:
            blocks += [
                Paragraph(
                    f"Attack results on {card['model']} (the data owner's copy: statistics of "
                    "the members that ε does not cover, not in the card that ships):"
                ),
                Table(ATTACK_COLUMNS, _attack_rows(row["attacks"], canaries=False)),
            ]
    if not blocks:
        return []
    intro = Paragraph(
        "Each exported ONNX file ships with its privacy card (PRIVACY.md beside it). The card "
        "names the attacks run and points here for their results."
    )
    return [Heading(2, "Privacy cards"), intro, *blocks]


def _shipped(report: dict[str, Any]) -> list[Block]:
    shipped = report["shipped"]
    if shipped is None:
        return []
    shape = ", ".join(str(d) for d in shipped["input"]["shape"])
    snippet = (
        "import numpy as np, onnxruntime as ort\n"
        f'session = ort.InferenceSession("{shipped["path"]}")\n'
        f'logits = session.run(None, {{"{shipped["input"]["name"]}": '
        f"np.zeros(({shape}), np.float32)}})[0]\n"
    )
    return [
        Heading(2, "Load the shipped model"),
        Paragraph(f"{shipped['path']}, relative to the run dir; onnxruntime on any machine:"),
        Code(snippet, "python"),
    ]


def _files(report: dict[str, Any]) -> list[Block]:
    rows = tuple((f["path"], f"{f['bytes']:,}", f["sha256"]) for f in report["files"])
    blocks: list[Block] = [
        Heading(2, "Files"),
        Table(("file", "bytes", "sha256"), rows, id="files"),
    ]
    refs = report["references"]
    if refs:
        blocks.append(
            Paragraph(
                f"{refs['path']}: {refs['models']} reference models, {refs['files']} files, "
                f"{compact(refs['bytes'], unit='B')} (trained on the pool: the data owner's, "
                "never shipped)"
            )
        )
    return blocks


def run_blocks(report: dict[str, Any]) -> list[Block]:
    return [
        *_top(report),
        *_artifact_table(report),
        *_attacks(report),
        *_shadow(report),
        *_ledger(report),
        *_audit(report),
        *_cards(report),
        *_shipped(report),
        *_files(report),
    ]


# ---- several runs ----------------------------------------------------------------------------


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "(same settings)"


def _composed(point: dict[str, Any]) -> str:
    composed = point.get("composed")
    if not composed:
        return "-"
    runs = composed.get("runs")
    suffix = f" ({runs} runs)" if runs else ""
    return _eps(composed.get("epsilon")) + suffix


def cross_run_blocks(
    reports: list[dict[str, Any]], tradeoff: dict[str, Any], links: list[str]
) -> list[Block]:
    points = tradeoff["points"]
    blocks: list[Block] = [Heading(1, f"privcomp report · {len(points)} runs")]
    broken = [(r["run_dir"], v) for r in reports for v in violations(r)]
    if broken:
        blocks.append(
            Paragraph(
                f"Consistency check failed in {len({b[0] for b in broken})} run(s): an attack "
                "breaks TPR ≤ e^ε·FPR + δ or TNR ≤ e^ε·FNR + δ beyond its corrected intervals "
                "(a broken claim or a "
                "broken attack). Open the run's own report.",
                "alert",
            )
        )
        blocks.append(Items(tuple(f"{d}: {v['artifact']}: {v['line']}" for d, v in broken)))
    if any(p["noise"] == REPRODUCIBLE for p in points):
        blocks.append(
            Paragraph("Some runs used reproducible noise: their ε does not hold.", "alert")
        )
    if any(p.get("composed") for p in points):
        blocks.append(
            Paragraph(
                "Choosing one of several DP runs on the same members is itself a selection "
                "that looks at the members: the ε that holds for the run you pick is the "
                "composed ε of every run of this report trained on those members (column "
                "'composed ε'; run dirs not in this report are not counted), not the run's own. "
                "It covers a choice by accuracy, size and ε, as the Pareto front makes it; a "
                "choice by the attack power reads the members again and is covered by no ε.",
                "alert",
            )
        )
        notes = sorted({n for p in points if (n := (p.get("composed") or {}).get("note"))})
        if notes:
            blocks.append(Items(tuple(notes)))
    rows = []
    for i, (point, link) in enumerate(zip(points, links, strict=True), start=1):
        rows.append(
            (
                str(i),
                _settings(point["settings"]),
                _eps(point["epsilon"]),
                _composed(point),
                _num(point["test_accuracy"]),
                compact(point["bytes"], unit="B"),
                _power_cell(point["attack"]),
                "yes" if point["pareto"] else "",
                link,
            )
        )
    columns = (
        "#",
        "settings",
        "ε (own)",
        "composed ε",
        "test acc",
        "bytes",
        "attack power: TPR at 1% FPR [corrected 95%]",
        "Pareto",
        "report",
    )
    caption = (
        "Each run's last artifact. Pareto-optimal: no other run is at least as good on test "
        "accuracy, bytes and ε at once and better on one. Attack power (the data owner's check, "
        "no criterion of the front): the strongest attack's TPR at 1% FPR, its interval "
        "corrected for picking it."
    )
    front = [rows[i] for i in tradeoff["pareto"]]
    blocks += [
        Heading(2, "Runs"),
        Table(columns, tuple(rows), id="runs", caption=caption),
        Image(
            "tradeoff.png",
            tradeoff_figure(points),
            "Tradeoff: accuracy vs size, accuracy vs attack power, attack power vs ε; "
            "Pareto-optimal runs filled, numbered as in the table",
        ),
        Heading(2, "Pareto-optimal runs"),
        Table(columns, tuple(front), id="pareto"),
    ]
    return blocks


def relative_link(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)
