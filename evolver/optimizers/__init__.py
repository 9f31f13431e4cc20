"""Optimizers by name: `create('ga', code_dim=..., sample=..., rng=..., **params)`; `nevergrad:NAME` is any
optimizer of nevergrad's registry (evolver.optimizers.nevergrad_door)."""
from __future__ import annotations

from typing import Any

import numpy as np

from evolver.optimizers import nevergrad_door
from evolver.optimizers.base import Optimizer, Sampler
from evolver.optimizers.cmaes import CMAES, FULL_COVARIANCE_LIMIT, SepCMAES
from evolver.optimizers.finite_difference import FDGD, NES
from evolver.optimizers.ga import GeneticAlgorithm
from evolver.optimizers.gradient import GradientAscent
from evolver.optimizers.racing import RacingCMA
from evolver.optimizers.random_search import RandomSearch
from evolver.optimizers.sphere import SphereCMA
from evolver.optimizers.uncertainty import UncertaintyCMAES, UncertaintySepCMAES
from evolver_common import BadInput
from evolver_common.registry import Registry

# Installed packages add optimizers (an Optimizer class) through the entry-point group below.
REGISTRY: Registry[type[Optimizer]] = Registry("optimizer", group="evolver.optimizers")
for _cls in (GeneticAlgorithm, CMAES, UncertaintyCMAES, SepCMAES, UncertaintySepCMAES, SphereCMA, RacingCMA,
             RandomSearch, GradientAscent, FDGD, NES):
    REGISTRY.register(_cls.name, _cls)


SEPARABLE = {CMAES.name: SepCMAES.name, UncertaintyCMAES.name: UncertaintySepCMAES.name}


def get(name: str) -> type[Optimizer]:
    """The optimizer class registered as `name`, or nevergrad's `nevergrad:NAME`."""
    if name.startswith(nevergrad_door.PREFIX):
        return nevergrad_door.optimizer(name)
    return REGISTRY.get(name)


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Optimizer parameters from NAME=VALUE texts (`--param`); the optimizer converts the values."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"--param takes NAME=VALUE (e.g. --param mutation_size=0.3), got '{pair}'.")
        params[name.strip()] = value.strip()
    return params


def resolve(name: str, code_dim: int) -> str:
    """The optimizer that runs when `name` is asked for on codes of `code_dim`: `cmaes` and `uh-cmaes` keep a
    full covariance up to FULL_COVARIANCE_LIMIT dimensions (DeePSiM's 4096-d would cost seconds a
    generation) and are the separable `sep-cmaes` and `uh-sep-cmaes` beyond."""
    return SEPARABLE.get(name, name) if code_dim > FULL_COVARIANCE_LIMIT else name


def create(name: str, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any) -> Optimizer:
    """Build the optimizer `name` (see `resolve`) with `params` (unknown names are a BadInput)."""
    return get(resolve(name, code_dim))(code_dim, sample, rng, **params)


__all__ = ["Optimizer", "REGISTRY", "create", "get", "parse_params", "resolve"]
