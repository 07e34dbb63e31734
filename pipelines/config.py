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
from privacy.search import is_candidate_list

Config = dict[str, dict[str, Any]]

# Shared by [train-ladp] and [train-dpsgd], so that the two compare at equal settings.
_DP_TRAINING: dict[str, Any] = {
    "epsilon": 3.0,
    "delta": 1e-5,
    "epochs": 30,
    "expected_batch_size": 250,
    # Chosen at epsilon 3 by training on seed 0's non-members ∪ population (never the default
    # run's members) and scoring on the public split (README, BENCHMARKS.md accuracy section).
    "lr": 0.1,
    "momentum": 0.5,
    "clip_norm": 1.0,
    "accountant": "prv",
}

DEFAULTS: Config = {
    "run": {
        "dataset": "mnist5k",
        "model": "cnn",
        "seed": 0,
        "data_root": "",
        "evaluate": "each",  # each | last | none
        # DP noise and Poisson sampling from the seed instead of fresh OS entropy: for
        # experiments only; every artifact then says that ε does not hold against the seed.
        "reproducible_noise": False,
    },
    "data": {"members": 0.40, "nonmembers": 0.10, "population": 0.30, "public": 0.10, "test": 0.10},
    "model": {},  # extra keyword arguments for the model factory (e.g. width, hidden)
    "train": {"epochs": 15, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0},
    "train-ladp": {
        **_DP_TRAINING,
        "optimizer": "sgd",  # sgd | adam
        # matched (per-layer clip norms from public gradient norms, summing to clip_norm in
        # quadrature) | uniform (clip_norm per layer, equal weights) | utility | protect
        "allocation": "matched",
        "tau": 1.0,  # softmax temperature of the allocation
        "sensitive_fraction": 0.5,  # utility / protect: top fraction clipped at clip_sensitive
        "clip_sensitive": 1.0,
        "clip_other": 5.0,
        "fisher_every": 100,  # re-measure sensitivities every K steps
        "fisher_samples": 256,  # public examples per measurement
        "fast_path": True,  # exact per-example clipping from activations (Linear/Conv2d/GroupNorm)
    },
    # The DP-SGD baseline: the same keys and values as [train-ladp] (flat clipping only).
    "train-dpsgd": dict(_DP_TRAINING),
    # A private hyper-parameter search (Papernot & Steinke 2022) runs when a searchable key of
    # [train-ladp] or [train-dpsgd] holds a list of candidates (lr = [0.05, 0.1]) or, for lr,
    # the word "search". The number of repetitions K: a truncated negative binomial of shape η
    # (0: logarithmic, the cheapest; 1: geometric) or Poisson (may release an untrained model
    # when K = 0), with this mean.
    "search": {"distribution": "negative-binomial", "mean": 3.0, "shape": 0.0},
    "prune": {
        "ratio": 0.5,
        "importance": "l2",  # l1 | l2 | lamp | fpgm (weights only) | taylor (public split)
        "global_pruning": False,  # rank all layers together (each keeps >= 10% of channels)
        "iterative_steps": 1,  # prune in this many steps, fine-tuning after each
        "taylor_samples": 256,  # public examples whose gradients score channels (taylor)
        # Pruning a DP model costs much accuracy (mnist5k, eps 3: 0.90 -> 0.46 at ratio 0.5);
        # 3 epochs on the public split win it back for free (-> 0.91); see the README.
        "finetune": "public",  # public (free) | ladp (members, DP, composed) | none
        "finetune_epochs": 3,  # per pruning step
        "finetune_epsilon": 4.0,  # ladp: target epsilon of the model after fine-tuning
        "finetune_lr": 0.0,  # 0: the lr of [train-ladp] (ladp) or [train] (public)
    },
    "quantize": {
        "mode": "auto",  # auto (fastest measured here) | static | dynamic | weights-only
        "per_channel": True,
        "calibration": "public",  # public | members (refused unless allowed; then not private)
        "allow_private_calibration": False,
        "calibration_samples": 256,
        "calibration_method": "minmax",  # minmax | entropy | percentile | distribution
        "timing_samples": 256,  # public examples that auto times and checks accuracy on
        "max_accuracy_drop": 0.02,  # auto: candidates further below fp32 are not chosen
    },
    "export": {
        "tolerance": 1e-4,  # max |ONNX - torch| on the test split, x max(1, largest |logit|)
        # Copy the auditor's strongest attack into the ONNX metadata. Off by default: attack
        # results are statistics of the members that ε does not cover (labelled so when on).
        "attack_metadata": False,
    },
    "distill": {
        "mode": "soft",  # soft (DP teacher's soft labels: free) | pate (GNMax, accounted)
        "temperature": 3.0,
        "student": "cnn",
        "student_width": 8,  # cnn channels (passed to models that take it)
        "student_hidden": 64,  # dense width (cnn, mlp)
        "epochs": 40,
        "batch_size": 64,
        "lr": 3e-3,
        "teachers": 50,  # pate: disjoint shards of the members
        "teacher_epochs": 30,
        "teacher_lr": 1e-3,
        "queries": 200,  # pate: public examples labelled by GNMax (all answered)
        "gnmax_sigma": 20.0,
        "delta": 1e-5,
    },
    "budget": {
        "epsilon": 0.0,  # cap on the total epsilon per private data set; 0: no cap
        "delta": 0.0,  # delta at which compositions are reported; 0: the first spend's
    },
    "evaluate": {
        "attacks": [
            "loss",
            "confidence",
            "entropy",
            "modified-entropy",
            "shadow",
            "lira",
            "lira-offline",
            "rmia",
            "gap",
        ],
        # Reference (shadow) models: trained once per run on random halves of the candidate
        # pool (evaluation pair + population) and shared by the shadow, LiRA and RMIA attacks.
        "shadow_models": 8,
        "shadow_epochs": 10,
        # auto: "target" for a DP-trained artifact (references trained like it: stronger
        # attacks, BENCHMARKS.md) and "train" otherwise | train ([train] for shadow_epochs,
        # Adam: cheap) | target (the training stage's own recipe)
        "reference_recipe": "auto",
        "executor": "local",  # local (process pool) | serial
        "workers": 2,
        "mirror": False,  # pass the references through the artifact's compression stages
        "augment": "none",  # none | shift: extra query variants for LiRA, RMIA and gap
        "samples": 500,
        "delta": 1e-5,
    },
}

