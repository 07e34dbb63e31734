"""Loading ONNX safely: every file is checked in full before onnxruntime sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from models.errors import ModelFileError


def check_onnx(path: Path) -> onnx.ModelProto:
    """Load and fully check an ONNX file; a corrupt or invalid file is a one-line error."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises several unrelated types for bad files
        raise ModelFileError(f"invalid ONNX model {path}: {exc}".splitlines()[0]) from exc
    return model


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of a fully checked ONNX file, in file order."""
    return {p.key: p.value for p in check_onnx(path).metadata_props}


def load_session(path: Path) -> ort.InferenceSession:
    check_onnx(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_session(
    session: ort.InferenceSession, x: np.ndarray, *, batch_size: int = 512
) -> np.ndarray:
    """Logits for x (float32, N x C x H x W), in batches."""
    name = session.get_inputs()[0].name
    chunks = [
        session.run(None, {name: x[i : i + batch_size].astype(np.float32)})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)
