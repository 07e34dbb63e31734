"""`pipeline report`: the tradeoff report of one run dir, or of several side by side.

It writes report.html (one self-contained file: figures embedded, opens offline), report.md
(figures beside it under report-figures/) and report.json (the data both render, schema-
versioned). The report is the data owner's: it holds attack results on the members.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError
from pipelines.report.collect import (
    FIGURE_DIR,
    SCHEMA_VERSION,
    cross_run_points,
    run_report,
)
from pipelines.report.document import images, to_html, to_markdown
from pipelines.report.sections import cross_run_blocks, relative_link, run_blocks
from pipelines.rundir import write_atomic, write_json
from pipelines.selection import composed_privacy

__all__ = ["SWEEP_FILE", "default_out", "write_report", "write_sweep_report"]

SWEEP_FILE = "sweep.json"  # pipelines.sweep writes it


def default_out(run_dirs: list[Path]) -> Path:
    """One run: its own folder; several: runs/report-<digest of their paths>."""
    if len(run_dirs) == 1:
        return run_dirs[0]
    digest = hashlib.sha256("\n".join(str(p.resolve()) for p in run_dirs).encode()).hexdigest()
    return Path("runs") / f"report-{digest[:8]}"


def _link(run_dir: Path, out: Path) -> str:
    own = run_dir / "report.html"
    return relative_link(own if own.is_file() else run_dir / "summary.json", out)


def write_report(
    run_dirs: list[Path],
    out: Path | None = None,
    *,
    composed: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the report of the run dirs into out (see default_out); return report.html's path.

    composed: run dir (as given) -> the composed ε/δ of the runs on the same members."""
    if not run_dirs:
        raise PrivcompError("report: name at least one run dir")
    if len({p.resolve() for p in run_dirs}) != len(run_dirs):
        raise PrivcompError("report: a run dir is named twice")
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise PrivcompError(f"report: no such run dir: {run_dir}")
    out = out or default_out(run_dirs)
    reports = [run_report(d) for d in run_dirs]
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "runs": reports}
    if len(reports) == 1:
        report = reports[0]
        run = report["run"]
        title = f"privcomp · {run['dataset']} · {run['model']} · {run_dirs[0].name}"
        blocks = run_blocks(report)
    else:
        tradeoff = cross_run_points(reports, composed or _composed(run_dirs))
        data["tradeoff"] = tradeoff
        title = f"privcomp · {len(reports)} runs"
        blocks = cross_run_blocks(reports, tradeoff, [_link(d, out) for d in run_dirs])
    out.mkdir(parents=True, exist_ok=True)
    figures = out / FIGURE_DIR
    figures.mkdir(exist_ok=True)
    for image in images(blocks):
        (figures / image.name).write_bytes(image.png)
    write_json(out / "report.json", data)
    write_atomic(out / "report.md", to_markdown(blocks, folder=FIGURE_DIR))
    html = out / "report.html"
    write_atomic(html, to_html(title, blocks))
    return html


def _composed(run_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Each run's composed ε with every other run of the report on overlapping members."""
    privacy = composed_privacy(run_dirs)
    sizes: dict[str | None, int] = {}
    for p in privacy:
        sizes[p.group] = sizes.get(p.group, 0) + 1
    return {
        str(p.run_dir): {
            "epsilon": p.composed_epsilon,
            "delta": p.composed_delta,
            "runs": sizes[p.group],
            "note": p.note,
        }
        for p in privacy
        if p.group is not None
    }


def write_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    """The cross-run report of a `pipeline sweep` folder: its finished points, each beside the
    composed ε of every point trained on the same members (sweep.json)."""
    from pipelines.rundir import read_json

    sweep = read_json(sweep_dir / SWEEP_FILE)
    done = [p for p in sweep["points"] if p.get("status") == "ok"]
    if not done:
        raise PrivcompError(f"{sweep_dir / SWEEP_FILE} lists no finished point to report on")
    sizes: dict[str, int] = {}
    for point in done:
        sizes[point.get("group") or ""] = sizes.get(point.get("group") or "", 0) + 1
    run_dirs = [sweep_dir / p["run_dir"] for p in done]
    notes = {g["group"]: g.get("note", "") for g in sweep.get("groups", [])}
    composed = {
        str(run_dir): {
            "epsilon": p.get("composed_epsilon"),
            "delta": p.get("composed_delta"),
            "runs": sizes[p.get("group") or ""],
            "note": notes.get(p.get("group"), ""),
        }
        for run_dir, p in zip(run_dirs, done, strict=True)
    }
    return write_report(run_dirs, out or sweep_dir, composed=composed)
