"""The evaluation's mirror: references pass through the target's compression stages, replaying
what each stage recorded (the pruning settings and sample, the int8 mode auto kept)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from rich.console import Console

from compress.int8 import CANDIDATES
from models.io import read_arch
from pipelines.config import Config, load_config
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.evaluation import reference_set
from pipelines.mirror import mirror_steps
from pipelines.progress import Reporter
from pipelines.runner import build_context, run_pipeline
from pipelines.settings.run import ModelSettings
from tests.conftest import TINY

STAGES_RUN = ["train", "prune", "quantize"]
SETTINGS = [
    *TINY,
    "run.model=mlp",
    'run.evaluate="last"',
    "evaluate.mirror=true",
    "evaluate.shadow_epochs=2",
    'evaluate.attacks=["loss", "lira"]',
    'prune.finetune="none"',
    "quantize.timing_samples=32",
]
KEPT = "weights-only"  # what the faked timing makes auto keep: not static


@dataclass
class Run:
    run_dir: Path
    config: Config


def tiny_config(*overrides: str) -> Config:
    config = load_config(None, [*SETTINGS, *overrides])
    # the mlp (TINY's widths are the cnn's)
    config = Config({**config.sections, "model": ModelSettings(values={"hidden": 32})})
    return config


def faked_latency(path: Path, x: np.ndarray, *, repeats: int = 20) -> float:
    """auto builds its candidates as <mode>.onnx: make KEPT the fastest, whatever the machine."""
    return 1.0 if path.stem == KEPT else 10.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    config = tiny_config()
    run_dir = tmp_path_factory.mktemp("mirror-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("compress.quantize.latency_ms", faked_latency)
        run_pipeline(
            STAGES_RUN,
            config=config,
            run_dir=run_dir,
            reporter=Reporter(Console(file=io.StringIO())),
        )
    return Run(run_dir, config)


def stage_metrics(run: Run, position: int, name: str) -> dict[str, Any]:
    result = json.loads((run.run_dir / f"{position:02d}-{name}" / "result.json").read_text())
    metrics: dict[str, Any] = result["metrics"]
    return metrics


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def context(run: Run, history: list[str]) -> RunContext:
    """What a stage's evaluation sees after `history`, with the stages' recorded results."""
    ctx = build_context(run.config, run.run_dir, Reporter(Console(file=io.StringIO())))
    ctx.history = list(history)
    ctx.stage_metrics = [
        stage_metrics(run, position, name) for position, name in enumerate(history, start=1)
    ]
    return ctx


def test_the_mirror_of_auto_quantizes_in_the_mode_auto_kept(run: Run) -> None:
    metrics = stage_metrics(run, 3, "quantize")
    assert metrics["compression"]["quantize"]["settings"]["mode"] == "auto"
    assert metrics["mode"] == KEPT
    target = run.run_dir / "03-quantize" / "model.int8.onnx"
    for i in range(2):
        mirrored = run.run_dir / "references" / "mirror-prune+quantize" / f"ref-0{i}"
        assert ops(mirrored / "model.int8.onnx") == ops(target)  # not static QDQ
        assert "QuantizeLinear" not in ops(mirrored / "model.int8.onnx")
    record = json.loads(
        (run.run_dir / "references" / "mirror-prune+quantize" / "recipe.json").read_text()
    )
    assert record["steps"][-1]["quantize"]["settings"]["mode"] == KEPT


def test_a_mirrored_pruned_reference_has_the_targets_widths(run: Run) -> None:
    widths = read_arch(run.run_dir / "02-prune")["structure"]
    assert widths == stage_metrics(run, 2, "prune")["compression"]["prune"]["structure"]
    for i in range(2):
        reference = run.run_dir / "references" / "mirror-prune" / f"ref-0{i}"
        assert read_arch(reference)["structure"] == widths
        unpruned = read_arch(run.run_dir / "references" / f"ref-0{i}")["structure"]
        assert unpruned != widths


def test_mirrored_sets_keep_the_membership_and_the_pruned_prefix_is_reused(run: Run) -> None:
    root = run.run_dir / "references"
    quantized = reference_set(context(run, STAGES_RUN))  # cached by the run's evaluation
    base = reference_set(context(run, ["train"]))
    np.testing.assert_array_equal(quantized.membership, base.membership)
    assert quantized.logits.shape == base.logits.shape
    assert not np.allclose(quantized.logits, base.logits)
    # int8 weights change the pruned references' outputs a little, not their decisions.
    pruned = np.load(root / "mirror-prune" / "logits-none.npy")
    assert (pruned.argmax(-1) == quantized.logits.argmax(-1)).mean() > 0.9
    stamp = (root / "mirror-prune" / "ref-00" / "model.safetensors").stat().st_mtime_ns
    again = reference_set(context(run, ["train", "prune"]))
    assert (root / "mirror-prune" / "ref-00" / "model.safetensors").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.logits, pruned)


def test_replays_draw_the_stages_samples(run: Run) -> None:
    ctx = context(run, STAGES_RUN)
    ctx.stage_metrics[1]["compression"]["prune"]["data"]["importance_samples"] = 24  # Taylor's
    prune_step, quantize_step = mirror_steps(ctx)
    assert prune_step.prune is not None and prune_step.prune.data.importance is not None
    np.testing.assert_array_equal(prune_step.prune.data.importance[0], ctx.sample("public", 24)[0])
    assert quantize_step.export is not None  # quantize's input was a torch model
    assert quantize_step.quantize is not None
    assert quantize_step.quantize.settings.mode == KEPT
    assert quantize_step.quantize.data.calibration is None  # weights-only reads none
    ctx.stage_metrics[2]["compression"]["quantize"]["mode"] = "static"
    static = mirror_steps(ctx)[1].quantize
    assert static is not None and static.settings.mode == "static"
    assert static.data.timing is None  # the mirror never times
    calibration = ctx.sample("public", 32)[0]  # TINY's quantize.calibration_samples
    np.testing.assert_array_equal(static.data.calibration, calibration)


@pytest.mark.parametrize("mode", [m for m in CANDIDATES if m != "static"])
def test_every_data_free_mode_kept_by_auto_is_replayed_as_is(run: Run, mode: str) -> None:
    ctx = context(run, STAGES_RUN)
    ctx.stage_metrics[2]["compression"]["quantize"]["mode"] = mode
    replay = mirror_steps(ctx)[1].quantize
    assert replay is not None
    assert replay.settings.mode == mode and replay.data.calibration is None


def test_a_stage_without_a_record_is_a_one_line_error(run: Run) -> None:
    ctx = context(run, STAGES_RUN)
    ctx.stage_metrics = []  # a context that did not come from the runner
    with pytest.raises(PrivcompError, match="no compression record"):
        mirror_steps(ctx)
