"""The reference models' cache under references/: a folder is reused while the recipe recorded in
it matches, and its logits are computed once per query augmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from attacks.references import load_logits, reference_targets, save_logits, variant_logits
from attacks.signals import query_variants

REFERENCE_DIR = Path("references")
RECIPE = "recipe.json"


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
