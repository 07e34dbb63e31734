"""The defense study's outputs: study.json, study.md and figures/*.png (matplotlib, Agg).

The figures are readable in black and white: bars in greys with hatches, DP curves as lines with
distinct markers and dashes, every axis labelled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIGURES = {
    "attack_accuracy": "Shadow-model attack accuracy per method (0.5 = chance)",
    "lira_rmia": "LiRA and RMIA: AUC and TPR at 0.1% FPR, population and canaries",
    "test_accuracy": "Test accuracy per method",
    "privacy_utility": "Privacy-utility: canary TPR at 1% FPR against test accuracy",
}
HATCHES = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metric(row: dict[str, Any], attack: str, key: str, canaries: bool = False) -> float | None:
    metrics = row["attacks"].get(attack)
    if metrics and canaries:
        metrics = metrics.get("canaries")
    if not metrics or metrics.get(key) is None:
        return None
    return float(metrics[key])


def _shadow_accuracy(row: dict[str, Any]) -> float | None:
    shadow = row["attacks"].get("shadow")
    return float(shadow["report"]["accuracy"]) if shadow and "report" in shadow else None


def _bars(ax: Any, labels: list[str], values: list[float | None], **kwargs: Any) -> None:
    shown = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(range(len(labels)), shown, color="0.6", edgecolor="black", **kwargs)
    for bar, value in zip(bars, values, strict=True):
        if value is None:
            bar.set_hatch("xx")  # not measured (e.g. a label-only release has no shadow attack)
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def figure_attack_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    _bars(ax, [r["name"] for r in rows], [_shadow_accuracy(r) for r in rows])
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("shadow attack accuracy (balanced pair)")
    ax.set_title(FIGURES["attack_accuracy"])
    ax.legend(loc="upper right")
    _save(fig, path)


def figure_lira_rmia(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    panels = [("auc", "AUC"), ("tpr_at_0_1pct_fpr", "TPR at 0.1% FPR")]
    series = [
        ("lira", False, "LiRA, population"),
        ("lira", True, "LiRA, canaries"),
        ("rmia", False, "RMIA, population"),
        ("rmia", True, "RMIA, canaries"),
    ]
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    labels = [r["name"] for r in rows]
    width = 0.2
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, (attack, canaries, label) in enumerate(series):
            if key == "tpr_at_0_1pct_fpr" and canaries and not _enough_for_0_1pct(rows, attack):
                continue  # TPR at 0.1% FPR on < 1,000 non-member canaries is TPR at zero FP
            values = [_metric(r, attack, key, canaries) or 0.0 for r in rows]
            xs = [j + (i - 1.5) * width for j in range(len(rows))]
            shade = "0.85" if canaries else "0.45"
            ax.bar(xs, values, width, color=shade, edgecolor="black", hatch=HATCHES[i], label=label)
        ax.set_ylabel(title)
        if key == "auc":
            ax.axhline(0.5, color="black", linestyle="--", linewidth=1)
            ax.set_ylim(0.4, 1.0)
    axes[0].legend(ncol=2, fontsize="small", loc="upper right")
    axes[0].set_title(FIGURES["lira_rmia"])
    axes[1].set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    _save(fig, path)


def _enough_for_0_1pct(rows: list[dict[str, Any]], attack: str) -> bool:
    counts = [
        (r["attacks"].get(attack) or {}).get("canaries", {}).get("n_nonmembers", 0) for r in rows
    ]
    return bool(counts) and min(counts) >= 1000


def figure_test_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    _bars(ax, [r["name"] for r in rows], [r["test_accuracy"] for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(FIGURES["test_accuracy"])
    _save(fig, path)


def figure_privacy_utility(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {"dp-sgd": ("s", "-"), "ladp": ("^", "--")}
    for engine, (marker, dash) in styles.items():
        curve = sorted(
            (r for r in rows if r["engine"] == engine and r["strongest"]),
            key=lambda r: r["epsilon"],
        )
        if not curve:
            continue
        xs = [r["test_accuracy"] for r in curve]
        ys = [r["strongest"]["value"] for r in curve]
        ax.plot(xs, ys, linestyle=dash, marker=marker, color="black", label=f"{engine} (ε grid)")
        for r, x, y in zip(curve, xs, ys, strict=True):
            ax.annotate(f"ε={r['epsilon']:g}", (x, y), textcoords="offset points", xytext=(4, -10))
    markers = ["o", "D", "v", "P", "X", "*", "h", "<", ">"]
    others = [r for r in rows if r["kind"] != "dp" and r["strongest"]]
    for i, r in enumerate(others):
        lo, hi = r["strongest"]["ci"]
        y = r["strongest"]["value"]
        err = None if lo is None else [[y - lo], [hi - y]]
        ax.errorbar(
            r["test_accuracy"],
            y,
            yerr=err,
            marker=markers[i % len(markers)],
            color="0.35",
            markerfacecolor="white",
            linestyle="none",
            capsize=3,
            label=r["name"],
        )
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("TPR at 1% FPR, canaries (strongest attack)")
    ax.set_title(FIGURES["privacy_utility"])
    ax.legend(fontsize="small", loc="upper left", ncol=2)
    _save(fig, path)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(numbers: dict[str, Any] | None) -> str:
    if not numbers or numbers.get("value") is None:
        return "–"
    lo, hi = numbers.get("ci") or [None, None]
    band = f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else ""
    return f"{_fmt(numbers['value'])}{band}"


def markdown(study: dict[str, Any]) -> str:
    rows = study["methods"]
    opts = study.get("options", {})
    lines = [
        "# Defense study",
        "",
        f"Data `{opts.get('dataset')}`, model `{opts.get('model')}`, "
        f"{opts.get('canaries')} member + {opts.get('canaries')} non-member canaries, "
        f"{opts.get('references')} references per heuristic method "
        f"({opts.get('dp_references')} per DP method); "
        f"{_fmt(study.get('seconds'), 0)} s in all.",
        "",
        "None of the heuristic defenses is DP: their ε is infinite. Headline: the strongest "
        "attack's TPR at 1% FPR on the canaries with its 95% interval (a maximum over the "
        "attacks run, not corrected for that selection). The DP models are attacked with "
        f"{opts.get('dp_references')} references against {opts.get('references')} for the "
        'others: where fewer, LiRA and RMIA are weaker on DP, so read "DP leaks less" as '
        'weaker evidence than "defense leaks less". The DP match is the smallest ε at which '
        "the DP curve reaches the defense's test accuracy.",
        "",
        f"**{study.get('privacy', '')}**",
        "",
        *(
            [
                f"**Noise: {', '.join(study['noise'])}: no ε here holds against whoever "
                "has the seed.**",
                "",
            ]
            if "reproducible" in study.get("noise", [])
            else []
        ),
        "## Defenses against DP at equal test accuracy",
        "",
        "| method | release | test acc | canary TPR@1%FPR [95%] (attack) | DP-SGD at equal acc "
        "(ε) | verdict | LADP at equal acc (ε) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["kind"] == "dp":
            continue
        cells = [r["name"], r["release"], _fmt(r["test_accuracy"])]
        s = r["strongest"]
        cells.append(f"{_interval(s)} ({s.get('attack', '–')})" if s else "–")
        for engine in ("dp-sgd", "ladp"):
            match = (r.get("match") or {}).get(engine) or {}
            dp = match.get("dp")
            cells.append(f"{_interval(dp)} (ε={dp['epsilon']:.3g})" if dp else "no DP match")
            cells.append(match.get("verdict", "–"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every method",
        "",
        "| method | ε | test acc | canary TPR@1%FPR [95%] | LiRA AUC (pop / canaries) | "
        "RMIA AUC (pop / canaries) | LiRA TPR@0.1% (pop) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lira = f"{_fmt(_metric(r, 'lira', 'auc'))} / {_fmt(_metric(r, 'lira', 'auc', True))}"
        rmia = f"{_fmt(_metric(r, 'rmia', 'auc'))} / {_fmt(_metric(r, 'rmia', 'auc', True))}"
        tpr = _fmt(_metric(r, "lira", "tpr_at_0_1pct_fpr"), 4)
        eps = _fmt(r["epsilon"], 3) if r["epsilon"] is not None else "∞"
        lines.append(
            f"| {r['name']} | {eps} | {_fmt(r['test_accuracy'])} | {_interval(r['strongest'])} "
            f"| {lira} | {rmia} | {tpr} |"
        )
    lines += [
        "",
        "## The original study's report: shadow-model attack",
        "",
        "| method | accuracy | macro P | macro R | macro F1 | weighted P | weighted R | "
        "weighted F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = [
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
    ]
    for r in rows:
        report = (r["attacks"].get("shadow") or {}).get("report")
        values = [_fmt(report.get(k)) if report else "–" for k in keys]
        lines.append(f"| {r['name']} | " + " | ".join(values) + " |")
    lines += [
        "",
        "## Measured cost of training (instead of stars)",
        "",
        "Training only (the target model, not its references), in a worker process with one "
        "torch thread; peak memory is resident memory above the worker's level before "
        "training.",
        "",
        "| method | seconds | × undefended | peak memory (MB) | × undefended |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["cost"]
        mb = c.get("peak_memory_bytes")
        lines.append(
            f"| {r['name']} | {_fmt(c.get('seconds'), 1)} | "
            f"{_fmt(c.get('seconds_vs_baseline'), 2)} | "
            f"{_fmt(mb / 2**20 if mb is not None else None, 0)} | "
            f"{_fmt(c.get('peak_memory_bytes_vs_baseline'), 2)} |"
        )
    if study.get("failed"):
        lines += ["", "## Failed methods", ""]
        lines += [f"- {f['method']}: {f['error']}" for f in study["failed"]]
    lines += ["", "## Figures", ""]
    lines += [f"![{title}](figures/{name}.png)" for name, title in FIGURES.items()]
    return "\n".join(lines) + "\n"


def write_report(study: dict[str, Any], out: Path) -> None:
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rows = study["methods"]
    if rows:
        figure_attack_accuracy(rows, figures / "attack_accuracy.png")
        figure_lira_rmia(rows, figures / "lira_rmia.png")
        figure_test_accuracy(rows, figures / "test_accuracy.png")
        figure_privacy_utility(rows, figures / "privacy_utility.png")
    (out / "study.json").write_text(json.dumps(study, indent=2))
    (out / "study.md").write_text(markdown(study))
