"""Property tests (hypothesis): configuration round trips, invariants of the attack metrics, and
the ledger's composition never lowering ε."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attacks.metrics import auc, roc_of
from models.errors import UserError
from pipelines.config import DEFAULTS, load_config, parse_override, to_toml
from pipelines.ledger import Ledger
from pipelines.spend import Spend
from privacy.composition import compose

FAST = settings(max_examples=60, deadline=None)

# ---- configuration ----------------------------------------------------------------------------

SEARCH_SECTIONS = ("train-ladp", "train-dpsgd")  # where a list of values asks for a search
KEYS = [(s, k) for s, values in DEFAULTS.items() for k in values]


def toml_string(text: str) -> str:
    """A TOML basic string, written here independently of pipelines.config."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def values_like(default: Any) -> st.SearchStrategy[Any]:
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if isinstance(default, float):
        return st.floats(allow_nan=False) | st.integers(-(10**6), 10**6)  # ints are widened
    if isinstance(default, list):
        return st.lists(st.text(), max_size=4)
    return st.text()


@st.composite
def settings_(draw: st.DrawFn) -> tuple[str, str, Any]:
    section, key = draw(st.sampled_from(KEYS))
    default = DEFAULTS[section][key]
    value = st.just(default) | values_like(default)  # the default: always valid
    if section in SEARCH_SECTIONS and not isinstance(default, list):
        value = value | st.lists(values_like(default), min_size=1, max_size=3)
    return section, key, draw(value)


def open_settings() -> st.SearchStrategy[tuple[str, str, Any]]:
    """[model] takes any key (passed through to the model factory)."""
    keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
    scalars = st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False) | st.text()
    return st.tuples(st.just("model"), keys, scalars)


def expected(default: Any, value: Any) -> Any:
    if isinstance(value, list) and not isinstance(default, list):
        return [expected(default, v) for v in value]
    return float(value) if isinstance(default, float) else value


@settings(FAST, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(settings_() | open_settings(), min_size=1, max_size=6))
def test_every_valid_set_survives_to_toml_and_back(
    tmp_path: Path, items: list[tuple[str, str, Any]]
) -> None:
    """What the typed settings accept round-trips; what they refuse is one named UserError."""
    overrides = [f"{section}.{key}={toml_literal(value)}" for section, key, value in items]
    try:
        config = load_config(None, overrides)
    except UserError as exc:  # out of range, not a choice, not searchable, ...
        assert "\n" not in str(exc) and str(exc)
        return
    final = {(section, key): value for section, key, value in items}  # the last --set wins
    for (section, key), value in final.items():
        table = config.section(section).to_table()
        assert table[key] == expected(DEFAULTS[section].get(key, value), value)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load_config(path) == config


@FAST
@given(st.sampled_from(KEYS), st.text(alphabet=st.characters(codec="utf-8")))
def test_a_string_set_through_toml_reads_back_exactly(key: tuple[str, str], text: str) -> None:
    assert parse_override(f"{key[0]}.{key[1]}={toml_string(text)}") == (*key, text)


# ---- attack metrics ---------------------------------------------------------------------------

# Integer-valued scores (ties included): every transform below is strictly monotone on them in
# floating point too, so the property is exact.
scores = st.lists(st.integers(-1000, 1000), min_size=1, max_size=40).map(
    lambda v: np.asarray(v, dtype=np.float64)
)
INCREASING = {
    "affine": lambda x: 3.0 * x + 7.0,
    "cube": lambda x: x**3,
    "exp": lambda x: np.exp(x / 100.0),
    "arctan": lambda x: np.arctan(x / 500.0),
}


@FAST
@given(scores, scores, st.sampled_from(sorted(INCREASING)))
def test_auc_is_invariant_under_increasing_transforms(
    members: np.ndarray, nonmembers: np.ndarray, name: str
) -> None:
    f = INCREASING[name]
    assert auc(f(members), f(nonmembers)) == pytest.approx(auc(members, nonmembers), abs=1e-12)
    # A decreasing transform turns the attack around.
    assert auc(-f(members), -f(nonmembers)) == pytest.approx(1 - auc(members, nonmembers))


@FAST
@given(scores, scores, st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8))
def test_tpr_at_fpr_is_monotone_in_fpr(
    members: np.ndarray, nonmembers: np.ndarray, fprs: list[float]
) -> None:
    roc = roc_of(members, nonmembers)
    tprs = [roc.tpr_at(f) for f in sorted(fprs)]
    assert all(a <= b for a, b in zip(tprs, tprs[1:], strict=False))
    assert all(0.0 <= t <= 1.0 for t in tprs)


# ---- the ledger -------------------------------------------------------------------------------

DELTA = 1e-5
# The RDP accountant (fast); its ε is a minimum over a fixed grid of orders, so composition is
# monotone up to floating-point error.
TOLERANCE = 1e-9

gaussian: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    noise_multiplier=st.floats(0.5, 5.0),
    sample_rate=st.floats(0.001, 0.2),
    steps=st.integers(1, 500),
)


def dp_spend(mechanism: dict[str, Any], *, continues: bool) -> Spend:
    details: dict[str, Any] = {**mechanism, "accountant": "rdp"}
    lineage = "continue" if continues else "new"
    own = Spend(kind="dp", epsilon=None, delta=DELTA, details=details)
    epsilon = compose([own.mechanism], delta=DELTA, accountant="rdp").epsilon
    return Spend(kind="dp", epsilon=epsilon, delta=DELTA, lineage=lineage, details=details)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(gaussian, st.booleans()), min_size=1, max_size=5))
def test_composition_in_the_ledger_never_lowers_epsilon(
    spends: list[tuple[dict[str, Any], bool]],
) -> None:
    ledger = Ledger()
    total, previous = 0.0, 0.0
    for i, (mechanism, continues) in enumerate(spends):
        spend = dp_spend(mechanism, continues=continues and i > 0)
        guarantee = ledger.record(f"stage-{i}", spend)
        assert spend.epsilon is not None and guarantee.epsilon is not None
        assert guarantee.epsilon >= spend.epsilon * (1 - TOLERANCE)  # the artifact's own
        if spend.lineage == "continue":  # a fine-tune composes with its input's lineage
            assert guarantee.epsilon >= previous * (1 - TOLERANCE)
            assert guarantee.epsilon > spend.epsilon * (1 + TOLERANCE)
        previous = guarantee.epsilon
        now = ledger.total().epsilon
        assert now is not None and now >= total * (1 - TOLERANCE)  # the data set's running total
        assert now >= guarantee.epsilon * (1 - TOLERANCE)
        total = now
    json.dumps(ledger.to_dict())  # what ledger.json holds stays writable
