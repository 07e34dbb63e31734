"""Static int8 quantization with ONNX Runtime, calibrated on the `public` split only.

Calibration only sees the array it is given; the pipeline passes the public split, so the ranges
it fixes reveal nothing about members and the step costs no privacy budget. Format: QDQ with
int8 activations and weights (S8S8), which ONNX Runtime names as its first choice for CPUs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from compress.export import save_onnx, set_metadata, staged_file
from compress.onnx_io import check_onnx

CALIBRATION_BATCH = 64


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


def quantize_static_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    calibration: np.ndarray,
    per_channel: bool = True,
) -> Path:
    """Quantize an fp32 ONNX file to int8 (QDQ) and write it atomically to out_path."""
    x = _validated(calibration)
    source = check_onnx(fp32_path)
    with tempfile.TemporaryDirectory(prefix="privcomp-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "int8.onnx"
        # ONNX Runtime's recommended pre-processing (symbolic shape inference, basic graph
        # optimisation): the quantizer needs every tensor's shape to place Q/DQ pairs.
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            ArrayReader(x, input_name=_input_name(source)),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_float_nodes(onnx.load(str(prepared))),
        )
        result = onnx.load(str(quantized))
    # ONNX Runtime 1.31 happens to keep metadata_props, but no API promises it; the shipped file
    # must carry ε, accuracy and history, so copy them from the source explicitly.
    set_metadata(result, {p.key: p.value for p in source.metadata_props})
    with staged_file(out_path) as tmp:
        save_onnx(result, tmp)
        check_onnx(tmp)
    return out_path
