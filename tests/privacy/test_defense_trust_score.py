"""Trust-score masking: low-trust answers become one-hot labels, the others stay the base's
softmax; the masking is in the released model's weights, so it survives save/load, pruning, ONNX
export and int8 quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from defense_testing import ARCH, PLAN, digits, held_out_accuracy

from compress.export import export_onnx
from compress.prune import prune_model
from compress.quantize import QuantizeData, QuantizeSettings, quantize
from models.io import load_model, save_model
from models.masking import TrustMasked
from models.onnx_io import load_session, run_session
from models.training import predict_logits
from models.zoo import build_model, classifier_of
from privacy.defenses import DEFENSES, build_defense
from privacy.defenses.trust_score import TrustScoreMasking

DEFENSE = build_defense("trust-score-masking", index_size=200)  # halves of the 400 public


def probabilities(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def one_hot_rows(logits: np.ndarray) -> np.ndarray:
    """Rows whose released probabilities are a one-hot vector (exactly, in float32)."""
    return probabilities(logits).max(axis=1) == 1.0


@pytest.fixture(scope="module")
def masked() -> TrustMasked:
    data = digits()
    model = DEFENSE.train(ARCH, data["members"], public=data["public"], plan=PLAN, seed=0)
    assert isinstance(model, TrustMasked) and not model.training
    return model


def test_masking_changes_the_released_output(masked: TrustMasked) -> None:
    x = digits()["test"][0]
    released, base = predict_logits(masked, x), predict_logits(masked.base, x)
    rows = one_hot_rows(released)
    # the threshold is the calibration points' median: about half of other data is masked
    assert 0.2 < rows.mean() < 0.8
    np.testing.assert_allclose(
        probabilities(released)[~rows], probabilities(base)[~rows], atol=1e-6
    )
    np.testing.assert_array_equal(released.argmax(1), base.argmax(1))
    assert held_out_accuracy(masked) > 0.5


def test_trust_is_the_ratio_of_kth_nearest_distances(masked: TrustMasked) -> None:
    x = torch.from_numpy(digits()["test"][0][:5])
    with torch.no_grad():
        trust, predicted = masked.trust(masked.base(x), x)
    distance = torch.cdist(x.flatten(1), masked.index_x)
    for i in range(len(x)):
        kth = torch.stack(
            [distance[i, masked.index_y == c].sort().values[masked.k - 1] for c in range(10)]
        )
        p = int(predicted[i])
        other = torch.cat([kth[:p], kth[p + 1 :]]).min()
        assert float(trust[i]) == pytest.approx(float(other / kth[p]), rel=1e-4)


def test_the_mask_survives_save_prune_export_and_quantize(
    masked: TrustMasked, tmp_path: Path
) -> None:
    x = digits()["test"][0][:200]
    arch = DEFENSE.released_arch(ARCH)
    save_model(masked, tmp_path / "saved", arch=arch)
    loaded, _ = load_model(tmp_path / "saved")
    np.testing.assert_array_equal(predict_logits(loaded, x), predict_logits(masked, x))

    result = prune_model(loaded, torch.from_numpy(x[:2]), ratio=0.5)
    assert result.params_after < result.params_before
    assert classifier_of(loaded).out_features == 10
    pruned = predict_logits(loaded, x)
    assert 0 < one_hot_rows(pruned).mean() < 1
    save_model(loaded, tmp_path / "pruned", arch=arch)
    np.testing.assert_array_equal(predict_logits(load_model(tmp_path / "pruned")[0], x), pruned)

    exported = export_onnx(
        loaded, tmp_path / "model.onnx", example_input=torch.from_numpy(x[:2]), check_inputs=x
    )
    assert exported.outputs is not None
    np.testing.assert_allclose(exported.outputs, pruned, rtol=1e-4, atol=1e-4 * 70)
    np.testing.assert_array_equal(one_hot_rows(exported.outputs), one_hot_rows(pruned))

    quantized = quantize(
        tmp_path / "model.onnx",
        tmp_path / "int8",
        settings=QuantizeSettings(mode="static"),
        data=QuantizeData(calibration=digits()["public"][0][:64]),
    )
    int8 = run_session(load_session(quantized.path), x)
    assert 0 < one_hot_rows(int8).mean() < 1


def test_released_arch_builds_the_masked_model() -> None:
    arch = DEFENSE.released_arch(ARCH)
    assert arch["name"] == "trust-masked"
    assert arch["kwargs"]["base_kwargs"] == {"hidden": 64, "depth": 1}
    model = build_model(arch["name"], **arch["kwargs"])
    assert isinstance(model, TrustMasked)
    assert model.index_x.shape == (200, 64)


@pytest.mark.parametrize(
    "setting",
    [{"k": 0}, {"quantile": 0.0}, {"quantile": 1.0}, {"quantile": float("nan")}, {"index_size": 2}],
)
def test_bad_setting_is_a_one_line_error(setting: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"trust-score-masking: {next(iter(setting))}"):
        build_defense("trust-score-masking", **setting)


def test_public_split_too_small_or_a_class_short_of_k_points_is_refused() -> None:
    data = digits()
    defense = TrustScoreMasking(index_size=400)
    with pytest.raises(ValueError, match="no calibration points"):
        defense.train(ARCH, data["members"], public=data["public"], plan=PLAN, seed=0)
    model = build_model(
        "trust-masked", **TrustScoreMasking(index_size=20).released_arch(ARCH)["kwargs"]
    )
    assert isinstance(model, TrustMasked)
    x, y = torch.zeros(20, 1, 8, 8), torch.zeros(20, dtype=torch.int64)  # class 0 only
    with pytest.raises(ValueError, match="class 1 has 0 index points"):
        model.set_index(x, y)


def test_registered_as_masked_scores() -> None:
    assert DEFENSES["trust-score-masking"].release == "masked-scores"


def test_the_index_and_the_threshold_come_from_the_public_split_only(masked: TrustMasked) -> None:
    """What ships inside the model: public records and a quantile of public trust scores."""
    data = digits()
    public_x, public_y = data["public"]
    flat_public = public_x.reshape(len(public_x), -1)
    index = masked.index_x.numpy().reshape(len(masked.index_x), -1)
    members = data["members"][0].reshape(len(data["members"][0]), -1)
    rows = [np.flatnonzero((flat_public == row).all(axis=1)) for row in index]
    assert all(len(r) == 1 for r in rows), "every index point is one public record"
    picked = np.concatenate(rows)
    np.testing.assert_array_equal(masked.index_y.numpy(), public_y[picked])
    assert not any((members == row).all(axis=1).any() for row in index), "no member inside"
    # The threshold is the median trust score of the public records not in the index.
    rest = np.setdiff1d(np.arange(len(public_x)), picked)
    with torch.no_grad():
        xb = torch.as_tensor(public_x[rest])
        scores = masked.trust(masked.base(xb), xb)[0].numpy()
    assert float(masked.threshold) == pytest.approx(float(np.quantile(scores, 0.5)), rel=1e-5)
