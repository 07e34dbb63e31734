"""What an attack queries: anything that maps inputs to logits, so the shipped ONNX file is attacked
exactly as it will run, and a torch model during training stages. A target that answers with
labels only (LabelTarget) can still be attacked by the label-only attack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from attacks.errors import AttackError


@runtime_checkable
class Target(Protocol):
    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for float32 inputs (N, C, H, W)."""
        ...


@runtime_checkable
class LabelTarget(Protocol):
    """A deployment that answers with the predicted class only (label-only attacks)."""

    def predict_labels(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes (N,) for float32 inputs (N, C, H, W)."""
        ...


class LabelOnlyTarget:
    """Wraps a Target so that only its predicted labels are visible (an API that hides scores)."""

    def __init__(self, target: Target) -> None:
        self._target = target

    def predict_labels(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._target.predict_logits(x).argmax(axis=1))


class TorchTarget:
    def __init__(self, model: nn.Module, *, batch_size: int = 512) -> None:
        self.model = model
        self.batch_size = batch_size

    @torch.no_grad()
    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = np.asarray(x, dtype=np.float32)
        chunks = [
            self.model(torch.as_tensor(x[i : i + self.batch_size], device=device))
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(x), self.batch_size)
        ]
        return _checked(np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32))


class OnnxTarget:
    """An onnxruntime session on a file that has passed the full ONNX check."""

    def __init__(self, path: Path, *, batch_size: int = 512) -> None:
        from models.onnx_io import load_session  # onnxruntime only where it is used

        path = Path(path)
        if not path.is_file():
            raise AttackError(f"ONNX model not found: {path}")
        self.path = path
        self.batch_size = batch_size
        self.session = load_session(path)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        from models.onnx_io import run_session

        x = np.asarray(x, dtype=np.float32)
        return _checked(run_session(self.session, x, batch_size=self.batch_size))


def _checked(logits: np.ndarray) -> np.ndarray:
    # A broken artifact (e.g. a bad quantization) must not be scored as if it were a model.
    if not np.isfinite(logits).all():
        raise AttackError("target model produced NaN or infinite logits")
    return logits
