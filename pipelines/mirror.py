"""Mirroring the target's compression on the reference models (evaluate.mirror = true).

The references go through the compression stages the artifact went through, each step replaying
what the target's stage recorded (metrics["compression"], see pipelines.compressing) through the
same compress/ transforms, on the same data:

- prune: the recorded settings (ratio, importance, global ranking, iterative steps) on the same
  public sample; each reference ranks its own channels by the target's criterion, as the target
  ranked its own (per-layer pruning gives it the target's widths; a global ranking gives the
  widths its own weights call for);
- export: the recorded tolerance, checked on the test split as the stage checks;
- quantize: the mode the target's stage kept (auto chose it by timing on the machine that ran the
  target; the mirror builds that mode, it does not time again), with the same per-channel setting
  and calibration method, static int8 calibrated on the same public sample.

Not mirrored: fine-tuning after pruning (today's behaviour, kept on purpose). The references are
the auditor's models: a DP fine-tune of each would need the target's σ and accountant to be the
same mechanism, and its fresh noise would tell nothing about the target's. A calibration on the
members (allowed only for a non-private target) is mirrored on the public sample.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks.references import ReferenceSet, ref_name, variant_logits
from attacks.signals import query_variants
from attacks.target import OnnxTarget, Target, TorchTarget
from compress.export import ExportData, ExportSettings, export
from compress.prune import PruneData, PruneSettings, prune
from compress.quantize import QuantizeData, QuantizeSettings, quantize
from models.io import WEIGHTS, load_model
from pipelines.compressing import (
    RECORD_KEY,
    Replay,
    replay_export,
    replay_prune,
    replay_quantize,
)
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.executors import Executor
from pipelines.reference_cache import RECIPE, ensure_logits, is_cached, read_recipe, record_digest
from pipelines.rundir import write_json

MIRRORED_STAGES = ("prune", "export", "quantize")


@dataclass(frozen=True, eq=False)
class MirrorStep:
    """One compression stage of the target, as it recorded itself (quantize: export first when
    its input was a torch model)."""

    stage: str
    prune: Replay[PruneSettings, PruneData] | None = None
    export: Replay[ExportSettings, ExportData] | None = None
    quantize: Replay[QuantizeSettings, QuantizeData] | None = None

    def key(self) -> dict[str, Any]:
        """What the mirrored references depend on (their cache is checked against it)."""
        replays = {"prune": self.prune, "export": self.export, "quantize": self.quantize}
        return {"stage": self.stage, **{k: r.key for k, r in replays.items() if r is not None}}


def mirror_steps(ctx: RunContext) -> list[MirrorStep]:
    """The compression stages the latest artifact went through, in order, from their records
    (those of its own model: after the stage that made it, RunContext.model_made_at)."""
    steps = []
    for position, stage in enumerate(ctx.history):
        if stage not in MIRRORED_STAGES or position < ctx.model_made_at:
            continue
        metrics = ctx.stage_metrics[position] if position < len(ctx.stage_metrics) else {}
        record = metrics.get(RECORD_KEY)
        if record is None:
            raise PrivcompError(
                f"mirror: stage '{stage}' left no compression record to replay (made by an "
                "older version?); run the pipeline again in a fresh run dir"
            )
        steps.append(
            MirrorStep(
                stage,
                prune=replay_prune(ctx, record["prune"]) if "prune" in record else None,
                export=replay_export(ctx, record["export"]) if "export" in record else None,
                quantize=replay_quantize(ctx, record["quantize"]) if "quantize" in record else None,
            )
        )
    return steps


@dataclass(frozen=True, eq=False)
class MirrorJob:
    source: str  # a reference artifact folder (model folder or folder with one .onnx)
    out_dir: str
    step: MirrorStep
    x: np.ndarray  # the pool
    augment: str


def mirror_reference(job: MirrorJob) -> np.ndarray:
    """Apply one compression step to one reference; return its logits on the pool variants."""
    source, out = Path(job.source), Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        target = _replay(job.step, source, out)
    except ValueError as exc:
        raise PrivcompError(f"mirror {job.step.stage}: {exc}") from exc
    return variant_logits(target, query_variants(job.x, job.augment))


def _replay(step: MirrorStep, source: Path, out: Path) -> Target:
    is_torch = (source / WEIGHTS).is_file()
    if step.prune is not None:
        if not is_torch:
            raise PrivcompError("mirror: prune after export/quantize cannot be mirrored")
        prune(source, out, settings=step.prune.settings, data=step.prune.data)
        return TorchTarget(load_model(out)[0])
    if step.quantize is not None:
        q = step.quantize
        with tempfile.TemporaryDirectory(prefix="privcomp-mirror-") as work:
            if is_torch:
                fp32 = _export(step, source, Path(work))
            else:
                fp32 = next(iter(sorted(source.glob("*.onnx"))))
            path = quantize(fp32, out, settings=q.settings, data=q.data).path
        return OnnxTarget(path)
    return OnnxTarget(_export(step, source, out))


def _export(step: MirrorStep, source: Path, out: Path) -> Path:
    if step.export is None or not (source / WEIGHTS).is_file():
        raise PrivcompError(f"mirror: {step.stage} has no torch reference to export")
    return export(source, out, settings=step.export.settings, data=step.export.data).path


def _mirror_dir(root: Path, steps: list[MirrorStep], *, shared: bool) -> Path:
    """references/mirror-<stages>/; in a shared cache (run dirs whose compression differs use one
    base folder) the name also holds a digest of what the mirrored set depends on."""
    name = "mirror-" + "+".join(s.stage for s in steps)
    if shared:
        name += "-" + record_digest(_mirror_record(root, steps))[:12]
    return root / name


def _mirror_record(root: Path, steps: list[MirrorStep]) -> dict[str, Any]:
    return {"steps": [s.key() for s in steps], "base": read_recipe(root)}


def mirrored_set(
    ctx: RunContext,
    steps: list[MirrorStep],
    base: ReferenceSet,
    *,
    root: Path,
    shared: bool = False,
    pool: np.ndarray,
    x: np.ndarray,
    executor: Executor,
) -> ReferenceSet:
    """The references of `root` (the base set's folder) passed through `steps` (cached per
    prefix, built from the previous one); the caller holds root's lock when it is shared.

    pool: the data set indices of the candidate pool, x: its images."""
    augment = ctx.config.evaluate.augment
    directory = _mirror_dir(root, steps, shared=shared)
    record = _mirror_record(root, steps)
    if is_cached(directory, record):
        ensure_logits(directory, augment, x)
        return ReferenceSet.load(directory, augment=augment)
    source = root
    if len(steps) > 1:
        prefix = steps[:-1]
        mirrored_set(ctx, prefix, base, root=root, shared=shared, pool=pool, x=x, executor=executor)
        source = _mirror_dir(root, prefix, shared=shared)
    if directory.exists():
        shutil.rmtree(directory)
    jobs = [
        MirrorJob(str(source / ref_name(i)), str(directory / ref_name(i)), steps[-1], x, augment)
        for i in range(base.k)
    ]
    with ctx.reporter.task(f"mirror references: {'+'.join(s.stage for s in steps)}") as progress:
        logits = executor.map(mirror_reference, jobs, progress=progress)
    refs = ReferenceSet(base.membership, np.stack(logits), augment=augment, seed=base.seed)
    refs.save(directory, pool=pool)
    write_json(directory / RECIPE, record)
    return refs
