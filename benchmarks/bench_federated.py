"""Federated training: test accuracy against ε against bytes communicated, for a few client
counts, both privacy modes, fp32 and int8 updates.

`pipeline run train-fl --evaluate none` on mnist5k (the default split: 2,000 members),
3 rounds; record mode at the default ε = 3, client mode at ε = 8 with
client_rate 0.5. PRIVCOMP_BENCH_FL_CLIENTS sets the client counts (default "4,8"). Each row is one
run with fresh noise: read the accuracy to about ±0.05.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

TITLE = "Federated training: accuracy, ε and bytes communicated (train-fl)"
MODES = (
    ("record", "none", ['train-fl.privacy="record"']),
    ("record", "int8", ['train-fl.privacy="record"', 'train-fl.update_compression="int8"']),
    (
        "client",
        "none",
        ['train-fl.privacy="client"', "train-fl.client_rate=0.5", "train-fl.epsilon=8"],
    ),
    (
        "client",
        "int8",
        [
            'train-fl.privacy="client"',
            "train-fl.client_rate=0.5",
            "train-fl.epsilon=8",
            'train-fl.update_compression="int8"',
        ],
    ),
)


def _one(clients: int, settings: list[str]) -> dict[str, Any]:
    from pipelines.config import load_config
    from pipelines.progress import Reporter
    from pipelines.runner import run_pipeline

    run_dir = Path("runs/bench-federated")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = load_config(None, ['run.evaluate="none"', f"train-fl.clients={clients}", *settings])
    start = time.perf_counter()
    summary = run_pipeline(
        ["train-fl"],
        config=config,
        run_dir=run_dir,
        reporter=Reporter(Console(file=io.StringIO())),
    )
    seconds = time.perf_counter() - start
    result = json.loads((run_dir / "01-train-fl" / "result.json").read_text())
    row = summary["stages"][0]
    return {
        "accuracy": row["utility"]["test_accuracy"],
        "epsilon": row["privacy"]["epsilon"],
        "client_epsilon": result["spend"]["details"].get("client_epsilon"),
        "metrics": result["metrics"],
        "seconds": seconds,
    }


def run() -> str:
    counts = [int(c) for c in os.environ.get("PRIVCOMP_BENCH_FL_CLIENTS", "4,8").split(",")]
    lines = [
        "| clients | privacy | updates | test acc | ε (record) | client ε | bytes per client "
        "update (× fp32) | bytes per round | seconds |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in counts:
        for mode, updates, settings in MODES:
            r = _one(clients, settings)
            m = r["metrics"]
            per, fp32 = m["bytes_per_client_update"], m["fp32_bytes_per_client_update"]
            # Client mode writes only the expected bytes per round (the sample is its secret).
            per_round = m.get("expected_bytes_per_round") or (
                sum(m["bytes_per_round"]) / max(len(m["bytes_per_round"]), 1)
            )
            client_eps = f"{r['client_epsilon']:.2f}" if r["client_epsilon"] else "–"
            lines.append(
                f"| {clients} | {mode} | {updates} | {r['accuracy']:.3f} | {r['epsilon']:.2f} | "
                f"{client_eps} | {per:,.0f} ({per / fp32:.2f}×) | {per_round:,.0f} | "
                f"{r['seconds']:.0f} |"
            )
    notes = (
        "Record mode: each client's DP-SGD on its own shard, the worst client's ε; client mode: "
        "Poisson-sampled clients, clip and noise on the server, client-level ε and the "
        "record-level ε it implies (the run's). Bytes per round: the mean over the rounds of "
        "what the clients that came sent (record mode), the expected value q·clients·update "
        "(client mode, whose sample is not written). With 4 or 8 clients client-level DP adds "
        "noise σC/(q·clients) over one update of every parameter: at chance here; it needs "
        "hundreds of clients."
    )
    return "\n".join(lines) + "\n\n" + notes
