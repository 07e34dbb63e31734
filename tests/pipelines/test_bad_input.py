"""Bad input (DESIGN §8): one line on stderr naming the problem, a non-zero exit, and nothing that
was already in the run dir changed. The commands run in this process (typer's CliRunner) so that
the long list stays fast; tests/pipelines/test_cli.py runs the same wiring as a subprocess."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

from models.errors import ModelFileError
from models.io import ARCH, WEIGHTS, load_model, save_model
from models.zoo import build_model
from pipelines.cli import app
from pipelines.config import load_config
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from tests.conftest import TINY
from tests.pipelines.cli_testing import snapshot

BASE = [*TINY, 'run.evaluate="none"']


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished DP run: what a bad command must leave as it found it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    config = load_config(None, BASE)
    run_pipeline(["train-ladp"], config=config, run_dir=run_dir, reporter=Reporter())
    return run_dir


@pytest.fixture
def run_dir(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def refused(args: list[str], *, monkeypatch: pytest.MonkeyPatch, progress: int = 0) -> str:
    """The one error line of a command that must be refused as a user error (exit 2): all of
    stderr, or its last line after `progress` lines of work that ran before the problem."""
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == progress + 1 and lines[-1].startswith("error: "), result.stderr
    assert not any(line.startswith("error") for line in lines[:-1]), result.stderr
    return lines[-1]


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


# ---- `pipeline run`: settings -----------------------------------------------------------------

SETTING_CASES = [
    (["nosuch"], [], ["unknown stage 'nosuch'", "known: ", "train-ladp"]),
    (["train"], ["train.epoch=2"], ["unknown config key 'train.epoch'", "epochs, batch_size"]),
    (["train"], ["nosuch.key=1"], ["unknown config section 'nosuch'", "train-ladp"]),
    (["train"], ["run.model=nosuch"], ["unknown model 'nosuch'", "cnn, mlp, resnet18"]),
    (["train"], ["run.dataset=nosuch"], ["unknown dataset 'nosuch'", "digits", "csv"]),
    (["train"], ['evaluate.attacks=["nosuch"]'], ["unknown attack(s) nosuch", "lira"]),
    (["train", "prune"], ["prune.finetune=nosuch"], ["prune.finetune must be one of"]),
    (["train-ladp"], ["train-ladp.epsilon=0"], ["epsilon must be a finite number > 0"]),
    (["train-ladp"], ["train-ladp.epsilon=-1"], ["epsilon must be a finite number > 0"]),
    (["train-ladp"], ["train-ladp.epsilon=inf"], ["epsilon must be a finite number > 0"]),
    (["train-dpsgd"], ["train-dpsgd.epsilon=0"], ["epsilon must be a finite number > 0"]),
    (["train-ladp"], ["train-ladp.delta=0"], ["delta must be in (0, 1/n)"]),
    (["train-ladp"], ["train-ladp.delta=-1e-5"], ["delta must be in (0, 1/n)"]),
    # digits: 719 members, so 1/n = 0.00139
    (["train-ladp"], ["train-ladp.delta=0.0014"], ["delta must be in (0, 1/n)", "n = 719"]),
    (["train-dpsgd"], ["train-dpsgd.delta=0.5"], ["delta must be in (0, 1/n)"]),
    (
        ["train-ladp", "prune"],
        ['prune.finetune="ladp"', "prune.finetune_epsilon=0"],
        ["must be > 0"],
    ),
    (["train-ladp"], ["budget.epsilon=-1"], ["budget.epsilon must be >= 0"]),
    (["train-ladp"], ["budget.delta=1"], ["budget.delta must be in [0, 1)"]),
    (["train"], ["run.dataset=mnist"], ["dataset 'mnist' is read from a local folder"]),
    (["train"], ["run.dataset=mnist", 'run.data_root="/nonexistent"'], ["/nonexistent/MNIST/raw"]),
    (["train"], ["run.dataset=csv", 'run.data_root="/nonexistent"'], ["/nonexistent/data.csv"]),
    (["train"], ["run.dataset=imagefolder", 'run.data_root="/nonexistent"'], ["per class"]),
    (["train"], ["model.width=16", "train-ladp.epsilon=1"], ["holds a run with a different"]),
    # Found by the review: each was refused only after a stage had run (or not in one line).
    (["train-ladp"], ["model.width=0"], ["cannot build model 'cnn'", "'width': 0"]),
    (["train"], ["model.nokw=3"], ["cannot build model 'cnn'", "nokw"]),
    (["train-ladp", "evaluate"], ["evaluate.samples=5"], ["too few members/non-members"]),
    (["train-ladp", "evaluate"], ["data.population=0.0"], ["the attacks need a population"]),
    (["train"], ["run.seed=99999999999999999999"], ["run.seed must be in [0, 2^63)"]),
    (["train"], ["evaluate.attacks=[1]"], ["'evaluate.attacks' expects a list of str"]),
    (["train-ladp"], ["train-ladp.lr=inf"], ["lr, weight_decay and tau must be finite"]),
    (["train", "distill"], ["distill.lr=inf"], ["must be finite numbers"]),
    (["train"], ["data.canaries=-1"], ["data.canaries must be >= 0"]),
    (["train"], ["data.canaries=300"], ["data.canaries = 300 needs 600 population", "at most"]),
    (["train"], ["data.canaries=2", "data.population=0.0"], ["the population split has 0"]),
    (["train"], ['train.defense="nosuch"'], ["train.defense must be one of", "l2", "mixup-mmd"]),
    (["train"], ["defense.l2.weight=-1"], ["[defense.l2]", "weight"]),
    (["train"], ["defense.dropout.rate=1.5"], ["[defense.dropout]", "rate"]),
    (["train"], ["defense.trust-score-masking.k=0"], ["[defense.trust-score-masking]", "k must"]),
    (["train"], ["defense.l2.lambda=1"], ["unknown config key 'defense.l2.lambda'", "weight"]),
]


def test_a_defense_without_the_train_stage_is_refused(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(run_dir)
    args = ["run", "train-ladp", "--defense", "l2", "--run-dir", str(run_dir), *sets(BASE)]
    assert "--defense applies to the train stage" in refused(args, monkeypatch=monkeypatch)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(("stages", "settings", "words"), SETTING_CASES)
def test_bad_settings_change_nothing(
    run_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    stages: list[str],
    settings: list[str],
    words: list[str],
) -> None:
    before = snapshot(run_dir)
    line = refused(
        ["run", *stages, "--run-dir", str(run_dir), *sets([*BASE, *settings])],
        monkeypatch=monkeypatch,
    )
    assert all(word in line for word in words), line
    assert snapshot(run_dir) == before


def test_a_config_file_with_a_syntax_error_names_its_line(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[run]\ndataset = "digits"\nmodel = \n')
    before = snapshot(run_dir)
    args = ["run", "train", "--config", str(config), "--run-dir", str(run_dir)]
    line = refused(args, monkeypatch=monkeypatch)
    assert f"config file {config} is not valid TOML" in line and "line 3" in line
    missing = refused(
        [*args[:3], str(tmp_path / "nosuch.toml"), *args[4:]], monkeypatch=monkeypatch
    )
    assert "config file not found" in missing
    assert snapshot(run_dir) == before


def test_a_run_dir_that_cannot_be_created(monkeypatch: pytest.MonkeyPatch) -> None:
    # /proc refuses new folders even to root (CI runs as root: a chmod would not stop it).
    line = refused(
        ["run", "train", "--run-dir", "/proc/privcomp-run", *sets(BASE)], monkeypatch=monkeypatch
    )
    assert "cannot write to /proc/privcomp-run" in line


# ---- `pipeline run`: data from a local folder -------------------------------------------------


def csv_rows(rows: list[str]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        root.mkdir()
        (root / "data.csv").write_text("label,a,b,c\n" + "".join(f"{r}\n" for r in rows))

    return write


def two_classes(rows: list[str]) -> list[str]:
    return [*rows, *(f"{i % 2},0.1,0.2,0.3" for i in range(40))]


def images(sizes: list[tuple[int, int]]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        for i, size in enumerate(sizes):
            folder = root / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros(size[::-1], dtype=np.uint8)).save(folder / f"{i}.png")

    return write


def broken_image(root: Path) -> None:
    images([(8, 8)] * 4)(root)
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG not really")


DATA_CASES = [
    ("csv", csv_rows(two_classes(["1,nan,0.2,0.3"])), "line 2: NaN or infinite value"),
    ("csv", csv_rows(two_classes(["0,0.1,inf,0.3"])), "line 2: NaN or infinite value"),
    ("csv", csv_rows(two_classes(["0,0.1,0.2"])), "line 2 has 3 values, the header 4"),
    ("csv", csv_rows(two_classes(["0,0.1,x,0.3"])), "line 2: could not convert"),
    ("csv", csv_rows(two_classes(["-1,0.1,0.2,0.3"])), "label '-1' is not one of 0, 1"),
    ("csv", csv_rows([f"3,{i},0.2,0.3" for i in range(40)]), "one class only (label 3)"),
    ("csv", csv_rows([]), "holds no examples"),
    ("imagefolder", images([(8, 8), (8, 8), (8, 9), (8, 8)]), "images must share one size"),
    ("imagefolder", broken_image, "cannot read"),
    ("imagefolder", lambda root: root.mkdir(), "Couldn't find any class folder"),
]


@pytest.mark.parametrize(("dataset", "write", "message"), DATA_CASES)
def test_bad_data_is_named_before_anything_runs(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dataset: str,
    write: Callable[[Path], None],
    message: str,
) -> None:
    write(tmp_path / "data")
    settings = [*BASE, f"run.dataset={dataset}", f'run.data_root="{tmp_path / "data"}"']
    before = snapshot(run_dir)
    line = refused(
        ["run", "train", "--run-dir", str(run_dir), *sets(settings)], monkeypatch=monkeypatch
    )
    assert message in line and f"dataset '{dataset}'" in line, line
    assert snapshot(run_dir) == before


def test_good_local_data_loads(tmp_path: Path) -> None:
    from pipelines.data import load_dataset

    csv_rows(two_classes([]))(tmp_path / "table")
    table = load_dataset("csv", root=tmp_path / "table")
    assert table.x.shape == (40, 1, 1, 3) and table.num_classes == 2
    images([(12, 10)] * 6)(tmp_path / "images")
    folder = load_dataset("imagefolder", root=tmp_path / "images")
    assert folder.x.shape == (6, 1, 10, 12) and folder.x.dtype == np.float32
    assert folder.y.tolist() == [0, 0, 0, 1, 1, 1]


# ---- model files --------------------------------------------------------------------------------


class Payload:
    """A pickle that creates a file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def live_pickle(tmp_path: Path) -> tuple[bytes, Path]:
    """A payload shown to run when unpickled, and the marker its copy in the test would make."""
    probe = tmp_path / "probe-ran"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()  # the payload is live: a loader that unpickles it would run it
    marker = tmp_path / "payload-ran"
    return pickle.dumps(Payload(marker)), marker


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    arch = {"name": "cnn", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "width": 8}}
    model = build_model("cnn", in_shape=(1, 8, 8), num_classes=10, width=8)
    save_model(model, tmp_path / "model", arch=arch)
    return tmp_path / "model"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def other_widths(directory: Path) -> None:
    model = build_model("cnn", in_shape=(1, 8, 8), num_classes=10, width=4)
    save_model(model, directory / "other", arch={"name": "cnn", "kwargs": {"in_shape": [1, 8, 8]}})
    (directory / "other" / WEIGHTS).replace(directory / WEIGHTS)


