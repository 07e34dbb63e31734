"""The attacks against a target that memorised its members, through torch and through ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from attack_game import Game

from attacks.base import AttackContext, AttackOutput
from attacks.errors import AttackError
from attacks.references import ReferenceSet, reference_targets, variant_logits
from attacks.signals import query_variants
from attacks.suite import ATTACKS, Pool, register_attack, run_attacks, score_attacks
from attacks.target import LabelOnlyTarget, OnnxTarget, TorchTarget
from models.errors import ModelFileError

LOGIT_ATTACKS = [name for name in ATTACKS if name != "gap"]


def test_attacks_detect_memorisation(game: Game) -> None:
    steps: list[tuple[int, int]] = []
    results = run_attacks(
        TorchTarget(game.target),
        **game.inputs(),
        names=list(ATTACKS),
        progress=lambda done, total: steps.append((done, total)),
    )
    assert set(results) == set(ATTACKS)
    for name in LOGIT_ATTACKS:
        m = results[name]
        assert m.auc > 0.6 and m.auc_ci[0] > 0.5, (name, m.auc, m.auc_ci)
        assert m.n_members == m.n_nonmembers == len(game.pool.members)
    assert results["gap"].auc >= 0.5
    assert results["loss"].epsilon_lower_bound > 0
    assert steps[-1][0] == steps[-1][1] == len(ATTACKS) + 1
    # Shokri's report: accuracy and macro / weighted precision, recall and F1 of the attack.
    report = results["shadow"].to_dict()["report"]
    assert set(report) == {
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
    }
    assert report["accuracy"] > 0.5


def test_lira_and_rmia_beat_the_loss_attack_at_low_fpr(game: Game) -> None:
    names = ["loss", "lira", "lira-offline", "rmia"]
    results = run_attacks(TorchTarget(game.target), **game.inputs(), names=names)
    loss = results["loss"].tpr_at_1pct_fpr
    for name in names[1:]:
        assert results[name].tpr_at_1pct_fpr > loss + 0.05, (name, results[name], loss)
    assert 0.0 <= results["rmia"].extra["a"] <= 1.0


def test_a_target_trained_on_other_data_looks_like_chance(null_game: Game) -> None:
    results = run_attacks(TorchTarget(null_game.target), **null_game.inputs(), names=list(ATTACKS))
    for name, m in results.items():
        assert m.auc_ci[0] <= 0.5 <= m.auc_ci[1], (name, m.auc, m.auc_ci)


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
    by_torch = score_attacks(TorchTarget(game.target), **game.inputs(), names=list(ATTACKS))
    by_onnx = score_attacks(OnnxTarget(path), **game.inputs(), names=list(ATTACKS))
    for name in ATTACKS:
        for side in ("members", "nonmembers"):
            a, b = getattr(by_torch[name], side), getattr(by_onnx[name], side)
            # The two backends sum float32 logits in different orders, so they agree to a few
            # ulps (float32: ~7 significant digits, eps 1.2e-7), and each score keeps about that
            # relative precision: LiRA's log-likelihood ratios reach -1.6e4 (a std floor of
            # 1e-2 squares a phi gap of ~2 into 2e4), where 1e-4 absolute would ask for 9 digits.
            # rtol 1e-5 leaves ~50x the observed 2e-7; atol 1e-4 covers scores near 0.
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)
        # Exact on purpose: every threshold is fitted on the reference models' outputs only,
        # which are the same arrays for both targets.
        assert by_torch[name].threshold == by_onnx[name].threshold


def test_label_only_target_gets_the_gap_attack_only(game: Game) -> None:
    labels_only = LabelOnlyTarget(TorchTarget(game.target))
    by_labels = score_attacks(labels_only, **game.inputs(), names=["gap"])["gap"]
    by_logits = score_attacks(TorchTarget(game.target), **game.inputs(), names=["gap"])["gap"]
    np.testing.assert_array_equal(by_labels.members, by_logits.members)
    # Training accuracy 1.0: every member is classified correctly.
    assert by_labels.members.min() == 1.0 and by_labels.nonmembers.mean() < 1.0
    with pytest.raises(AttackError, match="labels only"):
        score_attacks(labels_only, **game.inputs(), names=["lira"])


def test_augmented_queries(game: Game) -> None:
    """LiRA / RMIA / gap on one-pixel shifts: references queried on the same variants."""
    variants = query_variants(game.pool.x, "shift")
    assert variants.shape == (5, *game.pool.x.shape)
    logits = [variant_logits(t, variants) for t in reference_targets(game.references_dir)]
    refs = ReferenceSet(game.references.membership, np.stack(logits), augment="shift")
    names = ["lira", "rmia", "gap"]
    results = run_attacks(TorchTarget(game.target), pool=game.pool, references=refs, names=names)
    assert results["lira"].auc > 0.6 and results["rmia"].auc > 0.6
    assert results["gap"].extra["variants"] == 5.0
    # The fraction of shifted copies classified correctly: a finer (if weak) label-only signal.
    assert results["gap"].auc >= 0.5


def test_registered_attack_sees_unlabelled_queries(game: Game) -> None:
    seen: dict[str, object] = {}

    class Constant:
        def run(self, ctx: AttackContext) -> AttackOutput:
            seen["ref_logits"] = ctx.ref_logits.shape
            seen["query"] = ctx.query
            return AttackOutput(scores=np.zeros(len(ctx.query)), threshold=1.0)

    register_attack("constant", Constant)
    try:
        metrics = run_attacks(TorchTarget(game.target), **game.inputs(), names=["constant"])
    finally:
        del ATTACKS["constant"]
    pool = game.pool
    assert seen["ref_logits"] == (game.references.k, 1, len(pool.y), 10)
    # One sorted array of members and non-members together: nothing tells them apart.
    np.testing.assert_array_equal(
        seen["query"], np.sort(np.concatenate([pool.members, pool.nonmembers]))
    )
    m = metrics["constant"]
    assert m.auc == 0.5 and m.balanced_accuracy == 0.5 and m.epsilon_lower_bound == 0.0


def test_bad_requests_are_one_line_errors(game: Game) -> None:
    target = TorchTarget(game.target)
    with pytest.raises(AttackError, match="unknown attack"):
        run_attacks(target, **game.inputs(), names=["nope"])
    pool = game.pool
    smaller = Pool(
        x=pool.x[:-1],
        y=pool.y[:-1],
        members=pool.members[pool.members < len(pool.y) - 1],
        nonmembers=pool.nonmembers[pool.nonmembers < len(pool.y) - 1],
        population=pool.population[pool.population < len(pool.y) - 1],
    )
    with pytest.raises(AttackError, match="pool"):
        # A cached reference set that belongs to another pool.
        run_attacks(target, pool=smaller, references=game.references)
    with pytest.raises(AttackError, match="disjoint"):
        Pool(pool.x, pool.y, np.array([0, 1]), np.array([1, 2]), np.array([3, 4]))
    one = ReferenceSet(game.references.membership[:1], game.references.logits[:1])
    with pytest.raises(AttackError, match="at least 2"):
        run_attacks(target, pool=pool, references=one, names=["lira"])


def test_onnx_target_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(AttackError, match="not found"):
        OnnxTarget(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="invalid ONNX model"):
        OnnxTarget(bad)


def test_non_finite_logits_are_rejected() -> None:
    head = torch.nn.Linear(64, 10)
    with torch.no_grad():
        head.bias.fill_(float("nan"))
    model = torch.nn.Sequential(torch.nn.Flatten(), head)
    with pytest.raises(AttackError, match="NaN"):
        TorchTarget(model).predict_logits(np.zeros((2, 1, 8, 8), np.float32))


def _with_canaries(pool: Pool, count: int = 20) -> Pool:
    canaries = np.sort(np.concatenate([pool.members[:count], pool.nonmembers[:count]]))
    return Pool(pool.x, pool.y, pool.members, pool.nonmembers, pool.population, canaries)


def test_canary_metrics_are_reported_apart_from_the_population_average(game: Game) -> None:
    """An attack that separates the canaries perfectly and nothing else: the canaries' AUC and
    TPR at low FPR are 1, the others' at chance; and the other way round."""
    pool = _with_canaries(game.pool)
    assert pool.canaries is not None
    truth = np.isin(pool.query, pool.members)
    canary = np.isin(pool.query, pool.canaries)
    noise = np.random.default_rng(0).random(len(pool.query))

    class Knowing:
        def __init__(self, on_canaries: bool) -> None:
            self.on_canaries = on_canaries

        def run(self, ctx: AttackContext) -> AttackOutput:
            np.testing.assert_array_equal(ctx.query, pool.query)
            separable = canary if self.on_canaries else ~canary
            scores = np.where(separable, 2.0 + truth, noise)
            return AttackOutput(scores=scores, threshold=2.5)

    register_attack("knows-canaries", lambda: Knowing(True))
    register_attack("knows-others", lambda: Knowing(False))
    try:
        names = ["knows-canaries", "knows-others"]
        metrics = run_attacks(
            TorchTarget(game.target), pool=pool, references=game.references, names=names
        )
    finally:
        del ATTACKS["knows-canaries"], ATTACKS["knows-others"]
    on_canaries, on_others = metrics["knows-canaries"], metrics["knows-others"]
    n = len(game.pool.members) - 20
    for m in (on_canaries, on_others):
        assert m.n_members == m.n_nonmembers == n  # the population average leaves them out
        assert m.canaries is not None
        assert m.canaries.n_members == m.canaries.n_nonmembers == 20
    assert on_canaries.canaries is not None and on_others.canaries is not None
    assert on_canaries.canaries.auc == 1.0 and on_canaries.canaries.tpr_at_0_1pct_fpr == 1.0
    assert on_canaries.auc < 0.75 and on_canaries.tpr_at_1pct_fpr < 0.2
    assert on_others.auc == 1.0 and on_others.tpr_at_1pct_fpr == 1.0
    assert on_others.canaries.auc < 0.75 and on_others.canaries.tpr_at_1pct_fpr < 0.5
    out = on_canaries.to_dict(roc_points=10)
    keys = {"auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "epsilon_lower_bound"}
    assert set(out["canaries"]) >= keys and out["canaries"]["auc"] == 1.0
    assert "roc" not in out["canaries"] and set(out["roc"]["canaries"]) == {"fpr", "tpr"}
    assert (
        "canaries"
        not in run_attacks(TorchTarget(game.target), **game.inputs(), names=["loss"])[
            "loss"
        ].to_dict()
    )


def test_canary_positions_are_checked(game: Game) -> None:
    pool = game.pool
    with pytest.raises(AttackError, match="members or non-members"):
        Pool(pool.x, pool.y, pool.members, pool.nonmembers, pool.population, pool.population[:2])
    with pytest.raises(AttackError, match="at least one member and one non-member"):
        Pool(pool.x, pool.y, pool.members, pool.nonmembers, pool.population, pool.members[:3])
    with pytest.raises(AttackError, match="distinct"):
        twice = np.concatenate([pool.members[:2], pool.members[:1], pool.nonmembers[:1]])
        Pool(pool.x, pool.y, pool.members, pool.nonmembers, pool.population, twice)
    with pytest.raises(AttackError, match="evaluation pair needs"):
        every = np.concatenate([pool.members, pool.nonmembers[:1]])
        Pool(pool.x, pool.y, pool.members, pool.nonmembers, pool.population, every)
