"""The privacy of several run dirs on the same members, released or chosen among together: each
one's own ε beside the composed ε of every DP release of its group (the run dirs whose members
overlap), by the ledger's own composition. `pipeline sweep` writes it into sweep.json; the report
of several run dirs shows it beside each run's own ε."""

from __future__ import annotations

import hashlib
import itertools
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.rundir import read_json

NOT_PRIVATE = "a point of this group read the members without DP: the composed ε is infinite"
REPRODUCIBLE_GROUP = (
    "a point of this group drew its noise from its seed (run.reproducible_noise): points with one "
    "seed draw the same noise, which composition assumes independent, so the composed ε does "
    "not hold"
)


@dataclass(frozen=True)
class PointPrivacy:
    """One run dir's privacy beside its group's (the run dirs whose members overlap)."""

    run_dir: Path
    group: str | None  # None: the run dir holds no split (it read nothing)
    epsilon: float | None  # its own: the members' total in its ledger (None: not private)
    delta: float | None
    composed_epsilon: float | None  # every DP release on its group's members (None: infinite)
    composed_delta: float | None
    accountant: str | None
    releases: int  # DP releases of the members in this run dir
    note: str = ""


@dataclass
class _RunPrivacy:
    run_dir: Path
    dataset: tuple[str, str]
    members: np.ndarray | None
    spends: list[Any]  # pipelines.spend.Spend: the counted DP releases on the members
    private: bool
    own: tuple[float | None, float | None] | None  # from ledger.json
    delta: float | None  # the δ its ledger composes at
    reproducible: bool = False  # run.reproducible_noise: its noise came from its seed


def _read_run(run_dir: Path) -> _RunPrivacy:
    from pipelines.data import Splits
    from pipelines.releases import ReleaseLog
    from pipelines.spend import DEFAULT_DATASET

    splits_file, config_file, ledger_file = (
        run_dir / "splits.json",
        run_dir / "config.toml",
        run_dir / "ledger.json",
    )
    members = None
    if splits_file.is_file():
        members = np.sort(Splits.from_json(splits_file.read_text())[DEFAULT_DATASET])
    run: dict[str, Any] = {}
    if config_file.is_file():
        run = tomllib.loads(config_file.read_text()).get("run", {})
    spends = []
    for release in ReleaseLog(run_dir).counted(run_dir):
        spend = release.spend
        if spend.kind == "dp" and spend.dataset == DEFAULT_DATASET:
            spends.append(spend)
    private, own, delta = True, None, None
    if ledger_file.is_file():
        ledger = read_json(ledger_file)
        account = ledger.get("datasets", {}).get(DEFAULT_DATASET)
        if account is not None:
            private = bool(account.get("private", True))
            own = (account.get("epsilon"), account.get("delta"))
        delta = (ledger.get("budget") or {}).get("delta")
    if delta is None and spends:
        delta = spends[0].delta  # the ledger's rule: the first DP spend's δ
    dataset = (str(run.get("dataset", "")), str(run.get("data_root", "")))
    reproducible = bool(run.get("reproducible_noise", False))
    return _RunPrivacy(run_dir, dataset, members, spends, private, own, delta, reproducible)


def _groups(runs: Sequence[_RunPrivacy]) -> list[list[int]]:
    """Connected components of "same data set and intersecting members" (identical members
    are the usual case; overlapping ones, e.g. another seed's split, hold the same people)."""
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(runs)), 2):
        a, b = runs[i], runs[j]
        if a.members is None or b.members is None or a.dataset != b.dataset:
            continue
        if np.intersect1d(a.members, b.members, assume_unique=True).size:
            parent[find(j)] = find(i)
    components: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        if run.members is not None:
            components.setdefault(find(i), []).append(i)
    return list(components.values())


def _group_name(runs: Sequence[_RunPrivacy]) -> str:
    members = [r.members for r in runs if r.members is not None]
    union = np.unique(np.concatenate(members)).astype(np.int64)
    digest = hashlib.sha256("\0".join(runs[0].dataset).encode() + union.tobytes())
    return digest.hexdigest()[:12]


def composed_privacy(run_dirs: Sequence[Path]) -> list[PointPrivacy]:
    """Each run dir's own ε beside the composed ε of every DP release on the members of its
    group (run dirs on the same data set whose members overlap), one entry per run dir in
    order.

    The composition is the ledger's (pipelines.ledger): the concatenated history of the group's
    releases (each run dir's release log: every DP release it made, an interrupted one
    included), by the accountant of the first, at one δ: the δ the ledgers compose at (budget.delta
    or the first spend's), the smallest of them where the run dirs differ (so that no point's
    own ε is at a smaller δ than the composition's). A run dir that read its members without DP
    makes its group's composed ε infinite (None); releases under different neighbour relations
    are refused (PrivcompError), as the ledger refuses them."""
    from pipelines.ledger import Budget, Ledger

    runs = [_read_run(Path(d)) for d in run_dirs]
    out: list[PointPrivacy | None] = [None] * len(runs)
    for component in _groups(runs):
        group = [runs[i] for i in component]
        name = _group_name(group)
        deltas = sorted({r.delta for r in group if r.delta is not None})
        delta = deltas[0] if deltas else None
        notes = []
        if len(deltas) > 1:
            notes.append(f"the points compose at different δ: composed at the smallest, {delta:g}")
        if len(group) > 1 and any(r.reproducible for r in group):
            notes.append(REPRODUCIBLE_GROUP)
        if not all(r.private for r in group):
            composed: tuple[float | None, float | None, str | None] = (None, None, None)
            notes.append(NOT_PRIVATE)
        elif len(group) == 1 and group[0].own is not None:
            own = group[0].own
            composed = (own[0], own[1], _accountant(group[0].run_dir))
        else:
            ledger = Ledger(Budget(delta=delta))
            for run in group:
                for k, spend in enumerate(run.spends, start=1):
                    ledger.record_elsewhere(f"{run.run_dir.name}#{k}", spend)
            total = ledger.dataset_total()
            composed = (total.epsilon, total.delta, total.accountant)
        for i, run in zip(component, group, strict=True):
            epsilon, own_delta = run.own if run.own is not None else _alone(run)
            if not run.private:
                epsilon, own_delta = None, None
            out[i] = PointPrivacy(
                run_dir=run.run_dir,
                group=name,
                epsilon=epsilon,
                delta=own_delta,
                composed_epsilon=composed[0],
                composed_delta=composed[1],
                accountant=composed[2],
                releases=len(run.spends),
                note="; ".join(notes),
            )
    for i, run in enumerate(runs):
        if out[i] is None:  # no split: the run never read its members
            note = "no splits.json: nothing was read or released"
            out[i] = PointPrivacy(run.run_dir, None, 0.0, 0.0, 0.0, 0.0, None, 0, note)
    return [p for p in out if p is not None]


def _alone(run: _RunPrivacy) -> tuple[float | None, float | None]:
    """A run dir's own ε from its release log (where its ledger.json is missing)."""
    from pipelines.ledger import Budget, Ledger

    ledger = Ledger(Budget(delta=run.delta))
    for k, spend in enumerate(run.spends, start=1):
        ledger.record_elsewhere(f"#{k}", spend)
    total = ledger.dataset_total()
    return total.epsilon, total.delta


def _accountant(run_dir: Path) -> str | None:
    from pipelines.spend import DEFAULT_DATASET

    ledger_file = run_dir / "ledger.json"
    if not ledger_file.is_file():
        return None
    account = read_json(ledger_file).get("datasets", {}).get(DEFAULT_DATASET) or {}
    accountant = account.get("accountant")
    return None if accountant is None else str(accountant)
