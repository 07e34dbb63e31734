"""Typed settings: one frozen dataclass per config section (DESIGN §4: a stage's `Config`).

SECTIONS lists them in the order a run dir's config.toml writes them; a section named with a dot
("defense.l2") is a nested table (`[defense.l2]` in TOML). `Config` holds one of each and fills
the derived fields (a value a stage needs from another section) whenever it is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from pipelines.errors import PrivcompError
from pipelines.settings.base import OpenSection, Section
from pipelines.settings.compression import (
    DistillSettings,
    ExportSettings,
    PruneSettings,
    QuantizeSettings,
)
from pipelines.settings.defenses import PREFIX, DefenseSettings, defense_sections
from pipelines.settings.evaluation import EvaluateSettings
from pipelines.settings.run import (
    BudgetSettings,
    DataSettings,
    ModelSettings,
    RunSettings,
    SearchSettings,
)
from pipelines.settings.training import (
    TrainDPSGDSettings,
    TrainFLSettings,
    TrainLADPSettings,
    TrainSettings,
)
from privacy.defenses import Defense

SECTIONS: dict[str, type[Section]] = {}

S = TypeVar("S", bound=Section)


def register_section(cls: type[S], *, force: bool = False) -> type[S]:
    if cls.name in SECTIONS and not force:
        raise ValueError(f"config section '{cls.name}' is already registered")
    SECTIONS[cls.name] = cls
    return cls


for _cls in (
    RunSettings,
    DataSettings,
    ModelSettings,
    TrainSettings,
    TrainLADPSettings,
    TrainDPSGDSettings,
    TrainFLSettings,
    SearchSettings,
    PruneSettings,
    QuantizeSettings,
    ExportSettings,
    DistillSettings,
    BudgetSettings,
    EvaluateSettings,
    *defense_sections(),
):
    register_section(_cls)


@dataclasses.dataclass(frozen=True)
class Config:
    """A run's resolved configuration: every registered section, typed."""

    sections: Mapping[str, Section]

    def __post_init__(self) -> None:
        missing = [name for name in SECTIONS if name not in self.sections]
        if missing:
            raise ValueError(f"config lacks section(s) {', '.join(missing)}")
        object.__setattr__(self, "sections", _derive(dict(self.sections)))

    @classmethod
    def defaults(cls) -> Config:
        return cls({name: section() for name, section in SECTIONS.items()})

    def section(self, name: str) -> Section:
        if name not in self.sections:
            known = ", ".join(self.sections)
            raise PrivcompError(f"unknown config section '{name}' (known: {known})")
        return self.sections[name]

    def with_values(self, section: str, **values: Any) -> Config:
        """A copy with keys of one section changed (validated, derived fields re-filled)."""
        return Config({**self.sections, section: self.section(section).with_values(**values)})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section.to_table() for name, section in self.sections.items()}

    def _typed(self, name: str, cls: type[S]) -> S:
        return _typed(self.sections, name, cls)

    @property
    def run(self) -> RunSettings:
        return self._typed("run", RunSettings)

    @property
    def data(self) -> DataSettings:
        return self._typed("data", DataSettings)

    @property
    def model(self) -> dict[str, Any]:
        return dict(self._typed("model", ModelSettings).values)

    @property
    def train(self) -> TrainSettings:
        return self._typed("train", TrainSettings)

    @property
    def train_ladp(self) -> TrainLADPSettings:
        return self._typed("train-ladp", TrainLADPSettings)

    @property
    def train_dpsgd(self) -> TrainDPSGDSettings:
        return self._typed("train-dpsgd", TrainDPSGDSettings)

    @property
    def train_fl(self) -> TrainFLSettings:
        return self._typed("train-fl", TrainFLSettings)

    def defense(self) -> Defense | None:
        """The [train] defense with its [defense.NAME] settings; None for an undefended run."""
        name = self.train.defense
        if name == "none":
            return None
        return self._typed(PREFIX + name, DefenseSettings).defense()

    @property
    def prune(self) -> PruneSettings:
        return self._typed("prune", PruneSettings)

    @property
    def quantize(self) -> QuantizeSettings:
        return self._typed("quantize", QuantizeSettings)

    @property
    def export(self) -> ExportSettings:
        return self._typed("export", ExportSettings)

    @property
    def budget(self) -> BudgetSettings:
        return self._typed("budget", BudgetSettings)

    @property
    def evaluate(self) -> EvaluateSettings:
        return self._typed("evaluate", EvaluateSettings)


def _typed(sections: Mapping[str, Section], name: str, cls: type[S]) -> S:
    section = sections[name]
    assert isinstance(section, cls), f"section '{name}' is not a {cls.__name__}"
    return section


def _derive(sections: dict[str, Section]) -> dict[str, Section]:
    """Fill the derived fields: what a stage needs from another section, explicitly."""

    def typed(name: str, cls: type[S]) -> S:
        return _typed(sections, name, cls)

    search = typed("search", SearchSettings)
    ladp = dataclasses.replace(typed("train-ladp", TrainLADPSettings), search=search)
    dpsgd = dataclasses.replace(typed("train-dpsgd", TrainDPSGDSettings), search=search)
    try:
        recipe = ladp.ladp_config()
    except (TypeError, ValueError) as exc:
        raise PrivcompError(f"train-ladp: {exc}") from exc
    prune = dataclasses.replace(
        typed("prune", PruneSettings), dp_recipe=recipe, public_recipe=typed("train", TrainSettings)
    )
    quantize = dataclasses.replace(
        typed("quantize", QuantizeSettings), export=typed("export", ExportSettings)
    )
    return {
        **sections,
        "train-ladp": ladp,
        "train-dpsgd": dpsgd,
        "prune": prune,
        "quantize": quantize,
    }


__all__ = ["SECTIONS", "Config", "OpenSection", "Section", "register_section"]
