"""Configuration: built-in defaults, overlaid by a TOML file, overlaid by `--set section.key=value`.

Every key that exists has a default here, so a typo is an error instead of a silently ignored
setting, and the resolved configuration written to the run directory is complete.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError

Config = dict[str, dict[str, Any]]

DEFAULTS: Config = {
    "run": {
        "dataset": "mnist5k",
        "model": "cnn",
        "seed": 0,
        "data_root": "",
        "evaluate": "each",  # each | last | none
    },
    "data": {"members": 0.40, "nonmembers": 0.10, "population": 0.30, "public": 0.10, "test": 0.10},
    "model": {},  # extra keyword arguments for the model factory (e.g. width, hidden)
    "train": {"epochs": 15, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0},
    "train-ladp": {
        "epsilon": 3.0,
        "delta": 1e-5,
        "epochs": 30,
        "expected_batch_size": 250,
        "lr": 0.5,
        "momentum": 0.9,
        "clip_norm": 1.0,
        "accountant": "prv",
    },
    "prune": {"ratio": 0.5, "importance": "l2"},
    "quantize": {"per_channel": True, "calibration_samples": 256},
    "evaluate": {
        "attacks": ["loss", "confidence", "shadow"],
        "shadow_models": 4,
        "shadow_epochs": 15,
        "samples": 500,
        "delta": 1e-5,
    },
}

# Sections whose keys are free-form (passed through to a factory).
_OPEN_SECTIONS = {"model"}


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge(config, _read_toml(path), origin=str(path))
    for item in overrides or []:
        section, key, value = parse_override(item)
        _merge(config, {section: {key: value}}, origin="--set")
    return config


def _read_toml(path: Path) -> Config:
    if not path.is_file():
        raise PrivcompError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PrivcompError(f"config file {path} is not valid TOML: {exc}") from exc


def parse_override(item: str) -> tuple[str, str, Any]:
    """'train-ladp.epsilon=8' -> ('train-ladp', 'epsilon', 8.0); values are read as TOML."""
    name, sep, raw = item.partition("=")
    section, dot, key = name.strip().rpartition(".")
    if not sep or not dot or not section or not key:
        raise PrivcompError(f"--set expects section.key=value, got '{item}'")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words are strings: --set run.model=mlp
    return section, key, value


def _merge(config: Config, update: dict[str, Any], *, origin: str) -> None:
    for section, values in update.items():
        if section not in config:
            raise PrivcompError(f"{origin}: unknown config section '{section}'")
        if not isinstance(values, dict):
            raise PrivcompError(f"{origin}: '{section}' must be a table of settings")
        for key, value in values.items():
            if section not in _OPEN_SECTIONS:
                if key not in config[section]:
                    raise PrivcompError(f"{origin}: unknown config key '{section}.{key}'")
                value = _coerce(value, config[section][key], f"{section}.{key}", origin)
            config[section][key] = value


def _coerce(value: Any, default: Any, name: str, origin: str) -> Any:
    """Accept a value of the default's type (an int where a float is expected is widened)."""
    if isinstance(default, float) and type(value) in (int, float):
        return float(value)
    if type(value) is type(default):
        return value
    raise PrivcompError(f"{origin}: '{name}' expects a {type(default).__name__}, got {value!r}")


def to_toml(config: Config) -> str:
    """Write the resolved configuration (flat tables of scalars and lists) as TOML."""
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f'["{section}"]' if "-" in section else f"[{section}]")
        lines += [f"{key} = {_toml_value(v)}" for key, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
