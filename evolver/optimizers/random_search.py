"""Random search: every generation fresh codes from the generator's initial distribution (the floor)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput


@dataclass
class RandomParams:
    population: int = 20


class RandomSearch(Optimizer):
    name = "random"
    Params = RandomParams

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        self.population = np.asarray(sample(self.params.population, rng), dtype=np.float32)

    @classmethod
    def check_params(cls, p: RandomParams) -> None:
        if p.population < 1:
            raise BadInput(f"Invalid parameters for optimizer 'random': population={p.population} (must be >= 1).")

    def ask(self) -> np.ndarray:
        return self.population.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        self.population = np.asarray(self.sample(self.params.population, self.rng), dtype=np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"population": self.population.copy(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = np.asarray(state["population"], dtype=np.float32)
        self.rng.bit_generator.state = state["rng"]
