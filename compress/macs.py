"""Multiply-accumulates per example, counted the same way for torch modules and ONNX graphs.

One MAC is one multiply-add of a convolution or a dense layer (Conv, Linear / Gemm, MatMul and
their integer forms); normalisation, activations and pooling are not counted (they are a few
per cent of a CNN's arithmetic and have no agreed convention). Counting both formats by the same
rule makes a torch model and its ONNX export report identical numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import torch
from onnx import shape_inference
from torch import nn

# ONNX op -> index of its weight input (the second operand of the multiply).
_WEIGHT_INPUT = {
    "Conv": 1,
    "ConvInteger": 1,
    "QLinearConv": 3,
    "Gemm": 1,
    "MatMul": 1,
    "MatMulInteger": 1,
    "QLinearMatMul": 3,
}
_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}


@torch.no_grad()
def torch_macs(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on one example of shape in_shape (C, H, W)."""
    total = 0

    def conv_hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        total += output[0].numel() * per_output

    def linear_hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        total += output[0].numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *in_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """Static dims of a tensor; the symbolic batch axis (or any unknown one) is None."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def onnx_macs(model: onnx.ModelProto | Path) -> int:
    """MACs per example of an ONNX graph (batch axis taken as 1), by the rule of torch_macs."""
    proto = onnx.load(str(model)) if isinstance(model, Path) else model
    inferred = shape_inference.infer_shapes(proto)
    graph = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        shapes[v.name] = _dims(v)
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in graph.node:
        index = _WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or not node.output:
            continue
        weight = shapes.get(node.input[index])
        out = shapes.get(node.output[0])
        if not weight or not out or any(d is None for d in weight):
            continue
        per_example = math.prod(d for d in out[1:] if d is not None)
        if node.op_type in _CONV_OPS:
            # weight (C_out, C_in / groups, k...): each output element sums C_in/groups * k...
            total += per_example * math.prod(int(d) for d in weight[1:] if d is not None)
        else:
            # Gemm / MatMul: each output element sums over the shared dimension K.
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            k = weight[1] if (node.op_type == "Gemm" and trans_b) else weight[0]
            total += per_example * int(k or 0)
    return total
