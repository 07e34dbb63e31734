"""int8 quantization as one transform: fp32 ONNX file -> int8 ONNX file, and a record of the choice.

Modes: static (QDQ), dynamic, weights-only (compress.int8), or auto: build the three, time each
with ONNX Runtime on the machine running it (batch 1 and 64), and keep the fastest whose accuracy
on the given labelled sample is within a tolerance of fp32. On CPUs without int8 dot-product
instructions static QDQ can be slower than fp32, and even with them small convolutions may not
gain: measuring is the only reliable way to choose. Because that choice depends on the machine,
the result records the mode it kept: replaying it (the evaluation's mirror) builds that mode
again instead of timing anew.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.export import staged_file
from compress.int8 import CANDIDATES, build_int8, calibration_method, validated
from models.onnx_io import load_session, run_session

MODES = ("auto", *CANDIDATES)
TIMING_BATCHES = (1, 64)
INT8_FILE = "model.int8.onnx"
# auto keeps the fastest int8 model whose accuracy is within this of fp32's.
MAX_ACCURACY_DROP = 0.02


@dataclass(frozen=True)
class QuantizeSettings:
    mode: str = "auto"  # one of MODES
    per_channel: bool = True
    calibration_method: str = "minmax"  # static only (compress.int8.CALIBRATION_METHODS)
    max_accuracy_drop: float = MAX_ACCURACY_DROP  # auto only
    repeats: int = 20  # auto: timed runs per candidate and batch


@dataclass(frozen=True, eq=False)
class QuantizeData:
    """What quantization reads. Both must be data the caller may read for free (public)."""

    calibration: np.ndarray | None = None  # images that fix static int8's activation ranges
    timing: tuple[np.ndarray, np.ndarray] | None = None  # labelled images auto times and scores


@dataclass(frozen=True)
class QuantizedArtifact:
    path: Path
    mode: str  # the mode that produced path (auto resolves to one of CANDIDATES)
    settings: QuantizeSettings  # as asked (mode may be auto)
    timings_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> batch -> ms
    accuracy: dict[str, float] = field(default_factory=dict)  # mode -> accuracy on the sample
    rejected: list[str] = field(default_factory=list)  # too inaccurate for auto

    def to_metrics(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "timings_ms": self.timings_ms,
            "timing_accuracy": self.accuracy,
            "rejected": self.rejected,
        }

    def record(self) -> dict[str, Any]:
        """What quantization chose, as JSON: the settings asked, the mode kept and why."""
        return {"settings": asdict(self.settings), **self.to_metrics()}


def latency_ms(path: Path, x: np.ndarray, *, repeats: int = 20) -> float:
    """Median wall time (ms) of one onnxruntime run on x, after one warm-up run."""
    session = load_session(path)
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(x, dtype=np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def latency_score(timings: dict[str, float]) -> float:
    """One number per candidate: the geometric mean of its latencies at the timed batches."""
    return math.exp(sum(math.log(max(t, 1e-9)) for t in timings.values()) / len(timings))


def batch_of(x: np.ndarray, size: int) -> np.ndarray:
    """size rows of x, repeating x if it is shorter."""
    reps = -(-size // len(x))
    return np.concatenate([x] * reps)[:size] if reps > 1 else x[:size]


def quantize(
    source: Path, out_dir: Path, *, settings: QuantizeSettings, data: QuantizeData
) -> QuantizedArtifact:
    """Quantize the fp32 ONNX file `source` to out_dir/INT8_FILE in settings.mode.

    Only data.calibration is read by static quantization; auto times every candidate on
    data.timing's images and keeps the fastest whose accuracy on them is within
    settings.max_accuracy_drop of fp32 (fp32 is timed too and reported, never chosen).
    """
    if settings.mode not in MODES:
        known = ", ".join(MODES)
        raise ValueError(f"unknown quantization mode '{settings.mode}' (known: {known})")
    calibration_method(settings.calibration_method)
    out_path = out_dir / INT8_FILE
    if settings.mode != "auto":
        path = build_int8(
            settings.mode,
            source,
            out_path,
            calibration=data.calibration,
            per_channel=settings.per_channel,
            method=settings.calibration_method,
        )
        return QuantizedArtifact(path=path, mode=settings.mode, settings=settings)
    if data.timing is None or len(data.timing[0]) == 0:
        raise ValueError("auto quantization needs timing data (images and labels)")
    return _auto(source, out_path, settings=settings, data=data)


def _auto(
    fp32_path: Path, out_path: Path, *, settings: QuantizeSettings, data: QuantizeData
) -> QuantizedArtifact:
    assert data.timing is not None
    x, y = validated(data.timing[0]), np.asarray(data.timing[1])
    candidates = [c for c in CANDIDATES if c != "static" or data.calibration is not None]
    timings: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}
    repeats = settings.repeats
    with tempfile.TemporaryDirectory(prefix="privcomp-auto-", dir=out_path.parent) as work:
        built = {"fp32": fp32_path}
        for c in candidates:
            built[c] = build_int8(
                c,
                fp32_path,
                Path(work) / f"{c}.onnx",
                calibration=data.calibration,
                per_channel=settings.per_channel,
                method=settings.calibration_method,
            )
        for name, path in built.items():
            timings[name] = {
                str(b): latency_ms(path, batch_of(x, b), repeats=repeats) for b in TIMING_BATCHES
            }
            logits = run_session(load_session(path), x)
            accuracy[name] = float((logits.argmax(axis=1) == y).mean())
        floor = accuracy["fp32"] - settings.max_accuracy_drop
        rejected = [c for c in candidates if accuracy[c] < floor]
        kept = [c for c in candidates if c not in rejected] or candidates
        best = min(kept, key=lambda c: latency_score(timings[c]))
        with staged_file(out_path) as tmp:
            tmp.write_bytes(built[best].read_bytes())
    return QuantizedArtifact(
        path=out_path,
        mode=best,
        settings=settings,
        timings_ms=timings,
        accuracy=accuracy,
        rejected=rejected,
    )
