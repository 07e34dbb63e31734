"""Typed settings: one dataclass per section is the only source of defaults; TOML and --set
overlay it, round-trip through to_toml, and every bad key or value is one named error."""

import tomllib
from pathlib import Path

import pytest

from models.errors import UserError
from pipelines.config import DEFAULTS, _sections_of, load_config, parse_override, to_toml
from pipelines.errors import PrivcompError
from pipelines.settings import SECTIONS, Config
from pipelines.settings.docs import TABLE_END, TABLE_START, markdown_table
from pipelines.stages import STAGES
from privacy.config import LADPConfig
from privacy.defenses import build_defense

README = Path(__file__).resolve().parents[2] / "README.md"


def test_overrides_are_read_as_toml_values() -> None:
    assert parse_override("train-ladp.epsilon=8") == ("train-ladp", "epsilon", 8)
    assert parse_override("run.model=mlp") == ("run", "model", "mlp")
    assert parse_override('evaluate.attacks=["loss"]') == ("evaluate", "attacks", ["loss"])
    assert parse_override("defense.l2.weight=0.1") == ("defense.l2", "weight", 0.1)


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[run]\nmodel = "mlp"\n["train-ladp"]\nepsilon = 2\n')
    cfg = load_config(path, ["train-ladp.epsilon=5"])
    assert cfg.run.model == "mlp"
    assert cfg.train_ladp.epsilon == 5.0 and isinstance(cfg.train_ladp.epsilon, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", r"unknown config key 'train.epoch' \(known: epochs, batch_size"),
        ("nosuch.key=1", "unknown config section 'nosuch' \\(known: run, data"),
        ("train.epochs=many", "'train.epochs' expects a int"),
        ("epsilon", "section.key=value"),
        ("prune.ratio=1.5", r"prune.ratio must be in \(0, 1\)"),
        ("run.evaluate=sometimes", "run.evaluate must be one of each, last, none"),
        ("train-ladp.lr=[]", "lists no candidates"),
        ("train-dpsgd.epsilon=[1.0, 2.0]", "'train-dpsgd.epsilon' cannot be searched"),
        ('evaluate.attacks=["loss", "nosuch"]', "unknown attack"),
    ],
)
def test_bad_settings_are_named(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):  # attack names: an AttackError
        load_config(None, [override])


def test_a_toml_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[run]\nseed = \n")
    with pytest.raises(PrivcompError, match=r"bad.toml is not valid TOML: .*line 2"):
        load_config(path)
    path.write_text("[train]\nepochs = 3.5\n")
    with pytest.raises(PrivcompError, match=r"bad.toml: 'train.epochs' expects a int"):
        load_config(path)


def test_resolved_config_round_trips_through_toml() -> None:
    cfg = load_config(
        None, ["model.width=16", "train-ladp.lr=[0.05, 0.1]", 'train-dpsgd.lr="search"']
    )
    text = to_toml(cfg)
    tables = _sections_of(tomllib.loads(text), origin="config.toml")  # [defense.l2] -> "defense.l2"
    assert set(tables) == set(DEFAULTS)
    assert tables["train-ladp"]["lr"] == [0.05, 0.1]
    assert tables == cfg.to_dict()


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.width=16", 'train-ladp.lr="search"', "evaluate.samples=50"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_dp_defaults_are_the_engines_own() -> None:
    """[train-ladp]'s defaults are LADPConfig's, so the library and the pipeline agree."""
    engine, section = LADPConfig(), Config.defaults().train_ladp
    for key in section.to_table():
        assert getattr(section, key) == getattr(engine, key), key
    assert Config.defaults().prune.dp_recipe == section.ladp_config()


def test_derived_fields_follow_their_sections() -> None:
    cfg = load_config(None, ["train.lr=0.01", "export.tolerance=0.001", "search.mean=5"])
    assert cfg.prune.public_recipe.lr == 0.01
    assert cfg.quantize.export.tolerance == 0.001
    assert cfg.train_ladp.search.mean == 5.0 and cfg.train_dpsgd.search.mean == 5.0
    changed = cfg.with_values("train", lr=0.02)
    assert changed.prune.public_recipe.lr == 0.02
    assert "public_recipe" not in to_toml(cfg) and "dp_recipe" not in to_toml(cfg)


def test_every_stage_has_its_section() -> None:
    for name, stage in STAGES.items():
        assert SECTIONS[stage.Config.name] is stage.Config, name


def test_nested_tables_are_sections(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[defense.l2]\nweight = 0.5\n")
    cfg = load_config(path, [])
    assert cfg.section("defense.l2").to_table() == {"weight": 0.5}
    assert cfg.with_values("train", defense="l2").defense() == build_defense("l2", weight=0.5)
    assert load_config(None, ["defense.l2.weight=0.5"]) == cfg
    assert "[defense.l2]\nweight = 0.5" in to_toml(cfg)
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg
    path.write_text("[defense.l3]\nweight = 0.5\n")
    with pytest.raises(PrivcompError, match="unknown config section 'defense.l3'"):
        load_config(path)


def test_readme_config_table_is_the_generated_one() -> None:
    text = README.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    assert text[start:end] == markdown_table(), "run `pipeline config --markdown` into README"


def test_with_values_coerces_and_validates_like_a_loaded_section() -> None:
    cfg = load_config(None, [])
    changed = cfg.with_values("train-ladp", epsilon=4)
    assert changed.train_ladp.epsilon == 4.0 and isinstance(changed.train_ladp.epsilon, float)
    assert to_toml(changed) == to_toml(load_config(None, ["train-ladp.epsilon=4"]))
    with pytest.raises(PrivcompError, match="'train-ladp.lr' expects a float"):
        cfg.with_values("train-ladp", lr=[0.1, "x"])
    with pytest.raises(PrivcompError, match="prune.ratio must be in"):
        cfg.with_values("prune", ratio=2.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.extra={a = 1}", "'model.extra' must be a number, a word"),
        ('search.distribution="binomial"', "search: unknown distribution"),
        ("search.mean=1e9", "search.mean must be <= 1000"),
    ],
)
def test_what_would_not_round_trip_or_run_is_refused(override: str, message: str) -> None:
    with pytest.raises(PrivcompError, match=message):
        load_config(None, [override])
