"""`pipeline run train --defense NAME`: the defense runs, what it releases travels with the
artifact (compression, ONNX), the attacks fit that release, and the references are trained with
the same defense. None of it is DP: ε stays null."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest

from attacks.suite import attacks_for_release
from attacks.target import OnnxTarget
from models.io import load_model, read_arch
from pipelines import evaluation
from pipelines.config import Config, load_config
from pipelines.cost import measured
from pipelines.data import load_dataset
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from pipelines.settings import SECTIONS, register_section
from pipelines.settings.defenses import defense_section
from privacy.defenses import DEFENSES, register_defense
from privacy.defenses.l2 import L2Defense
from tests.conftest import TINY

MASKED = [
    *TINY,
    'train.defense="trust-score-masking"',
    "defense.trust-score-masking.index_size=60",
    'evaluate.attacks=["loss", "lira"]',
]


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    config = load_config(None, MASKED)
    run_dir = tmp_path_factory.mktemp("defended") / "run"
    stages = ["train", "prune", "export"]
    summary = run_pipeline(stages, config=config, run_dir=run_dir, reporter=Reporter())
    return run_dir, summary, config


def test_a_defended_run_says_which_defense_and_stays_not_private(
    masked_run: tuple[Path, dict, Config],
) -> None:
    run_dir, summary, _ = masked_run
    for row in summary["stages"]:
        assert row["privacy"]["epsilon"] is None
        assert row["privacy"]["defense"] == "trust-score-masking"
        assert row["privacy"]["release"] == "masked-scores"
    ledger = json.loads((run_dir / "ledger.json").read_text())
    assert ledger["stages"][0]["mechanism"] == "adam with defense 'trust-score-masking', no DP"
    stage = json.loads((run_dir / "01-train" / "metrics.json").read_text())["stage"]
    assert stage["defense"]["settings"]["index_size"] == 60
    assert stage["cost"]["seconds"] > 0 and stage["cost"]["peak_memory_bytes"] > 0


def test_a_masked_release_is_attacked_with_the_label_only_attack_too(
    masked_run: tuple[Path, dict, Config],
) -> None:
    _, summary, _ = masked_run
    assert set(summary["stages"][0]["attacks"]) == {"loss", "lira", "gap"}


def test_the_references_are_trained_with_the_same_defense(
    masked_run: tuple[Path, dict, Config],
) -> None:
    run_dir, _, config = masked_run
    record = json.loads((run_dir / "references" / "recipe.json").read_text())
    assert record["recipe"]["defense"] == "trust-score-masking"
    assert record["reference_recipe"] == "target (train, defense trust-score-masking)"
    # Each reference is the released kind of module: masked, with its own public index.
    assert read_arch(run_dir / "references" / "ref-00")["name"] == "trust-masked"


def test_the_mask_travels_into_the_onnx_file(masked_run: tuple[Path, dict, Config]) -> None:
    run_dir, _, config = masked_run
    onnx_path = next((run_dir / "03-export").glob("*.onnx"))
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["privcomp.defense"] == "trust-score-masking"
    assert meta["privcomp.release"] == "masked-scores"
    assert meta["privcomp.epsilon"] is None
    data = load_dataset("digits")
    probs = _softmax(OnnxTarget(onnx_path).predict_logits(data.x[:200]))
    one_hot = np.isclose(probs.max(axis=1), 1.0, atol=1e-6)
    assert 0 < one_hot.sum() < len(probs)  # some answers masked, not all
    for stage in ("01-train", "02-prune"):
        model, _ = load_model(run_dir / stage)
        assert type(model).__name__ == "TrustMasked"


def test_pruning_fine_tunes_the_base_of_a_masked_model(
    masked_run: tuple[Path, dict, Config],
) -> None:
    """The public fine-tune trains the base, not through the mask (which has no gradient on
    masked answers): the pruned model keeps most of its accuracy."""
    _, summary, _ = masked_run
    accuracy = {row["name"]: row["utility"]["test_accuracy"] for row in summary["stages"]}
    assert accuracy["prune"] > 0.6 and accuracy["prune"] > accuracy["train"] - 0.3


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_attacks_fit_the_release() -> None:
    asked = ["loss", "lira", "shadow"]
    assert attacks_for_release(asked, "scores") == asked
    assert attacks_for_release(asked, "masked-scores") == [*asked, "gap"]
    assert attacks_for_release(asked, "labels") == ["gap"]
    assert attacks_for_release([*asked, "gap"], "labels") == ["gap"]


def test_measured_cost_sees_the_memory_the_work_took() -> None:
    with measured() as cost:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert cost.seconds >= 0
    if cost.peak_memory_scope == "work":
        assert 48 * 2**20 <= cost.peak_memory_bytes <= 256 * 2**20


@dataclasses.dataclass(frozen=True)
class _LabelsOnly(L2Defense):
    """A test defense whose deployment answers with labels only."""

    name: ClassVar[str] = "test-labels-only"
    release: ClassVar[str] = "labels"


@pytest.fixture
def labels_only_defense() -> Iterator[None]:
    register_defense(_LabelsOnly)
    section = defense_section(_LabelsOnly)
    register_section(section)
    try:
        yield
    finally:
        del DEFENSES[_LabelsOnly.name], SECTIONS[section.name]


def test_a_labels_only_release_is_attacked_through_its_labels(
    tmp_path: Path, labels_only_defense: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    queried: list[str] = []
    original = evaluation.run_attacks

    def spy(target: object, **kwargs: object) -> object:
        queried.append(type(target).__name__)
        return original(target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluation, "run_attacks", spy)
    settings = [*TINY, 'train.defense="test-labels-only"', 'evaluate.attacks=["loss", "lira"]']
    summary = run_pipeline(
        ["train"], config=load_config(None, settings), run_dir=tmp_path / "r", reporter=Reporter()
    )
    (row,) = summary["stages"]
    assert row["privacy"]["release"] == "labels"
    assert set(row["attacks"]) == {"gap"}  # the score attacks cannot see scores
    assert queried == ["LabelOnlyTarget"]
