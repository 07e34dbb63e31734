"""The end-of-run table: one row per stage, the numbers a user compares.

No number is ever cut: sizes are written compactly (22.7k params, 44.7 MB), and on a terminal
too narrow for the row a cell folds onto a second line instead of ending in an ellipsis.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from privacy.accounting import format_epsilon
from privacy.randomness import REPRODUCIBLE

PREFIXES = ("", "k", "M", "G", "T", "P")
COLUMNS = ("stage", "ε", "test acc", "params", "MACs", "bytes", "attack TPR@1% [95%]")


def compact(value: float, *, unit: str = "") -> str:
    """Three significant digits and an SI prefix: 22698 -> "22.7k", 11172810 -> "11.2M";
    with unit "B": 44700000 -> "44.7 MB", 912 -> "912 B"."""
    text, prefix = "", PREFIXES[0]
    for prefix in PREFIXES:
        text = f"{value:.3g}"
        if abs(float(text)) < 1000 or prefix == PREFIXES[-1]:
            break
        value /= 1000
    return f"{text} {prefix}{unit}" if unit else f"{text}{prefix}"


def _strongest(found: dict[str, Any] | None) -> str:
    """The strongest attack's TPR at 1% FPR and its interval, corrected for picking it out of
    the attacks run (pipelines.findings); '-' where no attack ran."""
    if not found:
        return "-"
    return f"{found['tpr']:.3f} [{found['tpr_lower']:.3f}, {found['tpr_upper']:.3f}]"


def summary_row(entry: dict[str, Any]) -> tuple[str, ...]:
    """The cells of one stage's row, as printed."""
    size = entry["size"]
    return (
        entry["name"],
        format_epsilon(entry["privacy"]["epsilon"]),
        f"{entry['utility']['test_accuracy']:.3f}",
        compact(size["params"]),
        compact(size.get("macs", 0)),
        compact(size["bytes"], unit="B"),
        _strongest(entry.get("strongest")),
    )


def summary_table(summary: dict[str, Any]) -> Table:
    run = summary["run"]
    title = f"privcomp · {run['dataset']} · {run['model']} · seed {run['seed']}"
    table = Table(title=escape(title))
    table.box = box.SIMPLE_HEAD  # fits 80 columns: rows are read, not framed
    table.padding = (0, 1)
    table.pad_edge = False
    for column in COLUMNS:
        justify: JustifyMethod = "left" if column == "stage" else "right"
        table.add_column(column, justify=justify, overflow="fold", no_wrap=False)
    table.caption = (
        "ε rounded up; sizes to 3 digits; attack: the strongest one's TPR at 1% FPR, its 95% "
        "interval corrected for picking it out of the attacks run (guessing gets 0.010); "
        "every attack in the report"
    )
    if run.get("noise") == REPRODUCIBLE:
        table.caption += f"\n[bold red]warning: {escape(run['noise_note'])}[/bold red]"
    defenses = sorted({d for e in summary["stages"] if (d := e["privacy"].get("defense"))})
    if defenses:
        named = ", ".join(defenses)
        table.caption += f"\ndefense {escape(named)}: not differential privacy (ε = inf)"
    for entry in summary["stages"]:
        table.add_row(*(escape(cell) for cell in summary_row(entry)))
    return table
