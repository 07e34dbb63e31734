"""Compression side by side: size, parameters, MACs, accuracy and onnxruntime latency per variant.

For cnn and resnet18 on the default data (mnist5k, default split, seed 0), in one run. cnn is
trained as the default pipeline trains it: LADP at the [train-ladp] defaults (ε = 3). resnet18
(GroupNorm, 11M parameters): LADP's per-example clipping would take hours on two CPU cores, so
it is trained without DP, PRIVCOMP_BENCH_RESNET_STEPS steps of batch 32 (default 300, rounded
to whole epochs); size, MACs and latency do not depend on how the weights were found.

Then, as the pipeline's defaults do it: prune (ratio 0.5, L2 magnitude, classifier kept; the
row "no fine-tune" is measured here), fine-tune on the public split ([prune] finetune_epochs of
Adam, free), export to ONNX (fp32), quantize the pruned model to int8 (static QDQ calibrated
on 256 public examples, dynamic, weights-only), and distil a student (the [distill] defaults:
cnn width 8, hidden 64, T = 3, 40 epochs) from the pruned model on the public split. Every
ONNX file is timed with onnxruntime (CPU provider, default threads) at batch 1 and 64: median of
PRIVCOMP_BENCH_REPEATS runs (default 30; a third of that for models over 100M MACs at batch 64)
after one warm-up.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TITLE = "Compression: size, MACs, accuracy and onnxruntime latency (fp32, pruned, int8, student)"
MODELS = ("cnn", "resnet18")


@dataclass
class Row:
    model: str
    variant: str
    path: Path
    note: str = ""


def _data() -> Any:
    from pipelines.config import load_config
    from pipelines.progress import Reporter
    from pipelines.runner import build_context

    config = load_config(None, [])
    ctx = build_context(config, Path("."), Reporter())
    return config, ctx.dataset, ctx.splits


def _train(name: str, config: Any, data: Any, splits: Any) -> tuple[Any, str]:
    """cnn: LADP at the [train-ladp] defaults; resnet18: Adam without DP (module docstring)."""

    from models.training import fit
    from models.zoo import seeded_model
    from privacy import train_ladp
    from privacy.accounting import format_epsilon

    model = seeded_model(name, seed=0, in_shape=data.in_shape, num_classes=data.num_classes)
    x, y = data.x[splits["members"]], data.y[splits["members"]]
    start = time.perf_counter()
    if name == "cnn":
        cfg = config.train_ladp.ladp_config()
        public_x, public_y = data.x[splits["public"]], data.y[splits["public"]]
        result = train_ladp(model, x, y, config=cfg, seed=0, public_x=public_x, public_y=public_y)
        eps = format_epsilon(result.spend.epsilon)
        return model, (
            f"LADP on the {len(x)} members at the [train-ladp] defaults: ε = "
            f"{eps} (δ = {cfg.delta:g}, {cfg.accountant.upper()}), "
            f"{result.steps_taken} steps ({time.perf_counter() - start:.0f} s)"
        )
    steps = int(os.environ.get("PRIVCOMP_BENCH_RESNET_STEPS", "300"))
    batch, lr = 32, 1e-3
    epochs = max(1, round(steps * batch / len(x)))
    fit(model, x, y, epochs=epochs, batch_size=batch, lr=lr, seed=0)
    steps_taken = epochs * -(-len(x) // batch)
    return model, (
        f"Adam without DP on the {len(x)} members, {epochs} epochs = {steps_taken} steps of "
        f"batch {batch}, lr {lr:g} ({time.perf_counter() - start:.0f} s)"
    )


def _variants(name: str, work: Path, config: Any, data: Any, splits: Any) -> tuple[list[Row], str]:
    import torch

    from compress.distill import distill_soft, soft_labels, student_model
    from compress.export import export_onnx
    from compress.int8 import (
        quantize_dynamic_int8,
        quantize_static_int8,
        quantize_weights_int8,
    )
    from compress.prune import prune_model
    from models.training import fit

    model, how = _train(name, config, data, splits)
    public = data.x[splits["public"]]
    check = data.x[splits["test"]][:64]
    example = torch.as_tensor(public[:2])

    def export(m: Any, path: Path) -> Path:
        return export_onnx(m, path, example_input=example, check_inputs=check).path

    rows = [Row(name, "fp32", export(model, work / f"{name}-fp32.onnx"))]
    prune_model(model, example, ratio=0.5, importance="l2")
    rows.append(Row(name, "pruned fp32, no fine-tune", export(model, work / f"{name}-p0.onnx")))
    p = config.prune
    train = config.train
    fit(
        model,
        public,
        data.y[splits["public"]],
        epochs=p.finetune_epochs,
        batch_size=train.batch_size,
        lr=p.finetune_lr or train.lr,
        seed=1,
    )
    pruned = export(model, work / f"{name}-pruned.onnx")
    rows.append(Row(name, "pruned fp32", pruned))
    order = np.random.default_rng(0).permutation(len(public))[:256]
    static = quantize_static_int8(pruned, work / f"{name}-static.onnx", calibration=public[order])
    rows.append(Row(name, "pruned int8 static (QDQ)", static))
    rows.append(
        Row(name, "pruned int8 dynamic", quantize_dynamic_int8(pruned, work / f"{name}-dyn.onnx"))
    )
    rows.append(
        Row(
            name, "pruned int8 weights-only", quantize_weights_int8(pruned, work / f"{name}-w.onnx")
        )
    )
    d = config.distill
    student, _ = student_model(
        d.student,
        in_shape=data.in_shape,
        num_classes=data.num_classes,
        width=d.student_width,
        hidden=d.student_hidden,
        seed=0,
    )
    probs = soft_labels(model, public, temperature=d.temperature)
    distill_soft(
        student,
        public,
        probs,
        temperature=d.temperature,
        epochs=d.epochs,
        batch_size=d.batch_size,
        lr=d.lr,
        seed=0,
    )
    rows.append(Row(name, "distilled student fp32", export(student, work / f"{name}-student.onnx")))
    return rows, how


def _measure(row: Row, data: Any, splits: Any) -> dict[str, Any]:
    import onnx

    from compress.macs import onnx_macs
    from compress.quantize import batch_of, latency_ms
    from models.onnx_io import load_session, run_session
    from models.training import accuracy
    from pipelines.artifacts import onnx_params

    test_x, test_y = data.x[splits["test"]], data.y[splits["test"]]
    repeats = int(os.environ.get("PRIVCOMP_BENCH_REPEATS", "30"))
    macs = onnx_macs(row.path)
    big = macs > 100_000_000
    batch64 = batch_of(test_x, 64)
    return {
        "bytes": row.path.stat().st_size,
        "params": onnx_params(onnx.load(str(row.path))),
        "macs": macs,
        "accuracy": accuracy(run_session(load_session(row.path), test_x), test_y),
        "ms1": latency_ms(row.path, test_x[:1], repeats=repeats),
        "ms64": latency_ms(row.path, batch64, repeats=max(5, repeats // 3) if big else repeats),
    }


def _fmt_int(n: int) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 10_000:
        return f"{n / 1e3:.0f} k"
    return f"{n:,}"


def run() -> str:
    import onnxruntime as ort

    config, data, splits = _data()
    lines: list[str] = []
    trained: list[str] = []
    measured: list[tuple[Row, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="privcomp-bench-compress-") as tmp:
        for name in MODELS:
            rows, how = _variants(name, Path(tmp), config, data, splits)
            trained.append(f"- {name}: {how}.")
            measured += [(row, _measure(row, data, splits)) for row in rows]
    lines += [
        f"mnist5k (default split: {len(splits['members'])} members, {len(splits['public'])} "
        f"public, {len(splits['test'])} test), onnxruntime {ort.__version__}, CPU provider. "
        "Training:",
        "",
        *trained,
        "",
        "Sizes are the ONNX files (weights inline; int8 files carry their scales). MACs are "
        "multiply-accumulates of the convolutions and dense layers per example. Latency: median "
        "wall milliseconds of one `session.run` at batch 1 and at batch 64.",
        "",
        "| model | variant | file bytes | params | MACs | test acc | ms @1 | ms @64 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, m in measured:
        lines.append(
            f"| {row.model} | {row.variant} | {m['bytes']:,} | {_fmt_int(m['params'])} | "
            f"{_fmt_int(m['macs'])} | {m['accuracy']:.3f} | {m['ms1']:.3f} | {m['ms64']:.2f} |"
        )
    lines += ["", _verdict(measured)]
    return "\n".join(lines) + "\n"


def _verdict(measured: list[tuple[Row, dict[str, Any]]]) -> str:
    """Which int8 mode `quantize.mode = "auto"` would keep here: the fastest (geometric mean of
    latencies) of those within the stage's accuracy floor of pruned fp32."""
    from compress.quantize import MAX_ACCURACY_DROP, latency_score

    def score(m: dict[str, Any]) -> float:
        return latency_score({"1": m["ms1"], "64": m["ms64"]})

    out = []
    for model in MODELS:
        rows = {r.variant: m for r, m in measured if r.model == model}
        fp32 = rows["pruned fp32"]
        cands = {v: m for v, m in rows.items() if "int8" in v}
        kept = {
            v: m for v, m in cands.items() if m["accuracy"] >= fp32["accuracy"] - MAX_ACCURACY_DROP
        } or cands
        best = min(kept, key=lambda v: score(kept[v]))
        out.append(
            f"{model}: fastest int8 here is **{best}** (geometric-mean latency "
            f"{score(kept[best]):.3f} ms vs pruned fp32 {score(fp32):.3f} ms)"
        )
    return (
        'What `quantize.mode = "auto"` (the default) keeps on this machine, by the same rule '
        "the stage applies (test accuracy within "
        f"{MAX_ACCURACY_DROP} of fp32 here): " + "; ".join(out) + "."
    )
