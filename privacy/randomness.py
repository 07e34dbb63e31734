"""Where a DP mechanism's randomness comes from (DESIGN §5.9): Poisson sampling, Gaussian noise,
the number of repetitions of a hyper-parameter search, and GNMax's noise.

Secure (the default, `seed=None`): numpy's PCG64DXSM generator seeded through a SeedSequence from
128 bits of OS entropy (`secrets.randbits`), which are never stored or returned. Anyone who knew
those bits could rebuild the noise and subtract it from what was released; nobody does. PCG64DXSM
is a fast statistical generator, not a cryptographically secure one: its state could in principle
be inferred from enough of its raw outputs, but the mechanism never releases raw outputs, only
their sums with clipped gradients. Attacks on the floating-point representation of Gaussian samples
(Mironov 2012) are out of scope, as in Opacus and TF Privacy without their secure modes.

Reproducible (opt-in, `[run] reproducible_noise = true`): the same construction from the recorded
seed, so anyone holding the seed can rebuild the noise. Every artifact then carries
REPRODUCIBLE_WARNING.
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

SECURE_ENTROPY_BITS = 128
SECURE = "secure"
REPRODUCIBLE = "reproducible"
SECURE_DESCRIPTION = (
    "secure: noise and sampling from 128 bits of OS entropy that were never recorded"
)
REPRODUCIBLE_WARNING = (
    "noise reproducible from the recorded seed: ε does not hold against anyone who has it"
)


def noise_mode(seed: int | None) -> str:
    return SECURE if seed is None else REPRODUCIBLE


def noise_description(mode: str) -> str:
    """The words every artifact carries about its noise."""
    return REPRODUCIBLE_WARNING if mode == REPRODUCIBLE else SECURE_DESCRIPTION


def mechanism_rngs(seed: int | None, count: int = 1) -> list[np.random.Generator]:
    """`count` independent generators for one mechanism: secure when seed is None, else derived
    from seed (reproducible, for experiments only)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    entropy = secrets.randbits(SECURE_ENTROPY_BITS) if seed is None else int(seed)
    children = np.random.SeedSequence(entropy).spawn(count)
    return [np.random.Generator(np.random.PCG64DXSM(child)) for child in children]


def child_seed(seed: int | None, *parts: int) -> int | None:
    """An independent reproducible seed for a sub-mechanism (None stays None: secure)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), *parts]).generate_state(1)[0])


def poisson_sample(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Indices of a Poisson sample of range(n): each joins independently with probability rate."""
    return np.flatnonzero(rng.random(n) < rate)


def standard_normal(
    rng: np.random.Generator, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype
) -> torch.Tensor:
    """A CPU tensor of N(0, 1) draws of the given shape and dtype."""
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    draws = rng.standard_normal(tuple(shape), dtype=numpy_dtype)
    return torch.from_numpy(draws).to(dtype)
