"""What a report says, read from run dirs (DESIGN §7) into plain JSON-ready dicts: report.json
is exactly this, and the HTML and Markdown pages render it.

One run: a row per artifact (a stage that made none, e.g. `evaluate`, adds its attacks to the
row of the artifact it audited), each with its guarantee, utility, size, latency, every attack's
metrics and ROC curve, the strongest attack at each FPR of the fixed family with intervals
corrected for the selection, and the DP-bound consistency check; the ledger; the files with
their sha256; the privacy cards; the audit. Several runs: one point per run (its last artifact)
with the settings that tell the runs apart, the Pareto front, and the composed ε of the runs
trained on the same members.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError
from pipelines.findings import findings, headline
from pipelines.pareto import pareto_front
from pipelines.privacy_card import CARD_FILE
from pipelines.rundir import read_json, sha256_of, stage_dir_name

SCHEMA_VERSION = 1
# The Pareto front's objectives: what a choice covered by the composed ε may look at.
MAXIMIZE, MINIMIZE = ("accuracy",), ("bytes", "epsilon")
REPORT_FILES = ("report.html", "report.md", "report.json")
FIGURE_DIR = "report-figures"
SKIPPED = {".lock", *REPORT_FILES}


def _read(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    if not path.is_file():
        raise PrivcompError(f"{run_dir} has no {name}: not a finished privcomp run dir")
    return read_json(path)


def _stage_folders(run_dir: Path, manifest: dict[str, Any]) -> list[tuple[str, Path]]:
    return [
        (r["name"], run_dir / stage_dir_name(r["position"], r["name"])) for r in manifest["stages"]
    ]


def _measurements(folders: list[tuple[str, Path]]) -> dict[str, dict[str, Any]]:
    """Each artifact hash's attacks and ROC curves, merged over every stage that measured it."""
    found: dict[str, dict[str, Any]] = {}
    for _, folder in folders:
        path = folder / "metrics.json"
        if not path.is_file():
            continue
        data = read_json(path)
        known = found.setdefault(data.get("artifact", ""), {"attacks": {}, "roc": {}, "stage": {}})
        known["attacks"].update(data.get("attacks", {}))
        known["roc"].update(data.get("roc", {}))
        known["stage"].setdefault(folder.name, data.get("stage", {}))
    return found


def _latency(stage_metrics: dict[str, Any]) -> dict[str, float] | None:
    """onnxruntime latency (ms per call, by batch size) of the mode the quantize stage kept."""
    timings = stage_metrics.get("timings_ms") or {}
    mode = stage_metrics.get("mode")
    chosen = timings.get(mode) if mode else None
    return {str(b): float(ms) for b, ms in chosen.items()} if chosen else None


