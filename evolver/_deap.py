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
    """Let DEAP, which draws from the global `random` (operators) and `numpy.random` (CMA-ES),
    draw from `rng` instead.

    Both global states are seeded from `rng` for the duration of the block and put back as
    they were afterwards, so that a run depends only on its own seeded generator.
    """
    saved_python, saved_numpy = random.getstate(), np.random.get_state()
    random.seed(int(rng.integers(2**63)))
    np.random.seed(int(rng.integers(2**32)))
    try:
        yield
    finally:
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)
