"""int8 quantization: a third of the size or less, predictions kept, public calibration; auto keeps
the fastest accurate mode and records it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from compress_testing import DIGITS_SHAPE, MNIST_SHAPE, make_model, random_images
from onnx import numpy_helper

from compress.export import export_onnx
from compress.int8 import (
    CANDIDATES,
    quantize_dynamic_int8,
    quantize_static_int8,
    quantize_weights_int8,
)
from compress.prune import prune_model
from compress.quantize import INT8_FILE, QuantizeData, QuantizeSettings, quantize
from models.errors import ModelFileError
from models.io import model_bytes, save_model
from models.onnx_io import check_onnx, load_session, run_session
from models.training import accuracy, fit
from pipelines.data import load_dataset, make_splits

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


def _activation_scales(path: Path) -> list[float]:
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return [float(inits[n.input[1]]) for n in proto.graph.node if n.op_type == "QuantizeLinear"]


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


def test_corrupt_fp32_model_is_a_model_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelFileError):
        quantize_static_int8(bad, tmp_path / "q.onnx", calibration=random_images(4, MNIST_SHAPE))
    assert not (tmp_path / "q.onnx").exists()


@dataclass
class DigitsCnn:
    fp32: Path
    x: np.ndarray  # public split
    y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> DigitsCnn:
    """A cnn trained on digits: int8 errors show up in its predictions."""
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0)
    members, public, test = (splits[s] for s in ("members", "public", "test"))
    model, _ = make_model("cnn", DIGITS_SHAPE)
    fit(model, data.x[members], data.y[members], epochs=4, seed=0)
    fp32 = export_onnx(
        model,
        tmp_path_factory.mktemp("digits") / "fp32.onnx",
        example_input=torch.from_numpy(data.x[public[:2]]),
        check_inputs=data.x[public[:32]],
    ).path
    return DigitsCnn(fp32, data.x[public], data.y[public], data.x[test], data.y[test])


def test_int8_predictions_agree_with_fp32_after_training(
    digits_cnn: DigitsCnn, tmp_path: Path
) -> None:
    d = digits_cnn
    int8 = quantize_static_int8(d.fp32, tmp_path / "int8.onnx", calibration=d.x)
    ref = run_session(load_session(d.fp32), d.test_x)
    got = run_session(load_session(int8), d.test_x)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.95
    assert accuracy(ref, d.test_y) > 0.8  # the fit really learned something
    assert accuracy(got, d.test_y) >= accuracy(ref, d.test_y) - 0.03


@pytest.mark.parametrize("build", [quantize_dynamic_int8, quantize_weights_int8])
def test_data_free_modes_are_a_third_and_keep_predictions(
    mnist_cnn: MnistCnn, tmp_path: Path, build: object
) -> None:
    out = build(mnist_cnn.fp32, tmp_path / "q.onnx")  # type: ignore[operator]
    check_onnx(out)
    assert out.stat().st_size <= mnist_cnn.fp32.stat().st_size / 3
    x = mnist_cnn.calibration[:32]
    ref = run_session(load_session(mnist_cnn.fp32), x)
    got = run_session(load_session(out), x)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert METADATA.items() <= props.items()


def test_weights_only_stores_int8_and_computes_in_float(
    mnist_cnn: MnistCnn, tmp_path: Path
) -> None:
    out = quantize_weights_int8(mnist_cnn.fp32, tmp_path / "w.onnx")
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" not in ops and ops.count("DequantizeLinear") == 4  # 2 conv + 2 gemm
    x = mnist_cnn.calibration[:8]
    ref, got = (run_session(load_session(p), x) for p in (mnist_cnn.fp32, out))
    scale = np.abs(ref).max()
    assert np.abs(ref - got).max() <= 0.05 * scale  # int8 weights only: small error


def test_auto_times_every_candidate_and_keeps_the_fastest(
    mnist_cnn: MnistCnn, tmp_path: Path
) -> None:
    x = mnist_cnn.calibration
    labels = run_session(load_session(mnist_cnn.fp32), x).argmax(1)  # fp32 is 100% on these
    result = quantize(
        mnist_cnn.fp32,
        tmp_path,
        settings=QuantizeSettings(mode="auto", repeats=3),
        data=QuantizeData(calibration=x, timing=(x, labels)),
    )
    assert set(result.timings_ms) == {"fp32", *CANDIDATES}
    assert all(set(t) == {"1", "64"} for t in result.timings_ms.values())
    kept = [c for c in CANDIDATES if c not in result.rejected]
    assert result.mode in kept
    geo = {c: np.sqrt(result.timings_ms[c]["1"] * result.timings_ms[c]["64"]) for c in kept}
    assert geo[result.mode] == min(geo.values())
    assert result.path == tmp_path / INT8_FILE
    assert result.path.stat().st_size <= mnist_cnn.fp32.stat().st_size / 3
    assert [p.name for p in tmp_path.iterdir()] == [INT8_FILE]  # candidates cleaned up
    # The record says what auto kept, beside what was asked (the mirror replays the former).
    record = json.loads(json.dumps(result.record()))
    assert record["mode"] == result.mode and record["settings"]["mode"] == "auto"
    assert record["timings_ms"] == result.timings_ms and record["rejected"] == result.rejected


def test_auto_never_picks_a_candidate_that_loses_accuracy(
    digits_cnn: DigitsCnn, tmp_path: Path
) -> None:
    d = digits_cnn
    # Calibrated on a range 1000x too narrow, static int8 saturates and loses its predictions.
    result = quantize(
        d.fp32,
        tmp_path,
        settings=QuantizeSettings(max_accuracy_drop=0.05, repeats=1),
        data=QuantizeData(calibration=d.x * 1e-3, timing=(d.x, d.y)),
    )
    assert "static" in result.rejected and result.mode != "static"


@pytest.mark.parametrize("mode", CANDIDATES)
def test_a_fixed_mode_builds_that_mode_without_timing(
    mnist_cnn: MnistCnn, tmp_path: Path, mode: str
) -> None:
    settings = QuantizeSettings(mode=mode, per_channel=False)
    result = quantize(
        mnist_cnn.fp32,
        tmp_path,
        settings=settings,
        data=QuantizeData(calibration=mnist_cnn.calibration),
    )
    assert result.mode == mode and result.timings_ms == {} and result.settings == settings
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert ("QuantizeLinear" in ops) == (mode == "static")
    assert ("DynamicQuantizeLinear" in ops) == (mode == "dynamic")


def test_calibration_method_is_selectable(
    mnist_cnn: MnistCnn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = quantize_static_int8(
        mnist_cnn.fp32, tmp_path / "q.onnx", calibration=mnist_cnn.calibration, method="percentile"
    )
    # Percentile calibration clips activation tails that MinMax keeps: other ranges somewhere.
    assert _activation_scales(out) != pytest.approx(_activation_scales(mnist_cnn.int8), rel=1e-3)
    assert capsys.readouterr().out == ""  # the calibrator's progress prints are swallowed


def test_unknown_mode_and_method_are_rejected(mnist_cnn: MnistCnn, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        quantize(
            mnist_cnn.fp32, tmp_path, settings=QuantizeSettings(mode="int4"), data=QuantizeData()
        )
    with pytest.raises(ValueError, match="timing data"):
        quantize(mnist_cnn.fp32, tmp_path, settings=QuantizeSettings(), data=QuantizeData())
    with pytest.raises(ValueError, match="calibration method"):
        quantize_static_int8(
            mnist_cnn.fp32, tmp_path / "q.onnx", calibration=mnist_cnn.calibration, method="x"
        )
