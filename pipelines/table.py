"""The end-of-run table: one row per stage, the numbers a user compares."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from privacy.accounting import format_epsilon
from privacy.randomness import REPRODUCIBLE


def _strongest(attacks: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Highest AUC and highest TPR at 0.1% FPR across the attacks that ran."""
    if not attacks:
        return "-", "-"
    auc = max(attacks.items(), key=lambda kv: kv[1]["auc"])
    tpr = max(attacks.items(), key=lambda kv: kv[1]["tpr_at_0_1pct_fpr"])
    return f"{auc[1]['auc']:.3f}", f"{tpr[1]['tpr_at_0_1pct_fpr']:.4f}"


def summary_table(summary: dict[str, Any]) -> Table:
    run = summary["run"]
    table = Table(title=f"privcomp · {run['dataset']} · {run['model']} · seed {run['seed']}")
    table.box = box.SIMPLE_HEAD  # fits 80 columns: rows are read, not framed
    table.padding = (0, 1)
    table.pad_edge = False
    columns = ("stage", "ε", "test acc", "params", "MACs", "bytes", "AUC", "TPR@.1%")
    for column in columns:
        left = column == "stage"
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    table.caption = (
        "ε rounded up; AUC, TPR@.1% (FPR): the strongest attack per stage; all in summary.json"
    )
    if run.get("noise") == REPRODUCIBLE:
        table.caption += f"\n[bold red]warning: {run['noise_note']}[/bold red]"
    for entry in summary["stages"]:
        auc, tpr = _strongest(entry["attacks"])
        table.add_row(
            entry["name"],
            format_epsilon(entry["privacy"]["epsilon"]),
            f"{entry['utility']['test_accuracy']:.3f}",
            f"{entry['size']['params']:,}",
            f"{entry['size'].get('macs', 0) / 1e6:.2f}M",
            f"{entry['size']['bytes']:,}",
            auc,
            tpr,
        )
    return table
