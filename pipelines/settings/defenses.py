"""[defense.NAME]: one section per registered defense (privacy.defenses), made from its fields.

A defense's dataclass fields are the only source of its defaults and docs (`knob`); the section
validates through the defense itself, so a bad value is the defense's own one-line reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from pipelines.errors import PrivcompError
from pipelines.settings.base import Section, setting
from privacy.defenses import DEFENSES, Defense

PREFIX = "defense."


class DefenseSettings(Section):
    """Base of the generated sections: `defense()` is the configured defense."""

    defense_class: ClassVar[type[Defense]]

    def defense(self) -> Defense:
        try:
            return self.defense_class(**self.to_table())
        except ValueError as exc:
            raise PrivcompError(f"[{self.name}] {exc}") from exc

    def __post_init__(self) -> None:
        self.defense()


def defense_section(cls: type[Defense]) -> type[DefenseSettings]:
    fields: list[tuple[str, Any, Any]] = [
        (f.name, Any, setting(f.default, f.metadata.get("doc", f"{cls.name} setting")))
        for f in dataclasses.fields(cls)
    ]
    camel = "".join(part.capitalize() for part in cls.name.split("-"))
    section = dataclasses.make_dataclass(
        f"{camel}DefenseSettings",
        fields,
        bases=(DefenseSettings,),
        frozen=True,
        namespace={"name": PREFIX + cls.name, "defense_class": cls},
    )
    return section


def defense_sections() -> list[type[DefenseSettings]]:
    return [defense_section(DEFENSES[name]) for name in sorted(DEFENSES)]
