"""Optimizers by name: `create('ga', code_dim=..., sample=..., rng=..., **params)`."""
from __future__ import annotations

from typing import Any

import numpy as np

from evolver.optimizers.base import Optimizer, Sampler
from evolver.optimizers.cmaes import CMAES, FULL_COVARIANCE_LIMIT, SepCMAES
from evolver.optimizers.ga import GeneticAlgorithm
from evolver.optimizers.gradient import GradientAscent
from evolver.optimizers.random_search import RandomSearch
from evolver.optimizers.sphere import SphereCMA
from evolver_common import BadInput, nearest

REGISTRY: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (GeneticAlgorithm, CMAES, SepCMAES, SphereCMA, RandomSearch, GradientAscent)
}


def get(name: str) -> type[Optimizer]:
    """The optimizer class registered as `name`."""
    if name not in REGISTRY:
        raise BadInput(
            f"Unknown optimizer '{name}' (closest: {nearest(name, REGISTRY)}). "
            f"Valid optimizers: {', '.join(sorted(REGISTRY))}."
        )
    return REGISTRY[name]


def resolve(name: str, code_dim: int) -> str:
    """The optimizer that runs when `name` is asked for on codes of `code_dim`: `cmaes` keeps a full
    covariance up to FULL_COVARIANCE_LIMIT dimensions (DeePSiM's 4096-d would cost seconds a
    generation) and is the separable `sep-cmaes` beyond."""
    return SepCMAES.name if name == CMAES.name and code_dim > FULL_COVARIANCE_LIMIT else name


def create(name: str, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any) -> Optimizer:
    """Build the optimizer `name` (see `resolve`) with `params` (unknown names are a BadInput)."""
    return get(resolve(name, code_dim))(code_dim, sample, rng, **params)


__all__ = ["Optimizer", "REGISTRY", "create", "get", "resolve"]
