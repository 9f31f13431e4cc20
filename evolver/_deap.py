"""DEAP's globals live here: the `creator` classes and DEAP's use of Python's `random`."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
from deap import base, creator

if not hasattr(creator, "FitnessMax"):
    creator.create("FitnessMax", base.Fitness, weights=(1.0,))
    creator.create("Individual", list, fitness=creator.FitnessMax, index=-1)

Individual = creator.Individual


@contextlib.contextmanager
def random_from(rng: np.random.Generator) -> Iterator[None]:
    """Let DEAP's operators, which draw from the global `random`, draw from `rng` instead.

    The global `random` is seeded from `rng` for the duration of the block and put back
    as it was afterwards, so that a run depends only on its own seeded generator.
    """
    saved = random.getstate()
    random.seed(int(rng.integers(2**63)))
    try:
        yield
    finally:
        random.setstate(saved)
