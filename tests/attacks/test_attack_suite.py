"""The attacks against a target that memorised its training set, through torch and through ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from attack_game import Game

from attacks.base import AttackContext, AttackScores, Query
from attacks.suite import ATTACKS, register_attack, run_attacks, score_attacks
from attacks.target import OnnxTarget, TorchTarget
from pipelines.errors import PrivcompError


def test_attacks_detect_memorisation(game: Game) -> None:
    steps: list[tuple[int, int]] = []
    results = run_attacks(
        TorchTarget(game.target),
        **game.attack_inputs(),
        progress=lambda done, total: steps.append((done, total)),
    )
    assert set(results) == {"loss", "confidence", "shadow"}
    for name, m in results.items():
        assert m.auc > 0.65, (name, m.auc)
        assert m.auc_ci[0] > 0.5, (name, m.auc_ci)
        assert m.balanced_accuracy > 0.55, (name, m.balanced_accuracy)
        assert m.n_members == m.n_nonmembers == len(game.members)
    assert results["loss"].epsilon_lower_bound > 0
    assert steps[-1][0] == steps[-1][1]


def _export(model: torch.nn.Module, path: Path) -> None:
    # The TorchScript exporter: 0.2 s here against 7 s for the dynamo one, same graph for an MLP.
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, 8, 8),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )


def test_torch_and_onnx_targets_give_the_same_scores(game: Game, tmp_path: Path) -> None:
    path = tmp_path / "target.onnx"
    _export(game.target, path)
    by_torch = score_attacks(TorchTarget(game.target), **game.attack_inputs())
    by_onnx = score_attacks(OnnxTarget(path), **game.attack_inputs())
    for name in by_torch:
        for side in ("members", "nonmembers"):
            a, b = getattr(by_torch[name], side), getattr(by_onnx[name], side)
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=name)


def test_registered_attack_is_run_with_the_shared_context(game: Game) -> None:
    seen = {}

    class Constant:
        def run(self, ctx: AttackContext, *, members: Query, nonmembers: Query) -> AttackScores:
            seen["pop_logits"] = ctx.pop_logits.shape
            return AttackScores(
                members=np.zeros(len(members.y)),
                nonmembers=np.zeros(len(nonmembers.y)),
                threshold=1.0,
            )

    register_attack("constant", Constant)
    try:
        metrics = run_attacks(TorchTarget(game.target), **game.attack_inputs(), names=["constant"])
    finally:
        del ATTACKS["constant"]
    assert seen["pop_logits"] == (game.shadows.k, len(game.population), 10)
    m = metrics["constant"]
    assert m.auc == 0.5 and m.balanced_accuracy == 0.5 and m.epsilon_lower_bound == 0.0


def test_bad_requests_are_one_line_errors(game: Game) -> None:
    with pytest.raises(PrivcompError, match="unknown attack"):
        run_attacks(TorchTarget(game.target), **game.attack_inputs(), names=["nope"])
    with pytest.raises(PrivcompError, match="population"):
        # A cached shadow set that belongs to another population split.
        stale = {**game.attack_inputs(), "x_pop": game.x[:10], "y_pop": game.y[:10]}
        run_attacks(TorchTarget(game.target), **stale)


def test_onnx_target_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(PrivcompError, match="not found"):
        OnnxTarget(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PrivcompError):
        OnnxTarget(bad)


def test_non_finite_logits_are_rejected() -> None:
    head = torch.nn.Linear(64, 10)
    with torch.no_grad():
        head.bias.fill_(float("nan"))
    model = torch.nn.Sequential(torch.nn.Flatten(), head)
    with pytest.raises(PrivcompError, match="NaN"):
        TorchTarget(model).predict_logits(np.zeros((2, 1, 8, 8), np.float32))
