"""MACs: a hand count on a tiny net, and the same number from a torch model and its ONNX export."""

from __future__ import annotations

from pathlib import Path

import torch
from compress_testing import DIGITS_SHAPE, make_model, random_images
from torch import nn

from compress.export import export_onnx
from compress.int8 import quantize_dynamic_int8, quantize_weights_int8
from compress.macs import onnx_macs, torch_macs
from compress.prune import prune_model


def test_hand_count_of_conv_and_linear() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 8x8 outputs x 4 channels, 1*3*3 MACs each
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),  # 10 outputs, 256 MACs each
    )
    assert torch_macs(model, (1, 8, 8)) == 4 * 64 * 9 + 10 * 256


def test_onnx_count_matches_torch_for_fp32_and_int8(tmp_path: Path) -> None:
    model, _ = make_model("cnn", DIGITS_SHAPE)
    x = random_images(4, DIGITS_SHAPE)
    prune_model(model, torch.from_numpy(x[:2]))
    fp32 = export_onnx(
        model, tmp_path / "m.onnx", example_input=torch.from_numpy(x[:2]), check_inputs=x
    ).path
    expected = torch_macs(model, DIGITS_SHAPE)
    assert expected > 0
    assert onnx_macs(fp32) == expected
    assert onnx_macs(quantize_weights_int8(fp32, tmp_path / "w.onnx")) == expected
    assert onnx_macs(quantize_dynamic_int8(fp32, tmp_path / "d.onnx")) == expected
