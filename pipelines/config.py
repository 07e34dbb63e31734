"""Configuration: the typed sections' defaults (pipelines/settings), overlaid by a TOML file,
overlaid by `--set section.key=value`.

Every key that exists has a default in its section's dataclass, so a typo is an error instead of
a silently ignored setting, and the resolved configuration written to the run directory is
complete. Nested tables (`[defense.l2]`) are sections whose names hold a dot.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError
from pipelines.settings import SECTIONS, Config, Section

__all__ = ["DEFAULTS", "Config", "defaults_table", "load_config", "parse_override", "to_toml"]


def defaults_table() -> dict[str, dict[str, Any]]:
    """Every section's keys and defaults, as TOML holds them."""
    return Config.defaults().to_dict()


DEFAULTS = defaults_table()


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    from_file: dict[str, Any] = {}
    if path is not None:
        from_file = _sections_of(_read_toml(path), origin=str(path))
    tables: dict[str, dict[str, Any]] = {name: dict(t) for name, t in from_file.items()}
    for item in overrides or []:
        section, key, value = parse_override(item)
        if section not in SECTIONS:
            raise PrivcompError(f"--set: {_unknown_section(section)}")
        tables.setdefault(section, {})[key] = value
    sections: dict[str, Section] = {}
    for name, cls in SECTIONS.items():
        if path is not None:  # the file's own errors name the file; what is left is --set's
            cls.from_table(from_file.get(name, {}), origin=str(path))
        sections[name] = cls.from_table(tables.get(name, {}), origin="--set")
    return Config(sections)


def _unknown_section(name: str) -> str:
    return f"unknown config section '{name}' (known: {', '.join(SECTIONS)})"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PrivcompError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PrivcompError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PrivcompError(f"config file {path} is not UTF-8 text: {exc}") from exc


def _sections_of(document: dict[str, Any], *, origin: str, prefix: str = "") -> dict[str, Any]:
    """{section name: table}: a nested table is a section when its dotted name is one."""
    found: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if not isinstance(value, dict):
            where = f"'{prefix[:-1]}'" if prefix else "the top level"
            raise PrivcompError(f"{origin}: '{key}' at {where} must be a table of settings")
        if name in SECTIONS:
            found[name] = value
        elif any(s.startswith(f"{name}.") for s in SECTIONS):
            found.update(_sections_of(value, origin=origin, prefix=f"{name}."))
        else:
            raise PrivcompError(f"{origin}: {_unknown_section(name)}")
    return found


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


def to_toml(config: Config) -> str:
    """Write the resolved configuration (tables of scalars and lists) as TOML."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{_table_name(section)}]")
        lines += [f"{_key(key)} = {_toml_value(v)}" for key, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def _table_name(section: str) -> str:
    return ".".join(_key(part) for part in section.split("."))


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


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
    config: Config,
    *,
    seed: int | None = None,
    evaluate: str | None = None,
    defense: str | None = None,
    executor: str | None = None,
) -> Config:
    """The configuration with the command line's own options (`--seed`, `--evaluate`,
    `--defense`, `--executor`) applied as the typed values they are; they win over the file and
    `--set`. The input is not changed."""
    given = {"seed": seed, "evaluate": evaluate, "executor": executor}
    config = config.with_values("run", **{k: v for k, v in given.items() if v is not None})
    return config if defense is None else config.with_values("train", defense=defense)
