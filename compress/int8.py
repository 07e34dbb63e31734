"""int8 builders with ONNX Runtime: static (QDQ), dynamic and weights-only.

- static: int8 weights (per channel) and int8 activations whose ranges are fixed by a calibration
  array. Calibration only sees the array it is given; the pipeline passes the public split, so
  the ranges reveal nothing about members and the step costs no privacy budget. Format QDQ, S8S8,
  which ONNX Runtime names as its first choice for CPUs; only Conv / Gemm / MatMul are quantized
  (GroupNorm and the element-wise ops around it stay in float: measured faster, see BENCHMARKS.md).
- dynamic: int8 weights, activations quantized per batch at run time (ConvInteger, MatMulInteger).
  Reads no data.
- weights-only: int8 weights (per output channel, symmetric) dequantized in the graph; arithmetic
  stays fp32. Reads no data; a third of the file size at fp32 speed.

compress.quantize chooses among them (mode auto) and records what it kept.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
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
from models.onnx_io import check_onnx

CALIBRATION_BATCH = 64
CANDIDATES = ("static", "dynamic", "weights-only")
CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]


class ArrayReader(CalibrationDataReader):
    """Feeds one array to the calibrator in fixed-size batches under the model's input name."""

    def __init__(self, x: np.ndarray, *, input_name: str, batch_size: int = CALIBRATION_BATCH):
        self._batches = iter(
            [{input_name: x[i : i + batch_size]} for i in range(0, len(x), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def validated(calibration: np.ndarray) -> np.ndarray:
    """float32 images, refused when empty or not finite."""
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


def calibration_method(name: str) -> CalibrationMethod:
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
    x = validated(calibration)
    calibrate_method = calibration_method(method)
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


def build_int8(
    mode: str,
    fp32_path: Path,
    out_path: Path,
    *,
    calibration: np.ndarray | None,
    per_channel: bool,
    method: str,
) -> Path:
    """One of CANDIDATES; only static reads `calibration`."""
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
    raise ValueError(f"unknown int8 mode '{mode}' (known: {', '.join(CANDIDATES)})")
