"""The report's figures as PNG bytes (matplotlib's object API on the Agg canvas: no global
pyplot state, no display). Readable in black and white: every series has its own line style and
marker besides its colour; axes say what they show and in which unit; layouts are constrained so
that no label is clipped."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from attacks.consistency import dp_tpr_bound

# Colour-blind-safe colours (Okabe–Ito), each with a dash and a marker so that grey prints work.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DASHES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DPI = 110
FLOOR = 1e-4  # log axes cannot show 0: rates below this are drawn at it


def _style(i: int) -> dict[str, Any]:
    return {
        "color": COLOURS[i % len(COLOURS)],
        "linestyle": DASHES[i % len(DASHES)],
        "marker": MARKERS[i % len(MARKERS)],
    }


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def roc_figure(
    curves: dict[str, dict[str, Sequence[float]]],
    *,
    title: str,
    epsilon: float | None,
    delta: float | None,
    n_nonmembers: int,
) -> bytes:
    """Every attack's ROC on log-log axes (how LiRA and RMIA are read: the low-FPR corner is
    what matters), the chance line, and the DP bound where the artifact has a finite ε: the
    smaller of TPR = e^ε·FPR + δ and 1 - e^-ε·(1 - FPR - δ) (TNR = e^ε·FNR + δ, the bound near
    TPR 1)."""
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.add_subplot()
    low = 1.0 / max(n_nonmembers, 1)
    grid = [10 ** (math.log10(low / 2) + i * (0 - math.log10(low / 2)) / 200) for i in range(201)]
    for i, (attack, curve) in enumerate(sorted(curves.items())):
        points = [
            (f, max(t, FLOOR)) for f, t in zip(curve["fpr"], curve["tpr"], strict=True) if f > 0
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, label=attack, linewidth=1.3, markersize=4, markevery=0.12, **_style(i))
    ax.plot(grid, grid, color="0.4", linewidth=1, linestyle=(0, (1, 1)), label="chance (TPR = FPR)")
    if epsilon is not None and math.isfinite(epsilon):
        d = delta or 0.0
        bound = [dp_tpr_bound(f, epsilon=epsilon, delta=d) for f in grid]
        label = f"DP bound (ε = {epsilon:.3g}, δ = {d:.2g})"
        ax.plot(grid, bound, color="black", linewidth=2.2, linestyle="-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low / 2, 1.0)
    ax.set_ylim(low / 2, 1.05)
    ax.set_xlabel("false-positive rate (non-members flagged, log scale)")
    ax.set_ylabel("true-positive rate (members found, log scale)")
    ax.set_title(title)
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    ax.legend(fontsize=7, loc="lower right", ncols=2)
    return _png(fig)


def stage_figure(rows: list[dict[str, Any]], power: list[dict[str, Any] | None]) -> bytes:
    """Stage by stage: test accuracy (with each artifact's ε), size, and attack power (TPR at 1%
    FPR of the strongest attack with its corrected interval; guessing gets 1%)."""
    labels = [" + ".join(r["stages"]) for r in rows]
    xs = list(range(len(rows)))
    fig = Figure(figsize=(6.4, 6.6), layout="constrained")
    acc, size, attacked = fig.subplots(3, 1, sharex=True)
    acc.plot(xs, [100 * r["test_accuracy"] for r in rows], color="black", marker="o")
    acc.set_ylabel("test accuracy (%)")
    size.plot(xs, [r["bytes"] / 1e3 for r in rows], color="black", marker="D", linestyle="--")
    size.set_yscale("log")
    size.margins(y=0.3)
    size.set_ylabel("size (kB, log scale)")
    _attack_power(attacked, xs, power)
    attacked.set_xticks(xs, labels, rotation=20, ha="right")
    attacked.set_xlabel("stage (artifact)")
    for x, row in zip(xs, rows, strict=True):
        where = (x, 100 * row["test_accuracy"])
        label = _eps_label(row["epsilon"])
        acc.annotate(
            label, where, textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
        )
    acc.margins(y=0.3)
    for ax in (acc, size, attacked):
        ax.grid(True, axis="y", color="0.85", linewidth=0.6)
    return _png(fig)


def _eps_label(epsilon: float | None) -> str:
    return "ε = ∞" if epsilon is None or not math.isfinite(epsilon) else f"ε = {epsilon:.3g}"


def _attack_power(ax: Axes, xs: list[int], power: list[dict[str, Any] | None]) -> None:
    shown = [(x, p) for x, p in zip(xs, power, strict=True) if p]
    if shown:
        px = [x for x, _ in shown]
        tpr = [100 * p["tpr"] for _, p in shown]
        below = [100 * (p["tpr"] - p["tpr_lower"]) for _, p in shown]
        above = [100 * (p["tpr_upper"] - p["tpr"]) for _, p in shown]
        ax.errorbar(
            px,
            tpr,
            yerr=[below, above],
            color="black",
            marker="s",
            capsize=4,
            linestyle="none",
            label="strongest attack (corrected 95% interval)",
        )
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, label="chance (1%)")
    ax.set_ylabel("TPR at 1% FPR (%)")
    ax.margins(y=0.25)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)


def tradeoff_figure(points: list[dict[str, Any]]) -> bytes:
    """A sweep: accuracy against bytes and against attack power, attack power against ε; the
    Pareto-optimal runs filled black, the others hollow, each numbered as in the table."""
    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    by_size, by_power, by_eps = fig.subplots(1, 3)
    power = [100 * p["attack"]["tpr_upper"] if p["attack"] else math.nan for p in points]
    accuracy = [100 * p["test_accuracy"] for p in points]
    kb = [p["bytes"] / 1e3 for p in points]
    eps = [p["epsilon"] if p["epsilon"] is not None else math.nan for p in points]
    panels = (
        (by_size, kb, accuracy, "size (kB, log scale)", "test accuracy (%)", True),
        (
            by_power,
            power,
            accuracy,
            "attack power: TPR at 1% FPR, upper end (%)",
            "test accuracy (%)",
            False,
        ),
        (by_eps, eps, power, "ε (log scale; ∞ not drawn)", "attack power (%)", True),
    )
    for ax, x, y, xlabel, ylabel, log in panels:
        for i, point in enumerate(points):
            if math.isnan(x[i]) or math.isnan(y[i]):
                continue
            filled = point["pareto"]
            ax.scatter(
                [x[i]],
                [y[i]],
                marker="o",
                s=46,
                edgecolors="black",
                facecolors="black" if filled else "white",
                zorder=3,
            )
            ax.annotate(
                str(i + 1), (x[i], y[i]), textcoords="offset points", xytext=(5, 4), fontsize=8
            )
        if log:
            ax.set_xscale("log")
            # Ticks at the points' own values, in plain numbers (log minor labels collide).
            shown = sorted({v for v in x if not math.isnan(v)})
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(shown, [f"{v:.3g}" for v in shown])
        ax.margins(0.15)  # room for the numbers beside the points at the edges
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, color="0.85", linewidth=0.6)
    by_size.scatter(
        [], [], marker="o", facecolors="black", edgecolors="black", label="Pareto-optimal"
    )
    by_size.scatter([], [], marker="o", facecolors="white", edgecolors="black", label="dominated")
    by_size.legend(fontsize=7, loc="lower right")
    return _png(fig)