def _rows(
    summary: dict[str, Any], measured: dict[str, dict[str, Any]], noise: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_hash: dict[str, dict[str, Any]] = {}
    for entry in summary["stages"]:
        digest = entry["artifact_hash"]
        if digest in by_hash:  # the same file audited again (evaluate): one row
            by_hash[digest]["stages"].append(entry["name"])
            continue
        data = measured.get(digest, {})
        privacy = entry["privacy"]
        stage_metrics: dict[str, Any] = next(iter(data.get("stage", {}).values()), {})
        attacks = entry.get("attacks", {})
        roc = {k: v for k, v in data.get("roc", {}).items() if k in attacks}
        row = {
            "stage": entry["name"],
            "stages": [entry["name"]],
            "artifact": entry["artifact"],
            "artifact_hash": digest,
            "epsilon": privacy.get("epsilon"),
            "delta": privacy.get("delta"),
            "noise": noise,
            "defense": privacy.get("defense"),
            "release": privacy.get("release", "scores"),
            "test_accuracy": entry["utility"]["test_accuracy"],
            "params": entry["size"].get("params"),
            "bytes": entry["size"].get("bytes"),
            "macs": entry["size"].get("macs"),
            "latency_ms": _latency(stage_metrics),
            "attacks": attacks,
            "roc": roc,
            "findings": findings(attacks, roc, privacy.get("epsilon"), privacy.get("delta")),
        }
        by_hash[digest] = row
        rows.append(row)
    return rows


def _files(run_dir: Path) -> list[dict[str, Any]]:
    """Every file of the run dir but the reference models' (listed as one line) and the report."""
    files = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(run_dir)
        if relative.parts[0] in ("references", FIGURE_DIR) or relative.name in SKIPPED:
            continue
        if relative.name.startswith("."):
            continue  # a temp file of an atomic write in progress
        files.append(
            {"path": str(relative), "bytes": path.stat().st_size, "sha256": sha256_of(path)}
        )
    return files


def _references(run_dir: Path) -> dict[str, Any] | None:
    folder = run_dir / "references"
    if not folder.is_dir():
        return None
    files = [p for p in folder.rglob("*") if p.is_file()]
    models = sum(1 for p in folder.iterdir() if p.is_dir() and p.name.startswith("ref-"))
    return {
        "path": "references/",
        "models": models,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }


def _onnx_input(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") else 1 for d in tensor.type.tensor_type.shape.dim
    ]
    return {"name": tensor.name, "shape": dims}


def _shipped(run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The model a user ships: the last ONNX file of the run, with what loads it."""
    onnx_rows = [r for r in rows if r["artifact"].endswith(".onnx")]
    if not onnx_rows:
        return None
    relative = onnx_rows[-1]["artifact"]
    return {"path": relative, "input": _onnx_input(run_dir / relative)}


def _cards(run_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The privacy card beside each ONNX file of the run, as shipped."""
    cards: list[dict[str, Any]] = []
    for row in rows:
        card = (run_dir / row["artifact"]).parent / CARD_FILE
        if row["artifact"].endswith(".onnx") and card.is_file():
            path = str(card.relative_to(run_dir))
            if all(c["path"] != path for c in cards):
                cards.append({"path": path, "model": row["artifact"], "text": card.read_text()})
    return cards


def run_report(run_dir: Path) -> dict[str, Any]:
    """report.json's content for one run dir."""
    summary = _read(run_dir, "summary.json")
    manifest = _read(run_dir, "manifest.json")
    folders = _stage_folders(run_dir, manifest)
    run = summary["run"]
    rows = _rows(summary, _measurements(folders), run.get("noise", "secure"))
    audit = run_dir / "audit.json"
    return {
        "run_dir": str(run_dir),
        "run": run,
        "stages": [name for name, _ in folders],
        "rows": rows,
        "ledger": summary["ledger"],
        "files": _files(run_dir),
        "references": _references(run_dir),
        "shipped": _shipped(run_dir, rows),
        "cards": _cards(run_dir, rows),
        "audit": read_json(audit) if audit.is_file() else None,
        "config": tomllib.loads((run_dir / "config.toml").read_text()),
    }


def violations(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every DP-bound violation of a run, with the artifact and population it was found on."""
    found = []
    for row in report["rows"]:
        for population, found_on in row["findings"].items():
            for v in found_on["violations"]:
                found.append({"artifact": row["artifact"], "population": population, **v})
    return found


# ---- several runs ----------------------------------------------------------------------------


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def distinguishing_settings(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run, the settings whose values differ between the runs (what a sweep varied)."""
    flat = [_flat(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    varied = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    return [{k: f.get(k) for k in varied} for f in flat]


def attack_power(row: dict[str, Any]) -> dict[str, Any] | None:
    """The strongest attack at the headline FPR and its corrected interval (None: no attack)."""
    return headline(row["findings"])


def cross_run_points(
    reports: list[dict[str, Any]], composed: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One point per run (its last artifact), the settings that tell them apart, and the Pareto
    front on accuracy (up), bytes and ε (down; a run that is not private has ε = ∞): what the
    composed ε covers a choice by. Attack power (the upper end of the strongest attack's
    corrected interval at 1% FPR) is shown but is no criterion: it is computed on the members,
    so a choice by it reads them again, outside every ε printed.

    composed: run dir -> the composed ε/δ of every run on the same members (pipeline sweep)."""
    settings = distinguishing_settings([r["config"] for r in reports])
    points = []
    for report, varied in zip(reports, settings, strict=True):
        last = report["rows"][-1]
        power = attack_power(last)
        eps = last["epsilon"]
        points.append(
            {
                "run_dir": report["run_dir"],
                "settings": varied,
                "artifact": last["artifact"],
                "epsilon": eps,
                "delta": last["delta"],
                "composed": (composed or {}).get(report["run_dir"]),
                "noise": last["noise"],
                "test_accuracy": last["test_accuracy"],
                "bytes": last["bytes"],
                "attack": power,
            }
        )
    ranked = [
        {
            "accuracy": p["test_accuracy"],
            "bytes": p["bytes"],
            "epsilon": p["epsilon"] if p["epsilon"] is not None else math.inf,
        }
        for p in points
    ]
    front = pareto_front(ranked, maximize=list(MAXIMIZE), minimize=list(MINIMIZE))
    for i, point in enumerate(points):
        point["pareto"] = i in front
    objectives = {"maximize": list(MAXIMIZE), "minimize": list(MINIMIZE)}
    return {"points": points, "pareto": front, "objectives": objectives}
