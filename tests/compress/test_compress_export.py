"""ONNX export: dynamic batch, torch parity within 1e-4, metadata, one self-contained file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from compress_testing import DIGITS_SHAPE, MNIST_SHAPE, make_model, random_images, torch_logits
from torch import nn

from compress.export import (
    ONNX_FILE,
    ExportData,
    ExportResult,
    ExportSettings,
    export,
    export_onnx,
    write_metadata,
)
from compress.prune import prune_model
from models.errors import ModelFileError
from models.io import save_model
from models.onnx_io import load_session, read_metadata, run_session

METADATA = {"epsilon": "3.0", "delta": "1e-05", "stages": "train-ladp,prune"}


def assert_matches_torch(
    onnx_out: np.ndarray, torch_out: np.ndarray, tolerance: float = 1e-4
) -> None:
    """export_onnx's own contract: max |ONNX - torch| <= tolerance x max(1, largest |logit|).
    The backends sum float32 in different orders, so the error grows with the logits (~7
    significant digits); an absolute bound alone would fail on a model with large logits."""
    scale = max(1.0, float(np.abs(torch_out).max()))
    assert onnx_out.shape == torch_out.shape
    assert float(np.abs(onnx_out - torch_out).max()) <= tolerance * scale


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ExportResult]:
    """A pruned cnn (GroupNorm, Flatten: the shapes that make export hard) at mnist size."""
    model, _ = make_model("cnn", MNIST_SHAPE)
    prune_model(model, torch.from_numpy(random_images(2, MNIST_SHAPE)))
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    result = export_onnx(
        model,
        path,
        example_input=torch.from_numpy(random_images(2, MNIST_SHAPE)),
        check_inputs=random_images(16, MNIST_SHAPE, seed=1),
        metadata=METADATA,
    )
    return model, result


@pytest.mark.parametrize("batch", [1, 37])
def test_onnx_matches_torch_at_any_batch_size(
    exported: tuple[nn.Module, ExportResult], batch: int
) -> None:
    model, result = exported
    x = random_images(batch, MNIST_SHAPE, seed=batch)
    out = run_session(load_session(result.path), x)
    assert out.shape == (batch, 10)
    assert_matches_torch(out, torch_logits(model, x))


def test_export_records_its_check(exported: tuple[nn.Module, ExportResult]) -> None:
    assert 0.0 <= exported[1].max_abs_diff <= 1e-4 * exported[1].logit_scale


def test_names_dynamic_batch_and_metadata(exported: tuple[nn.Module, ExportResult]) -> None:
    proto = onnx.load(str(exported[1].path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic, not fixed
    props = {p.key: p.value for p in proto.metadata_props}
    assert METADATA.items() <= props.items()


def test_single_file_without_build_paths(exported: tuple[nn.Module, ExportResult]) -> None:
    path = exported[1].path
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no external data, no temp
    assert b"site-packages" not in path.read_bytes()  # exporter stack traces stripped


def test_corrupt_onnx_file_is_a_model_file_error(
    exported: tuple[nn.Module, ExportResult], tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported[1].path.read_bytes()[:5000])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    for bad in (truncated, garbage):
        with pytest.raises(ModelFileError, match="invalid ONNX model"):
            load_session(bad)


def test_mismatch_above_tolerance_raises_and_keeps_existing_file(tmp_path: Path) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous good model")
    with pytest.raises(ValueError, match="differs from torch"):
        export_onnx(
            model,
            path,
            example_input=torch.zeros(1, *DIGITS_SHAPE),  # batch 1 must still export dynamically
            check_inputs=random_images(4, DIGITS_SHAPE),
            tolerance=-1.0,  # nothing can pass
        )
    assert path.read_bytes() == b"previous good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_batch_one_example_exports_dynamic_batch(tmp_path: Path) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    model.train()
    result = export_onnx(
        model,
        tmp_path / "m.onnx",
        example_input=torch.zeros(1, *DIGITS_SHAPE),
        check_inputs=random_images(5, DIGITS_SHAPE),
    )
    assert run_session(load_session(result.path), random_images(3, DIGITS_SHAPE)).shape == (3, 10)
    assert model.training  # mode restored after the eval-mode export


def test_metadata_computed_from_the_files_own_outputs(tmp_path: Path) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    x = random_images(6, DIGITS_SHAPE)
    seen: list[np.ndarray] = []

    def from_outputs(outputs: np.ndarray) -> dict[str, str]:
        seen.append(outputs)
        return {"privcomp.rows": str(len(outputs))}

    result = export_onnx(
        model,
        tmp_path / "m.onnx",
        example_input=torch.from_numpy(x[:2]),
        check_inputs=x,
        metadata={"fixed": "1"},
        metadata_from_outputs=from_outputs,
    )
    assert result.outputs is not None
    np.testing.assert_array_equal(seen[0], result.outputs)
    assert_matches_torch(result.outputs, torch_logits(model, x))
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props == {"fixed": "1", "privcomp.rows": "6"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_tolerance_scales_with_the_logits_but_still_catches_a_wrong_model(tmp_path: Path) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    with torch.no_grad():
        model[-1].weight.mul_(1e4)  # logits in the thousands: float32 rounding grows with them
    x = random_images(16, DIGITS_SHAPE)
    result = export_onnx(
        model, tmp_path / "big.onnx", example_input=torch.from_numpy(x[:2]), check_inputs=x
    )
    assert result.logit_scale > 1e3
    assert result.max_abs_diff <= 1e-4 * result.logit_scale
    small, _ = make_model("mlp", DIGITS_SHAPE)
    assert (
        export_onnx(
            small, tmp_path / "small.onnx", example_input=torch.from_numpy(x[:2]), check_inputs=x
        ).logit_scale
        == 1.0
    )  # ordinary logits: the bound is the absolute 1e-4


def test_inspect_of_a_corrupt_onnx_file_is_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import EXIT_USER_ERROR, app

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    result = CliRunner().invoke(app, ["inspect", str(garbage)])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid ONNX model"), lines


def test_export_transform_reads_a_model_folder_and_records_its_check(tmp_path: Path) -> None:
    model, arch = make_model("cnn", DIGITS_SHAPE)
    save_model(model, tmp_path / "model", arch=arch)
    x = random_images(8, DIGITS_SHAPE)
    settings = ExportSettings(tolerance=1e-3)
    artifact = export(
        tmp_path / "model",
        tmp_path / "out",
        settings=settings,
        data=ExportData(example=x[:2], check=x),
        metadata_from_outputs=lambda logits: {"rows": str(len(logits))},
    )
    assert artifact.path == tmp_path / "out" / ONNX_FILE
    assert_matches_torch(run_session(load_session(artifact.path), x), torch_logits(model, x))
    assert read_metadata(artifact.path)["rows"] == "8"  # computed on data.check
    record = artifact.record()
    assert record["settings"] == {"tolerance": 1e-3}
    assert 0 <= record["max_abs_diff"] <= 1e-3 * record["logit_scale"]


def test_write_metadata_adds_to_what_the_file_carries(tmp_path: Path) -> None:
    model, _ = make_model("mlp", DIGITS_SHAPE)
    x = random_images(4, DIGITS_SHAPE)
    path = export_onnx(
        model,
        tmp_path / "m.onnx",
        example_input=torch.from_numpy(x[:2]),
        check_inputs=x,
        metadata={"kept": "1", "changed": "old"},
    ).path
    write_metadata(path, {"changed": "new", "added": "2"})
    assert read_metadata(path) == {"kept": "1", "changed": "new", "added": "2"}
