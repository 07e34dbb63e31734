"""Static int8 quantization: a third of the size or less, predictions kept, public calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from compress_testing import DIGITS_SHAPE, MNIST_SHAPE, make_model, random_images
from onnx import numpy_helper

from compress.export import export_onnx
from compress.onnx_io import check_onnx, load_session, run_session
from compress.prune import prune_model
from compress.quantize import quantize_static_int8
from models.io import model_bytes, save_model
from models.training import accuracy, fit
from pipelines.data import load_dataset, make_splits
from pipelines.errors import PrivcompError

METADATA = {"epsilon": "8.0", "stages": "train,prune,export"}


@dataclass
class MnistCnn:
    safetensors_bytes: int
    fp32: Path
    int8: Path
    calibration: np.ndarray


@pytest.fixture(scope="module")
def mnist_cnn(tmp_path_factory: pytest.TempPathFactory) -> MnistCnn:
    """The pipeline's default shapes: cnn on 28x28, pruned at 0.5, exported, quantized."""
    root = tmp_path_factory.mktemp("mnist-cnn")
    model, arch = make_model("cnn", MNIST_SHAPE)
    prune_model(model, torch.from_numpy(random_images(2, MNIST_SHAPE)))
    save_model(model, root, arch=arch)
    fp32 = export_onnx(
        model,
        root / "fp32.onnx",
        example_input=torch.from_numpy(random_images(2, MNIST_SHAPE)),
        check_inputs=random_images(4, MNIST_SHAPE, seed=1),
        metadata=METADATA,
    ).path
    calibration = random_images(64, MNIST_SHAPE, seed=2)
    int8 = quantize_static_int8(fp32, root / "int8.onnx", calibration=calibration)
    return MnistCnn(model_bytes(root), fp32, int8, calibration)


def test_int8_file_passes_checker_and_is_a_third_of_fp32(mnist_cnn: MnistCnn) -> None:
    check_onnx(mnist_cnn.int8)
    size = mnist_cnn.int8.stat().st_size
    assert size <= mnist_cnn.fp32.stat().st_size / 3
    assert size <= mnist_cnn.safetensors_bytes / 3


def test_weights_are_stored_as_int8(mnist_cnn: MnistCnn) -> None:
    proto = onnx.load(str(mnist_cnn.int8))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    largest = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    assert largest.data_type == onnx.TensorProto.INT8


def test_metadata_is_carried_over(mnist_cnn: MnistCnn) -> None:
    props = {p.key: p.value for p in onnx.load(str(mnist_cnn.int8)).metadata_props}
    assert METADATA.items() <= props.items()


def _input_scale(path: Path) -> float:
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    return float(inits[q.input[1]])


def test_input_range_comes_from_the_calibration_array(mnist_cnn: MnistCnn, tmp_path: Path) -> None:
    x = mnist_cnn.calibration
    # MinMax calibration, asymmetric int8: the range [min(x, 0), max(x, 0)] spread over 255 steps.
    assert _input_scale(mnist_cnn.int8) == pytest.approx(
        (x.max() - min(x.min(), 0)) / 255, rel=1e-5
    )
    wider = quantize_static_int8(mnist_cnn.fp32, tmp_path / "wider.onnx", calibration=3 * x)
    assert _input_scale(wider) == pytest.approx(3 * _input_scale(mnist_cnn.int8), rel=1e-5)


def test_per_tensor_quantization_also_works(mnist_cnn: MnistCnn, tmp_path: Path) -> None:
    out = quantize_static_int8(
        mnist_cnn.fp32, tmp_path / "pt.onnx", calibration=mnist_cnn.calibration, per_channel=False
    )
    logits = run_session(load_session(out), mnist_cnn.calibration[:8])
    assert logits.shape == (8, 10) and np.isfinite(logits).all()


@pytest.mark.parametrize(
    "bad", [np.zeros((0, *MNIST_SHAPE), np.float32), np.full((4, *MNIST_SHAPE), np.nan, np.float32)]
)
def test_bad_calibration_is_rejected(mnist_cnn: MnistCnn, tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize_static_int8(mnist_cnn.fp32, tmp_path / "q.onnx", calibration=bad)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_fp32_model_is_a_privcomp_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(PrivcompError):
        quantize_static_int8(bad, tmp_path / "q.onnx", calibration=random_images(4, MNIST_SHAPE))
    assert not (tmp_path / "q.onnx").exists()


def test_int8_predictions_agree_with_fp32_after_training(tmp_path: Path) -> None:
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0)
    members, public, test = (splits[s] for s in ("members", "public", "test"))
    model, _ = make_model("cnn", DIGITS_SHAPE)
    fit(model, data.x[members], data.y[members], epochs=4, seed=0)
    fp32 = export_onnx(
        model,
        tmp_path / "fp32.onnx",
        example_input=torch.from_numpy(data.x[public[:2]]),
        check_inputs=data.x[public[:32]],
    ).path
    int8 = quantize_static_int8(fp32, tmp_path / "int8.onnx", calibration=data.x[public])
    ref = run_session(load_session(fp32), data.x[test])
    got = run_session(load_session(int8), data.x[test])
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.95
    assert accuracy(ref, data.y[test]) > 0.8  # the fit really learned something
    assert accuracy(got, data.y[test]) >= accuracy(ref, data.y[test]) - 0.03
