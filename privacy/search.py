"""A private hyper-parameter search (DESIGN §5.10): choosing settings by training on the members
is a mechanism, so it runs as one and is accounted (Papernot & Steinke 2022: hyperparameters.py).

The search space is a training section whose searchable keys hold lists of candidate values (or
the word "search" for a key with a default list, e.g. lr). One repetition draws a candidate
uniformly from the space, trains it from the same initial weights with full DP at one common
noise multiplier, and scores the model on the public split. The number of repetitions K is drawn
from the configured distribution. Candidates, K and the noise come from the mechanism's own
generator (secure unless reproducible noise was asked for). Only the best model, its candidate
and its public score are released: K, the other candidates, their scores and their timings are
not (the caller must not write or print them).

Keys that change the accounting (ε, δ, epochs, batch size, the noise multiplier, the accountant)
cannot be searched: every repetition is then the same (σ, q, steps) mechanism, whatever its
candidate, and the search's RDP bound applies to the whole space at once.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from torch import nn

from models.training import accuracy, predict_logits
from privacy.accounting import format_epsilon
from privacy.config import LADPConfig, sampling_plan
from privacy.hyperparameters import (
    SearchConfig,
    calibrate_search_noise,
    draw_repetitions,
    search_rdp,
)
from privacy.randomness import child_seed, mechanism_rngs, noise_mode
from privacy.rdp import RDP_ORDERS, gaussian_rdp, rdp_epsilon

SEARCH_WORD = "search"
# The candidates `key = "search"` stands for (the accuracy study's lr grid).
DEFAULT_CANDIDATES: dict[str, tuple[Any, ...]] = {"lr": (0.025, 0.05, 0.1, 0.2)}
# Settings that leave (σ, q, steps) unchanged, so every repetition is the same mechanism.
SEARCHABLE: frozenset[str] = frozenset(
    {
        "lr",
        "momentum",
        "clip_norm",
        "optimizer",
        "weight_decay",
        "allocation",
        "tau",
        "sensitive_fraction",
        "clip_sensitive",
        "clip_other",
        "fisher_every",
        "fisher_samples",
    }
)

Candidate = dict[str, Any]
# (config of one repetition, its noise seed) -> the trained model.
TrainFn = Callable[[LADPConfig, int | None], nn.Module]
ScoreFn = Callable[[nn.Module], float]


def is_candidate_list(key: str, value: Any) -> bool:
    """True when a section value asks for a search (a list, or the word for a default list)."""
    return isinstance(value, list) or (value == SEARCH_WORD and key in DEFAULT_CANDIDATES)


@dataclass(frozen=True)
class SearchSpace:
    """A training section split into what every candidate shares and the searched choices."""

    shared: dict[str, Any]
    choices: dict[str, tuple[Any, ...]]

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> SearchSpace:
        known = {f.name for f in fields(LADPConfig)}
        shared: dict[str, Any] = {}
        choices: dict[str, tuple[Any, ...]] = {}
        for key, value in section.items():
            if key not in known:
                continue
            if not is_candidate_list(key, value):
                shared[key] = value
                continue
            if key not in SEARCHABLE:
                allowed = ", ".join(sorted(SEARCHABLE))
                raise ValueError(
                    f"'{key}' cannot be searched: it changes the privacy accounting "
                    f"(searchable: {allowed})"
                )
            options = DEFAULT_CANDIDATES[key] if value == SEARCH_WORD else tuple(value)
            if not options:
                raise ValueError(f"'{key}': the list of candidates is empty")
            choices[key] = options
        return cls(shared, choices)

    @property
    def searching(self) -> bool:
        return bool(self.choices)

    def candidates(self) -> list[Candidate]:
        keys = sorted(self.choices)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(self.choices[k] for k in keys))
        ]

    def config(self, candidate: Candidate | None = None) -> LADPConfig:
        """The LADPConfig of one candidate (of the first one when none is given)."""
        chosen = candidate if candidate is not None else self.candidates()[0]
        return LADPConfig(**{**self.shared, **chosen})

    def released_settings(self, details: dict[str, Any]) -> dict[str, Any]:
        """The LADPConfig fields of the training whose model was released, from the spend's
        details: the shared settings, the candidate a search chose (the first candidate when a
        search released its untrained initial model) and the noise multiplier it ran with.
        References trained like the target and `pipeline audit` run exactly this."""
        chosen = dict(details.get("chosen") or {})
        settings = {**self.shared, **(chosen or (self.candidates()[0] if self.searching else {}))}
        return {**settings, "noise_multiplier": float(details["noise_multiplier"])}

    def check(self, n: int) -> None:
        """Every candidate must be a valid configuration on n members (ValueError)."""
        for candidate in self.candidates() if self.searching else [{}]:
            LADPConfig(**{**self.shared, **candidate}).check(n)


@dataclass(frozen=True)
class SearchPlan:
    """The search's mechanism, fixed before any private data is read."""

    sample_rate: float
    steps: int  # per repetition
    noise_multiplier: float  # per repetition, calibrated for the whole search
    epsilon: float  # of the search, at delta
    delta: float
    orders: tuple[float, ...]
    rdp: tuple[float, ...]  # the search's RDP curve at `orders`
    search: SearchConfig


