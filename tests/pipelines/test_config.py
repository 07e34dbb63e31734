import tomllib
from pathlib import Path

import pytest

from pipelines.config import DEFAULTS, load_config, parse_override, to_toml
from pipelines.errors import PrivcompError


def test_overrides_are_read_as_toml_values() -> None:
    assert parse_override("train-ladp.epsilon=8") == ("train-ladp", "epsilon", 8)
    assert parse_override("run.model=mlp") == ("run", "model", "mlp")
    assert parse_override('evaluate.attacks=["loss"]') == ("evaluate", "attacks", ["loss"])


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[run]\nmodel = "mlp"\n["train-ladp"]\nepsilon = 2\n')
    cfg = load_config(path, ["train-ladp.epsilon=5"])
    assert cfg["run"]["model"] == "mlp"
    assert cfg["train-ladp"]["epsilon"] == 5.0 and isinstance(cfg["train-ladp"]["epsilon"], float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("nosuch.key=1", "unknown config section 'nosuch'"),
        ("train.epochs=many", "'train.epochs' expects a int"),
        ("epsilon", "section.key=value"),
    ],
)
def test_bad_settings_are_named(override: str, message: str) -> None:
    with pytest.raises(PrivcompError, match=message):
        load_config(None, [override])


def test_resolved_config_round_trips_through_toml() -> None:
    cfg = load_config(None, ["model.width=16"])
    assert tomllib.loads(to_toml(cfg)) == cfg
    assert set(cfg) == set(DEFAULTS)
