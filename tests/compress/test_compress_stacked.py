"""The model-stacking defense's released module (models.stacking's "stacked" architecture) goes
through save/load, pruning, ONNX export and int8 quantization like any registered model, and its
outputs agree at every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from compress_testing import torch_logits
from sklearn.datasets import load_digits

from compress.export import ExportData, ExportSettings, export
from compress.prune import PruneData, PruneSettings, prune
from compress.quantize import QuantizeData, QuantizeSettings, quantize
from models.io import load_model, save_model
from models.onnx_io import load_session, run_session
from models.stacking import StackedModel
from models.training import accuracy
from models.zoo import classifier_of
from privacy.defenses import TrainingPlan, build_defense

BASE: dict[str, Any] = {
    "name": "cnn",
    "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "width": 8, "hidden": 32},
}


def test_stacked_model_saves_prunes_exports_and_quantizes(tmp_path: Path) -> None:
    d = load_digits()
    x = ((d.data.reshape(-1, 1, 8, 8) / 16.0 - 0.3) / 0.4).astype(np.float32)
    y = d.target.astype(np.int64)
    members, public, test = np.split(np.random.default_rng(0).permutation(len(y)), [600, 1200])
    defense = build_defense("model-stacking")
    model = defense.train(
        BASE,
        (x[members], y[members]),
        public=(x[public], y[public]),
        plan=TrainingPlan(epochs=8, lr=3e-3),
        seed=0,
    )
    xt, yt = x[test], y[test]
    save_model(model, tmp_path / "trained", arch=defense.released_arch(BASE))
    loaded, _ = load_model(tmp_path / "trained")
    assert isinstance(loaded, StackedModel)
    np.testing.assert_array_equal(torch_logits(loaded, xt), torch_logits(model, xt))

    pruned = prune(
        tmp_path / "trained",
        tmp_path / "pruned",
        settings=PruneSettings(ratio=0.5),
        data=PruneData(example=x[public][:2]),
    )
    assert pruned.result.params_after < 0.5 * pruned.result.params_before
    small, _ = load_model(tmp_path / "pruned")
    # The classes survive in both bases and in the meta-classifier's inputs and outputs.
    assert isinstance(small, StackedModel)
    assert classifier_of(small.bases.a).out_features == classifier_of(small.bases.b).out_features
    assert (small.meta_classifier.in_features, small.meta_classifier.out_features) == (20, 10)

    exported = export(
        tmp_path / "pruned",
        tmp_path / "onnx",
        settings=ExportSettings(),
        data=ExportData(example=x[public][:2], check=xt),
    )
    expected = torch_logits(small, xt)
    fp32 = run_session(load_session(exported.path), xt)
    np.testing.assert_allclose(fp32, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    int8 = quantize(
        exported.path,
        tmp_path / "int8",
        settings=QuantizeSettings(mode="static"),
        data=QuantizeData(calibration=x[public][:64]),
    )
    quantized = run_session(load_session(int8.path), xt)
    assert (quantized.argmax(1) == fp32.argmax(1)).mean() > 0.9
    # (Pruning half the channels without fine-tuning costs accuracy; int8 must not cost more.)
    assert accuracy(quantized, yt) > accuracy(fp32, yt) - 0.05
