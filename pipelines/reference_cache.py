"""The reference models' cache: a folder is reused while the recipe recorded in it matches, and
its logits are computed once per query augmentation.

By default a run's references live in its own references/ folder (retrained in place when the
recipe changes). With evaluate.reference_cache = DIR they live in DIR/<digest>/, the digest of
everything they depend on (the recipe record and the data they are trained and queried on), so
that run dirs with the same record share one set (a sweep's points). Such a folder is never
retrained for another record, and it is guarded by a blocking lock on its .lock file: of two
processes that need it at once, the second waits and then reuses what the first trained.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from attacks.references import load_logits, reference_targets, save_logits, variant_logits
from attacks.signals import query_variants

REFERENCE_DIR = Path("references")
RECIPE = "recipe.json"
LOCK_FILE = ".lock"


def read_recipe(directory: Path) -> Any:
    try:
        return json.loads((directory / RECIPE).read_text())
    except (OSError, ValueError):
        return None


def is_cached(directory: Path, recipe: dict[str, Any]) -> bool:
    return read_recipe(directory) == recipe and (directory / "membership.json").is_file()


def ensure_logits(directory: Path, augment: str, x: np.ndarray) -> None:
    if load_logits(directory, augment) is not None:
        return
    variants = query_variants(x, augment)
    logits = [variant_logits(t, variants) for t in reference_targets(directory)]
    save_logits(directory, augment, np.stack(logits))


def cache_root(setting: str, run_dir: Path) -> Path | None:
    """The shared cache named by evaluate.reference_cache (a relative path is taken from the run
    dir, so that a sweep folder can move), or None: the run dir's own references/."""
    if not setting:
        return None
    path = Path(setting)
    return path if path.is_absolute() else Path(os.path.normpath(run_dir / path))


def record_digest(record: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> str:
    """A digest of a cache record and of the arrays (data) it was made from."""
    digest = hashlib.sha256(
        json.dumps(record, sort_keys=True, default=_plain).encode()  # a dict's order is no key
    )
    for array in arrays:
        a = np.ascontiguousarray(array)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@contextmanager
def guarded(directory: Path, *, shared: bool) -> Iterator[None]:
    """Hold the folder's lock while its set is trained or read (shared folders only: a run's own
    references/ is covered by the run dir's lock). Blocking: a second process waits."""
    if not shared:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear(directory: Path, *, keep: Sequence[str] = (LOCK_FILE,)) -> None:
    """Remove what an incomplete attempt left in a folder (its lock file is kept: another
    process may be waiting on it)."""
    if not directory.exists():
        return
    for child in directory.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