def edit_arch(old: str, new: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        path = directory / ARCH
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))

    return edit


def drop_tensor(directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / WEIGHTS))
    del state["0.bias"]
    save_file(state, str(directory / WEIGHTS))


MODEL_CASES = [
    (lambda d: (d / WEIGHTS).unlink(), f"{WEIGHTS}: no such file"),
    (lambda d: (d / ARCH).unlink(), f"{ARCH}: no such file"),
    (lambda d: (d / WEIGHTS).write_bytes(b""), "is not a safetensors weights file"),
    (lambda d: truncate(d / WEIGHTS), "is not a safetensors weights file"),
    (lambda d: (d / WEIGHTS).write_text("<html>not weights</html>"), "not a safetensors"),
    (lambda d: (d / ARCH).write_text("{not json"), "is not an architecture record"),
    (lambda d: (d / ARCH).write_text("[1, 2]"), "needs name and kwargs"),
    (
        edit_arch('"cnn"', '"nosuch"'),
        "unknown model 'nosuch' (known: cnn, mlp, resnet18, stacked, trust-masked)",
    ),
    (other_widths, "tensor '0.weight' has shape (4, 1, 3, 3), but arch.json gives (8, 1, 3, 3)"),
    (drop_tensor, "does not hold the tensors of arch.json: no '0.bias'"),
    (edit_arch('"in_features": 64', '"in_features": 32'), "shape (128, 64)"),
    (edit_arch('"out_channels": 8', '"out_channels": 6'), "tensor '0.weight'"),
]


