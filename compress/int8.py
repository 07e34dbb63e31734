"""int8 quantization with ONNX Runtime: static (QDQ), dynamic, weights-only, or the fastest of them.

- static: int8 weights (per channel) and int8 activations whose ranges are fixed by a calibration
  array. Calibration only sees the array it is given; the pipeline passes the public split, so
  the ranges reveal nothing about members and the step costs no privacy budget. Format QDQ, S8S8,
  which ONNX Runtime names as its first choice for CPUs; only Conv / Gemm / MatMul are quantized
  (GroupNorm and the element-wise ops around it stay in float: measured faster, see BENCHMARKS.md).
- dynamic: int8 weights, activations quantized per batch at run time (ConvInteger, MatMulInteger).
  Reads no data.
- weights-only: int8 weights (per output channel, symmetric) dequantized in the graph; arithmetic
  stays fp32. Reads no data; a third of the file size at fp32 speed.
- auto: build the three, time each with ONNX Runtime on the machine running it (batch 1 and 64),
  and keep the fastest whose accuracy on the given labelled sample is within a tolerance of fp32.
  On CPUs without int8 dot-product instructions static QDQ can be slower than fp32, and even with
  them small convolutions may not gain: measuring is the only reliable way to choose.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from compress.export import save_onnx, set_metadata, staged_file
from compress.onnx_io import check_onnx, load_session, run_session

CALIBRATION_BATCH = 64
MODES = ("auto", "static", "dynamic", "weights-only")
CANDIDATES = ("static", "dynamic", "weights-only")
CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
TIMING_BATCHES = (1, 64)


class ArrayReader(CalibrationDataReader):
    """Feeds one array to the calibrator in fixed-size batches under the model's input name."""

    def __init__(self, x: np.ndarray, *, input_name: str, batch_size: int = CALIBRATION_BATCH):
        self._batches = iter(
            [{input_name: x[i : i + batch_size]} for i in range(0, len(x), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _validated(calibration: np.ndarray) -> np.ndarray:
    x = np.asarray(calibration, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("calibration data is empty")
    if not np.isfinite(x).all():
        raise ValueError("calibration data contains NaN or infinite values")
    return x


def _input_name(model: onnx.ModelProto) -> str:
    initializers = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def _float_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes left in float: the InstanceNormalization that GroupNorm exports to.

    Its scale is a rank-1 vector of ones per group, which per-channel quantization cannot split
    (ONNX Runtime warns and falls back), and normalising in float costs next to nothing.
    """
    return [n.name for n in model.graph.node if n.op_type == "InstanceNormalization"]


def _finish(result: onnx.ModelProto, source: onnx.ModelProto, out_path: Path) -> Path:
    # ONNX Runtime 1.31 happens to keep metadata_props, but no API promises it; the shipped file
    # must carry ε, accuracy and history, so copy them from the source explicitly.
    set_metadata(result, {p.key: p.value for p in source.metadata_props})
    with staged_file(out_path) as tmp:
        save_onnx(result, tmp)
        check_onnx(tmp)
    return out_path


def _method(name: str) -> CalibrationMethod:
    if name not in CALIBRATION_METHODS:
        known = ", ".join(CALIBRATION_METHODS)
        raise ValueError(f"unknown calibration method '{name}' (known: {known})")
    return CALIBRATION_METHODS[name]


def quantize_static_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    calibration: np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
) -> Path:
    """Quantize an fp32 ONNX file to int8 (QDQ) and write it atomically to out_path."""
    x = _validated(calibration)
    calibrate_method = _method(method)
    source = check_onnx(fp32_path)
    with tempfile.TemporaryDirectory(prefix="privcomp-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "int8.onnx"
        # ONNX Runtime's recommended pre-processing (symbolic shape inference, basic graph
        # optimisation): the quantizer needs every tensor's shape to place Q/DQ pairs.
        quant_pre_process(str(fp32_path), str(prepared))
        # The histogram calibrators print progress on stdout, which is the CLI's output.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(quantized),
                ArrayReader(x, input_name=_input_name(source)),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPS,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method,
                nodes_to_exclude=_float_nodes(onnx.load(str(prepared))),
            )
        result = onnx.load(str(quantized))
    return _finish(result, source, out_path)


def quantize_dynamic_int8(fp32_path: Path, out_path: Path, *, per_channel: bool = True) -> Path:
    """int8 weights, activations quantized at run time from each batch: reads no data."""
    source = check_onnx(fp32_path)
    with tempfile.TemporaryDirectory(prefix="privcomp-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_dynamic(
            str(prepared),
            str(quantized),
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
        )
        result = onnx.load(str(quantized))
    return _finish(result, source, out_path)


def _weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of a node's weight: 0 for Conv and Gemm(transB), else 1."""
    if node.op_type == "Conv":
        return 0
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return 0 if node.op_type == "Gemm" and trans_b else 1


def quantize_weights_int8(fp32_path: Path, out_path: Path) -> Path:
    """Store Conv / Gemm / MatMul weights as int8 (symmetric, per output channel) behind a
    DequantizeLinear node; every computation stays fp32. Reads no data."""
    source = check_onnx(fp32_path)
    model = onnx.ModelProto()
    model.CopyFrom(source)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        weight = node.input[1] if node.op_type in QUANTIZED_OPS and len(node.input) > 1 else ""
        init = inits.get(weight)
        # A weight shared with another node (rare) is left alone rather than copied.
        if init is not None and users[weight] == 1 and len(init.dims) >= 2:
            w = numpy_helper.to_array(init).astype(np.float32)
            axis = _weight_axis(node)
            reduce = tuple(i for i in range(w.ndim) if i != axis)
            scale = (np.abs(w).max(axis=reduce) / 127.0).astype(np.float32)
            scale[scale == 0] = 1.0
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            graph.initializer.remove(init)
            graph.initializer.extend(
                [
                    numpy_helper.from_array(q, f"{weight}_int8"),
                    numpy_helper.from_array(scale, f"{weight}_scale"),
                    numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), f"{weight}_zp"),
                ]
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{weight}_int8", f"{weight}_scale", f"{weight}_zp"],
                    [weight],
                    name=f"{weight}_dequantize",
                    axis=axis,
                )
            )
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return _finish(model, source, out_path)


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


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    mode: str  # the mode that produced path (auto resolves to one of CANDIDATES)
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


def _build(
    mode: str,
    fp32_path: Path,
    out_path: Path,
    *,
    calibration: np.ndarray | None,
    per_channel: bool,
    method: str,
) -> Path:
    if mode == "static":
        if calibration is None:
            raise ValueError("static quantization needs calibration data")
        return quantize_static_int8(
            fp32_path, out_path, calibration=calibration, per_channel=per_channel, method=method
        )
    if mode == "dynamic":
        return quantize_dynamic_int8(fp32_path, out_path, per_channel=per_channel)
    if mode == "weights-only":
        return quantize_weights_int8(fp32_path, out_path)
    raise ValueError(f"unknown quantization mode '{mode}' (known: {', '.join(MODES)})")


# auto keeps the fastest int8 model whose accuracy is within this of fp32's.
MAX_ACCURACY_DROP = 0.02


def latency_score(timings: dict[str, float]) -> float:
    """One number per candidate: the geometric mean of its latencies at the timed batches."""
    return math.exp(sum(math.log(max(t, 1e-9)) for t in timings.values()) / len(timings))


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    mode: str = "auto",
    calibration: np.ndarray | None = None,
    per_channel: bool = True,
    method: str = "minmax",
    timing_data: tuple[np.ndarray, np.ndarray] | None = None,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    repeats: int = 20,
) -> QuantizeResult:
    """Quantize fp32_path to int8 in `mode`; auto times every candidate on timing_data's images
    and keeps the fastest whose accuracy on timing_data is within max_accuracy_drop of fp32.

    Only `calibration` is read by static quantization; timing_data must be data the caller may
    read for free (the public split). fp32 is timed too and reported, never chosen.
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode '{mode}' (known: {', '.join(MODES)})")
    _method(method)
    if mode != "auto":
        path = _build(
            mode,
            fp32_path,
            out_path,
            calibration=calibration,
            per_channel=per_channel,
            method=method,
        )
        return QuantizeResult(path=path, mode=mode)
    if timing_data is None or len(timing_data[0]) == 0:
        raise ValueError("auto quantization needs timing data (images and labels)")
    x, y = _validated(timing_data[0]), np.asarray(timing_data[1])
    candidates = [c for c in CANDIDATES if c != "static" or calibration is not None]
    timings: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="privcomp-auto-", dir=out_path.parent) as work:
        built = {"fp32": fp32_path}
        for c in candidates:
            built[c] = _build(
                c,
                fp32_path,
                Path(work) / f"{c}.onnx",
                calibration=calibration,
                per_channel=per_channel,
                method=method,
            )
        for name, path in built.items():
            timings[name] = {
                str(b): latency_ms(path, batch_of(x, b), repeats=repeats) for b in TIMING_BATCHES
            }
            logits = run_session(load_session(path), x)
            accuracy[name] = float((logits.argmax(axis=1) == y).mean())
        floor = accuracy["fp32"] - max_accuracy_drop
        rejected = [c for c in candidates if accuracy[c] < floor]
        kept = [c for c in candidates if c not in rejected] or candidates
        best = min(kept, key=lambda c: latency_score(timings[c]))
        with staged_file(out_path) as tmp:
            tmp.write_bytes(built[best].read_bytes())
    return QuantizeResult(
        path=out_path, mode=best, timings_ms=timings, accuracy=accuracy, rejected=rejected
    )


def batch_of(x: np.ndarray, size: int) -> np.ndarray:
    """size rows of x, repeating x if it is shorter."""
    reps = -(-size // len(x))
    return np.concatenate([x] * reps)[:size] if reps > 1 else x[:size]
