"""The machinery of typed settings: a section is a frozen dataclass whose fields are its keys.

A field's default is the only default of its key (DEFAULTS, the TOML written to a run dir and the
README's table are made from the fields); its `doc` says what it does. Values read from TOML are
coerced to the default's type (an int where a float is expected is widened), so a typo or a
wrong type is a one-line error instead of a silently ignored setting. A searchable key may also
hold a list of candidates or, where privacy.search has a default list, the word "search".
Derived fields are filled by the loader from other sections (a value a stage needs from
elsewhere) and never appear in TOML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pipelines.errors import PrivcompError
from privacy.search import is_candidate_list

# Keys that moved to another section: their old name is refused with the new one.
MOVED_KEYS = {
    "evaluate.executor": "run.executor",
    "evaluate.workers": "run.workers",
}


def setting(default: Any, doc: str, *, searchable: bool = False) -> Any:
    """A key of a section: its default and one line for the README's table."""
    meta = {"doc": doc, "searchable": searchable}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def derived(default: Any = None) -> Any:
    """A field the loader fills from another section (never read from or written to TOML)."""
    return dataclasses.field(default=default, metadata={"derived": True})


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every section: `name` is its TOML table ("train-ladp", "defense.l2")."""

    name: ClassVar[str]

    @classmethod
    def key_fields(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, origin: str) -> Self:
        """A section from a TOML table over the defaults; unknown keys and wrong types refused."""
        known = {f.name: f for f in cls.key_fields()}
        defaults = cls()
        values: dict[str, Any] = {}
        for key, value in table.items():
            moved = MOVED_KEYS.get(f"{cls.name}.{key}")
            if moved is not None:
                raise PrivcompError(f"{origin}: {cls.name}.{key} moved to {moved}")
            if key not in known:
                listed = ", ".join(known)
                raise PrivcompError(
                    f"{origin}: unknown config key '{cls.name}.{key}' (known: {listed})"
                )
            name, default = f"{cls.name}.{key}", getattr(defaults, key)
            _refuse_unsearchable(cls, key, value, default)
            if known[key].metadata.get("searchable") and is_candidate_list(key, value):
                values[key] = _coerce_candidates(value, default, name, origin)
            else:
                values[key] = coerce(value, default, name, origin)
        return dataclasses.replace(defaults, **values)

    def to_table(self) -> dict[str, Any]:
        """The section's keys and values as TOML writes them (derived fields left out)."""
        return {f.name: getattr(self, f.name) for f in self.key_fields()}

    def with_values(self, **values: Any) -> Self:
        """A copy with some keys changed, coerced and validated like a loaded section (its
        derived fields at their defaults: Config fills them)."""
        return type(self).from_table({**self.to_table(), **values}, origin="with_values")


@dataclasses.dataclass(frozen=True)
class OpenSection(Section):
    """A section whose keys are free-form (passed through to a factory, e.g. [model])."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, origin: str) -> Self:
        """Any key; values are scalars or lists of scalars (what TOML writes back as it read)."""
        for key, value in table.items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, bool | int | float | str) for v in items):
                raise PrivcompError(
                    f"{origin}: '{cls.name}.{key}' must be a number, a word, true/false or a "
                    f"list of them, got {value!r}"
                )
        return cls(values=dict(table))

    def to_table(self) -> dict[str, Any]:
        return dict(self.values)

    def with_values(self, **values: Any) -> Self:
        return type(self).from_table({**self.values, **values}, origin="with_values")


def _refuse_unsearchable(cls: type[Section], key: str, value: Any, default: Any) -> None:
    """A list for a key of a section with searchable keys asks for a search it cannot have."""
    searchable = sorted(f.name for f in cls.key_fields() if f.metadata.get("searchable"))
    searched = isinstance(value, list) and not isinstance(default, list)
    if searchable and searched and key not in searchable:
        raise PrivcompError(
            f"'{cls.name}.{key}' cannot be searched: only settings that leave the mechanism "
            f"(σ, q, steps) unchanged can (searchable: {', '.join(searchable)})"
        )


def coerce(value: Any, default: Any, name: str, origin: str) -> Any:
    """Accept a value of the default's type (an int where a float is expected is widened)."""
    if isinstance(default, float) and type(value) in (int, float):
        return float(value)
    if isinstance(default, list) and isinstance(value, list):
        kinds = {type(v) for v in default}
        if kinds and any(type(v) not in kinds for v in value):
            shown = "/".join(sorted(k.__name__ for k in kinds))
            raise PrivcompError(f"{origin}: '{name}' expects a list of {shown}, got {value!r}")
        return list(value)
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
    return [coerce(v, default, name, origin) for v in value]


def one_of(section: str, key: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise PrivcompError(f"{section}.{key} must be one of {', '.join(choices)}, got {value!r}")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise PrivcompError(message)
