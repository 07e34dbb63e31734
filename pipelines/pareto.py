"""The Pareto front of a set of runs: those no other run beats on every objective at once
(what a sweep's report marks: accuracy up, bytes and attack power down)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def pareto_front(
    points: Sequence[Mapping[str, float]],
    *,
    maximize: Sequence[str] = (),
    minimize: Sequence[str] = (),
) -> list[int]:
    """Indices (in order) of the points that no other point dominates: at least as good on every
    objective and strictly better on one. Equal points do not dominate each other."""
    keys = [*maximize, *minimize]
    if not keys:
        raise ValueError("pareto_front needs at least one objective")
    if set(maximize) & set(minimize):
        raise ValueError("an objective cannot be maximised and minimised")
    missing = [k for p in points for k in keys if k not in p]
    if missing:
        raise ValueError(f"a point lacks objective(s) {', '.join(sorted(set(missing)))}")

    def oriented(point: Mapping[str, float]) -> list[float]:  # larger is better everywhere
        return [float(point[k]) for k in maximize] + [-float(point[k]) for k in minimize]

    values = [oriented(p) for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [i for i, v in enumerate(values) if not any(dominates(w, v) for w in values)]
