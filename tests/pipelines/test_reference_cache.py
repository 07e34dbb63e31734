"""evaluate.reference_cache: run dirs with the same reference record share one set (mirrors
included), and the folder's lock makes a second user wait for the first."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from pipelines.config import Config, load_config
from pipelines.progress import Reporter
from pipelines.reference_cache import cache_root, guarded, record_digest
from pipelines.runner import run_pipeline
from pipelines.settings.run import ModelSettings
from tests.conftest import TINY

SETTINGS = [
    *TINY,
    "run.model=mlp",
    'run.evaluate="last"',
    "evaluate.mirror=true",
    "evaluate.shadow_epochs=2",
    'evaluate.attacks=["loss", "lira"]',
    'prune.finetune="none"',
]


def config(*overrides: str) -> Config:
    loaded = load_config(None, [*SETTINGS, *overrides])
    return Config({**loaded.sections, "model": ModelSettings(values={"hidden": 32})})


def run(run_dir: Path, *overrides: str) -> str:
    log = io.StringIO()
    reporter = Reporter(Console(file=log, width=200))
    run_pipeline(["train", "prune"], config=config(*overrides), run_dir=run_dir, reporter=reporter)
    return log.getvalue()


def test_run_dirs_share_references_and_mirrors_like_their_own(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    own = run(tmp_path / "own")
    shared = f'evaluate.reference_cache="{cache}"'
    first = run(tmp_path / "a", shared)
    second = run(tmp_path / "b", shared)  # the same record: nothing trained
    other_ratio = run(tmp_path / "c", shared, "prune.ratio=0.3")
    assert "reference models (2" in own and "reference models (2" in first
    assert "reference models (2" not in second and "reusing" in second
    assert "reference models (2" not in other_ratio
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    for name in ("a", "b", "c"):
        assert not (tmp_path / name / "references").exists()
    mirrors = sorted(p.name for p in folder.iterdir() if p.name.startswith("mirror-"))
    assert len(mirrors) == 2 and all(m.startswith("mirror-prune-") for m in mirrors)
    # What the shared set gives is what the run dir's own gives (same seeds, same data).
    base_own = np.load(tmp_path / "own" / "references" / "logits-none.npy")
    np.testing.assert_allclose(np.load(folder / "logits-none.npy"), base_own)
    mirrored_own = np.load(tmp_path / "own" / "references" / "mirror-prune" / "logits-none.npy")
    assert any(np.allclose(np.load(folder / m / "logits-none.npy"), mirrored_own) for m in mirrors)
    attacks = [
        [
            row["attacks"]
            for row in json.loads((tmp_path / n / "summary.json").read_text())["stages"]
        ]
        for n in ("own", "a", "b")
    ]
    assert attacks[0] == attacks[1] == attacks[2]


def test_the_second_user_of_a_folder_waits_for_the_first(tmp_path: Path) -> None:
    folder = tmp_path / "refs" / "abc"
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait()
        with guarded(folder, shared=True):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with guarded(folder, shared=True):
        entered.set()
        time.sleep(0.3)  # the second would have entered by now without the lock
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
    assert (folder / ".lock").exists()


def test_the_cache_is_named_from_the_run_dir_and_by_the_record(tmp_path: Path) -> None:
    assert cache_root("", tmp_path) is None
    assert (
        cache_root("../../references", tmp_path / "s" / "runs" / "p")
        == tmp_path / "s" / "references"
    )
    assert cache_root(str(tmp_path / "x"), Path("elsewhere")) == tmp_path / "x"
    record = {"k": 2, "recipe": {"epochs": 3}}
    x = np.zeros((4, 2), dtype=np.float32)
    assert record_digest(record, [x]) == record_digest({"recipe": {"epochs": 3}, "k": 2}, [x])
    assert record_digest(record, [x]) != record_digest({**record, "k": 3}, [x])
    assert record_digest(record, [x]) != record_digest(record, [x + 1])


def test_a_run_dirs_own_references_take_no_lock(tmp_path: Path) -> None:
    with guarded(tmp_path / "refs", shared=False):  # the run dir's lock covers them
        pass
    assert not (tmp_path / "refs").exists()
