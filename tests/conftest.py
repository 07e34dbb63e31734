"""Shared fixtures: tiny configurations that make every pipeline test take seconds."""

from __future__ import annotations

import pytest
import torch

from pipelines.config import Config, load_config

# One thread: on a shared 2-core machine two torch threads per process were measured 5-16x
# slower than one (spinning OpenMP workers fight over the cores).
torch.set_num_threads(1)

TINY = [
    "run.dataset=digits",
    "run.model=cnn",
    "model.width=16",
    "model.hidden=128",
    "train.epochs=3",
    "train-ladp.epochs=2",
    "train-ladp.expected_batch_size=64",
    "train-ladp.epsilon=4.0",
    "train-ladp.delta=1e-4",
    "train-dpsgd.epochs=2",
    "train-dpsgd.expected_batch_size=64",
    "train-dpsgd.epsilon=4.0",
    "train-dpsgd.delta=1e-4",
    "quantize.calibration_samples=32",
    "evaluate.shadow_models=2",
    "evaluate.shadow_epochs=3",
    "evaluate.samples=60",
    'run.executor="serial"',
]


@pytest.fixture
def tiny_config() -> Config:
    return load_config(None, TINY)
