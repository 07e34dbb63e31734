"""Opening artifacts uniformly: a model folder or an ONNX file becomes an attackable Target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from attacks.target import OnnxTarget, Target, TorchTarget
from compress.macs import onnx_macs, torch_macs
from models.io import ARCH, WEIGHTS, load_model
from models.zoo import count_params
from pipelines.rundir import sha256_of

MODEL = "model"
ONNX_MODEL = "onnx_model"


def artifact_files(name: str, path: Path) -> list[Path]:
    return [path / WEIGHTS, path / ARCH] if name == MODEL else [path]


def artifact_hash(name: str, path: Path) -> str:
    return "+".join(sha256_of(f) for f in artifact_files(name, path))


def artifact_bytes(name: str, path: Path) -> int:
    """Size of what would ship: the weights file, or the whole ONNX file."""
    return (path / WEIGHTS).stat().st_size if name == MODEL else path.stat().st_size


def artifact_macs(name: str, path: Path, in_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on one example."""
    if name == MODEL:
        return torch_macs(load_model(path)[0], in_shape)
    return onnx_macs(path)


def open_target(name: str, path: Path) -> Target:
    if name == MODEL:
        return TorchTarget(load_model(path)[0])
    return OnnxTarget(path)


def artifact_params(name: str, path: Path) -> int:
    if name == MODEL:
        return count_params(load_model(path)[0])
    return onnx_params(onnx.load(str(path)))


def onnx_params(model: onnx.ModelProto) -> int:
    """Weights and biases stored in the graph, without quantization scales and zero points."""
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    side_inputs = {i for n in model.graph.node if n.op_type in qdq for i in n.input[1:]}
    count = 0
    for init in model.graph.initializer:
        is_weight = init.data_type != onnx.TensorProto.INT64 and len(init.dims) > 0
        if init.name not in side_inputs and is_weight:
            count += int(np.prod(init.dims))
    return count