# Sections whose keys are free-form (passed through to a factory).
_OPEN_SECTIONS = {"model"}
# Sections whose searchable keys may hold candidate lists (privacy.search).
_SEARCH_SECTIONS = {"train-ladp", "train-dpsgd"}


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
            known = ", ".join(config)
            raise PrivcompError(f"{origin}: unknown config section '{section}' (known: {known})")
        if not isinstance(values, dict):
            raise PrivcompError(f"{origin}: '{section}' must be a table of settings")
        for key, value in values.items():
            if section not in _OPEN_SECTIONS:
                if key not in config[section]:
                    known = ", ".join(config[section])
                    raise PrivcompError(
                        f"{origin}: unknown config key '{section}.{key}' (known: {known})"
                    )
                name, default = f"{section}.{key}", DEFAULTS[section][key]
                if section in _SEARCH_SECTIONS and is_candidate_list(key, value):
                    value = _coerce_candidates(value, default, name, origin)
                else:
                    value = _coerce(value, default, name, origin)
            config[section][key] = value


def _coerce(value: Any, default: Any, name: str, origin: str) -> Any:
    """Accept a value of the default's type (an int where a float is expected is widened)."""
    if isinstance(default, float) and type(value) in (int, float):
        return float(value)
    if type(value) is type(default):
        return value
    raise PrivcompError(f"{origin}: '{name}' expects a {type(default).__name__}, got {value!r}")


def _coerce_candidates(value: Any, default: Any, name: str, origin: str) -> Any:
    """A search: the word "search" (kept as it is), or a non-empty list of values each of the
    default's type."""
    if not isinstance(value, list):
        return value
    if not value:
        raise PrivcompError(f"{origin}: '{name}' lists no candidates")
    return [_coerce(v, default, name, origin) for v in value]


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
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A JSON string is a TOML basic string, except that JSON writes a character beyond U+FFFF
    as two surrogate escapes, which TOML refuses: those get TOML's own \\UXXXXXXXX escape."""
    body = (json.dumps(c)[1:-1] if ord(c) <= 0xFFFF else f"\\U{ord(c):08X}" for c in text)
    return '"' + "".join(body) + '"'


def with_run_settings(
    config: Config, *, seed: int | None = None, evaluate: str | None = None
) -> Config:
    """The configuration with the command line's own options (`--seed`, `--evaluate`) applied as
    the typed values they are; they win over the file and `--set`. The input is not changed."""
    run = dict(config["run"])
    if seed is not None:
        run["seed"] = seed
    if evaluate is not None:
        run["evaluate"] = evaluate
    return {**config, "run": run}