@pytest.mark.parametrize(("damage", "message"), MODEL_CASES)
def test_a_damaged_model_folder_is_one_named_error(
    model_dir: Path, damage: Callable[[Path], None], message: str
) -> None:
    damage(model_dir)
    with pytest.raises(ModelFileError) as caught:
        load_model(model_dir)
    text = str(caught.value)
    assert message in text and str(model_dir) in text and "\n" not in text, text


def test_widths_that_fit_each_module_but_not_each_other(model_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    # The first conv and its norm narrowed together: each tensor fits arch.json, the next conv
    # still expects 8 input channels.
    edit_arch('"out_channels": 8', '"out_channels": 4')(model_dir)
    edit_arch('"num_channels": 8', '"num_channels": 4')(model_dir)
    edit_arch('"num_groups": 4', '"num_groups": 2')(model_dir)
    state = load_file(str(model_dir / WEIGHTS))
    for key in ("0.weight", "0.bias", "1.weight", "1.bias"):
        state[key] = state[key][:4].contiguous()
    save_file(state, str(model_dir / WEIGHTS))
    with pytest.raises(ModelFileError, match="arch.json and model.safetensors do not fit"):
        load_model(model_dir)


def test_a_pickle_where_weights_belong_is_never_run(model_dir: Path, tmp_path: Path) -> None:
    payload, marker = live_pickle(tmp_path)
    (model_dir / WEIGHTS).write_bytes(payload)
    with pytest.raises(ModelFileError, match="is not a safetensors weights file"):
        load_model(model_dir)
    torch.save({"weights": Payload(marker)}, model_dir / WEIGHTS)  # torch's pickle-in-zip too
    with pytest.raises(ModelFileError, match="is not a safetensors weights file"):
        load_model(model_dir)
    assert not marker.exists()


def test_damaged_outputs_of_a_dp_stage_are_not_silently_replaced(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truncate(run_dir / "01-train-ladp" / WEIGHTS)
    before = snapshot(run_dir)
    # Found when the stage comes up (after "run directory: ..." and "[1/1] train-ladp"): whether
    # a stage can be reused depends on what the stages before it give it.
    line = refused(
        ["run", "train-ladp", "--run-dir", str(run_dir), *sets(BASE)],
        monkeypatch=monkeypatch,
        progress=2,
    )
    assert "already released a DP model" in line and "--rerun-dp" in line
    assert snapshot(run_dir) == before


def test_a_damaged_run_record_is_named(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (run_dir / "manifest.json").write_text('{"stages": [')
    before = snapshot(run_dir)
    line = refused(
        ["run", "train-ladp", "--run-dir", str(run_dir), *sets(BASE)], monkeypatch=monkeypatch
    )
    assert f"{run_dir / 'manifest.json'} is damaged (not JSON" in line
    assert snapshot(run_dir) == before


# ---- `pipeline inspect FILE.onnx` and `pipeline audit RUN_DIR` --------------------------------


def small_onnx() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_onnx(kind: str, path: Path, tmp_path: Path) -> Path | None:
    """A bad ONNX file of one kind; for "pickle", the marker its payload would create."""
    good = small_onnx().SerializeToString()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "foreign":
        path.write_text("col1,col2\n1,2\n")
    elif kind == "pickle":
        payload, marker = live_pickle(tmp_path)
        path.write_bytes(payload)
        return marker
    elif kind == "invalid-graph":
        model = small_onnx()
        model.graph.node[0].op_type = "NoSuchOp"
        path.write_bytes(model.SerializeToString())
    return None


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "truncated", "foreign", "pickle", "invalid-graph"]
)
def test_inspect_refuses_a_bad_onnx_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "model.onnx"
    marker = write_onnx(kind, path, tmp_path)
    line = refused(["inspect", str(path)], monkeypatch=monkeypatch)
    expected = "no such file" if kind == "missing" else "invalid ONNX model"
    assert expected in line and str(path) in line
    assert marker is None or not marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: shutil.rmtree(d), "is not a privcomp run directory"),
        (lambda d: (d / "ledger.json").write_text("{"), "ledger.json is damaged (not JSON"),
        (lambda d: (d / "config.toml").write_text("[run\n"), "is not valid TOML"),
    ],
)
def test_audit_refuses_a_damaged_run_dir(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None], message: str
) -> None:
    damage(run_dir)
    before = snapshot(run_dir)
    args = ["audit", str(run_dir), "--trials", "4", "--executor", "serial"]
    assert message in refused(args, monkeypatch=monkeypatch)
    assert snapshot(run_dir) == before
