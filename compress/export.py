"""Export to ONNX with a dynamic batch axis, checked in full and compared with torch.

torch 2.14's default exporter (`dynamo=True`, torch.export + onnxscript) is used: the TorchScript
exporter still works here but warns that it is deprecated and will be removed. The program's
ModelProto is taken in memory, so weights stay inside the one .onnx file and metadata can be set
before anything is written.

`export(source, out_dir, settings=, data=)` is the transform a run applies (model folder -> ONNX
file); `export_onnx` does the same for a module in memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from models.io import load_model
from models.onnx_io import check_onnx, load_session, run_session

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    logit_scale: float = 1.0  # max(1, largest |torch logit|): the tolerance is relative to it
    # onnxruntime's logits on check_inputs (what the shipped file computes)
    outputs: np.ndarray | None = field(default=None, compare=False, repr=False)


def _to_proto(model: nn.Module, example_input: torch.Tensor) -> onnx.ModelProto:
    # torch.export specialises a dimension whose example size is 0 or 1, so trace with at least
    # two rows to keep the batch axis symbolic.
    if example_input.shape[0] < 2:
        example_input = example_input[:1].expand(2, *example_input.shape[1:])
    program = torch.onnx.export(
        model,
        (example_input,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )
    if program is None:  # only the TorchScript path returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    _strip_trace_info(proto)
    return proto


def _strip_trace_info(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug records (stack traces, FX node text).

    They hold file paths of the machine that built the model, which a shipped artifact should not
    carry, and they are about a fifth of a small int8 model's bytes.
    """
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    for node in nodes:
        del node.metadata_props[:]
        node.doc_string = ""


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A temp path next to `path`, renamed over it only if the block finishes without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """One self-contained file: weights inline, never an external data file."""
    onnx.save_model(proto, str(path), save_as_external_data=False)


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Add or overwrite metadata_props entries (ONNX allows only strings)."""
    merged = {p.key: p.value for p in proto.metadata_props}
    merged.update({str(k): str(v) for k, v in metadata.items()})
    onnx.helper.set_model_props(proto, merged)


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add metadata to an ONNX file; the new file is checked in full before it replaces the old."""
    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    with staged_file(path) as tmp:
        save_onnx(proto, tmp)
        check_onnx(tmp)


@torch.no_grad()
def _torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    return model(torch.as_tensor(x, device=device)).float().cpu().numpy()


def export_onnx(
    model: nn.Module,
    path: Path,
    *,
    example_input: torch.Tensor,
    check_inputs: np.ndarray,
    metadata: dict[str, str] | None = None,
    metadata_from_outputs: Callable[[np.ndarray], dict[str, str]] | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Write `model` (eval mode) as ONNX and verify onnxruntime agrees with torch on check_inputs.

    metadata_from_outputs(onnx_logits) adds properties computed from what the file itself
    outputs on check_inputs (e.g. its test accuracy); they are written before the file is
    renamed into place, so the file is final (and its hash stable) once this returns.
    Raises ValueError, leaving any existing file at `path` untouched, when the largest absolute
    logit difference is above tolerance x max(1, largest |logit|): for logits of ordinary size
    (|logit| <= 1) the bound is absolute; a model with logits in the hundreds accumulates
    float32 rounding in proportion (a different summation order), while a wrong operator still
    shows errors of the logits' own size.
    """
    if len(check_inputs) == 0:
        raise ValueError("check_inputs is empty: nothing to compare the ONNX model with")
    was_training = model.training
    model.eval()
    try:
        proto = _to_proto(model, example_input.to(next(model.parameters()).device))
        expected = _torch_logits(model, check_inputs.astype(np.float32))
    finally:
        model.train(was_training)
    set_metadata(proto, metadata or {})
    # load_session runs the full onnx.checker on the staged file before onnxruntime loads it; the
    # staged file replaces `path` only once it matches torch, so a good export is never clobbered.
    with staged_file(path) as tmp:
        save_onnx(proto, tmp)
        outputs = run_session(load_session(tmp), check_inputs)
        diff = float(np.abs(outputs - expected).max())
        scale = max(1.0, float(np.abs(expected).max()))
        if not diff <= tolerance * scale:  # also catches NaN
            raise ValueError(
                f"ONNX export differs from torch by {diff:.3g} "
                f"(tolerance {tolerance:g} x logit scale {scale:.3g})"
            )
        if metadata_from_outputs is not None:
            set_metadata(proto, metadata_from_outputs(outputs))
            save_onnx(proto, tmp)
            check_onnx(tmp)
    return ExportResult(path=path, max_abs_diff=diff, logit_scale=scale, outputs=outputs)


@dataclass(frozen=True)
class ExportSettings:
    tolerance: float = 1e-4  # of max |ONNX - torch|, relative to max(1, largest |logit|)


@dataclass(frozen=True, eq=False)
class ExportData:
    example: np.ndarray  # traced input (rows beyond the first two are not needed)
    check: np.ndarray  # inputs onnxruntime must agree with torch on


@dataclass(frozen=True)
class ExportedArtifact:
    path: Path
    settings: ExportSettings
    max_abs_diff: float
    logit_scale: float

    def record(self) -> dict[str, Any]:
        """What the export did, as JSON: its settings and the check it passed."""
        return {
            "settings": asdict(self.settings),
            "max_abs_diff": self.max_abs_diff,
            "logit_scale": self.logit_scale,
        }


def export(
    source: Path,
    out_dir: Path,
    *,
    settings: ExportSettings,
    data: ExportData,
    metadata_from_outputs: Callable[[np.ndarray], dict[str, str]] | None = None,
) -> ExportedArtifact:
    """The model saved in folder `source` as out_dir/ONNX_FILE, checked as export_onnx checks."""
    model, _ = load_model(source)
    result = export_onnx(
        model,
        out_dir / ONNX_FILE,
        example_input=torch.as_tensor(data.example),
        check_inputs=data.check,
        metadata_from_outputs=metadata_from_outputs,
        tolerance=settings.tolerance,
    )
    return ExportedArtifact(result.path, settings, result.max_abs_diff, result.logit_scale)