def plan_search(space: SearchSpace, search: SearchConfig, n: int) -> SearchPlan:
    """σ for each repetition such that the whole search is (ε, δ)-DP at the section's target."""
    space.check(n)
    search.check()
    base = space.config()
    q, steps = sampling_plan(base.expected_batch_size, base.epochs, n)
    sigma = base.noise_multiplier
    if sigma is None:
        sigma = calibrate_search_noise(
            target_epsilon=base.epsilon, delta=base.delta, sample_rate=q, steps=steps, config=search
        )
    single = gaussian_rdp(noise_multiplier=sigma, sample_rate=q, steps=steps)
    curve = search_rdp(RDP_ORDERS, single, config=search)
    epsilon = rdp_epsilon(curve, delta=base.delta)
    if epsilon > base.epsilon:
        raise ValueError(
            f"noise multiplier {sigma:.4g} is too small for a search within epsilon = "
            f"{base.epsilon:g} (it costs {format_epsilon(epsilon, digits=4)})"
        )
    return SearchPlan(
        sample_rate=q,
        steps=steps,
        noise_multiplier=sigma,
        epsilon=epsilon,
        delta=base.delta,
        orders=tuple(float(a) for a in RDP_ORDERS),
        rdp=tuple(float(r) for r in curve),
        search=search,
    )


@dataclass(frozen=True)
class SearchResult:
    """What the search releases: the best model, its candidate and its public score."""

    model: nn.Module
    candidate: Candidate
    public_score: float
    plan: SearchPlan
    noise: str  # privacy.randomness.noise_mode


def run_search(
    space: SearchSpace,
    plan: SearchPlan,
    *,
    initial: nn.Module,
    train: TrainFn,
    score: ScoreFn,
    noise_seed: int | None = None,
) -> SearchResult:
    """Run the search; nothing about the repetitions leaves this function but the best one.

    initial: the starting weights of every repetition (public randomness); train(config, seed)
    trains a copy of it on the members with full DP; score(model) reads public data only.
    With Poisson repetitions K may be 0: the release is then the untrained initial model (a
    function of public randomness only), with its public score.
    """
    rng = mechanism_rngs(noise_seed, 1)[0]
    candidates: Sequence[Candidate] = space.candidates()
    repetitions = draw_repetitions(rng, plan.search)
    best: tuple[float, Candidate, nn.Module] | None = None
    for k in range(repetitions):
        candidate = candidates[int(rng.integers(len(candidates)))]
        config = replace(space.config(candidate), noise_multiplier=plan.noise_multiplier)
        model = train(config, child_seed(noise_seed, k))
        value = score(model)
        if best is None or value > best[0]:
            best = (value, candidate, model)
        del model  # the others are discarded
    if best is None:
        untrained = copy.deepcopy(initial).eval()
        best = (score(untrained), {}, untrained)
    value, candidate, model = best
    return SearchResult(model, dict(candidate), float(value), plan, noise_mode(noise_seed))


def public_accuracy(x: np.ndarray, y: np.ndarray) -> ScoreFn:
    """The default score: accuracy on (public) x, y."""
    return lambda model: accuracy(predict_logits(model, x), y)
