"""The genetic algorithm of XDream (Xiao & Kreiman 2020), on DEAP's operators."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import base, tools

from evolver._deap import Individual, random_from
from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput


@dataclass
class GAParams:
    """XDream's defaults.

    population: codes per generation. selectivity: fitness = exp((s - max s) / kT) with
    kT = std(s) / selectivity. heritability: share of genes a child takes from its first
    parent. mutation_rate: probability that a gene mutates; mutation_size: the standard
    deviation of the Gaussian added. n_conserve: best codes carried over unchanged.
    """

    population: int = 20
    selectivity: float = 2.0
    heritability: float = 0.5
    mutation_rate: float = 0.5
    mutation_size: float = 0.5
    n_conserve: int = 1


class GeneticAlgorithm(Optimizer):
    """Roulette selection on exponential fitness, uniform crossover, Gaussian mutation, elitism.

    Missing responses (NaN) get no fitness: those codes are neither parents nor elites.
    If a whole generation is missing, the same codes are shown again.
    """

    name = "ga"
    Params = GAParams

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        p = self.params
        self.toolbox = base.Toolbox()
        self.toolbox.register("select", tools.selRoulette)
        self.toolbox.register("mate", tools.cxUniform, indpb=1.0 - p.heritability)
        self.toolbox.register("mutate", tools.mutGaussian, mu=0.0, sigma=p.mutation_size, indpb=p.mutation_rate)
        self.population = np.asarray(sample(p.population, rng), dtype=np.float32)
        self._parents: list[tuple[int, ...]] = [()] * p.population

    @classmethod
    def check_params(cls, p: GAParams) -> None:
        problems = [
            f"{name}={value} (must be {rule})" for name, value, ok, rule in (
                ("population", p.population, p.population >= 2, "at least 2"),
                ("selectivity", p.selectivity, p.selectivity > 0, "positive"),
                ("heritability", p.heritability, 0 <= p.heritability <= 1, "in [0, 1]"),
                ("mutation_rate", p.mutation_rate, 0 <= p.mutation_rate <= 1, "in [0, 1]"),
                ("mutation_size", p.mutation_size, p.mutation_size >= 0, "non-negative"),
                ("n_conserve", p.n_conserve, 0 <= p.n_conserve < p.population, "in [0, population)"),
            ) if not ok
        ]
        if problems:
            raise BadInput(f"Invalid parameters for optimizer 'ga': {'; '.join(problems)}.")

    def ask(self) -> np.ndarray:
        return self.population.copy()

    def parents(self) -> list[tuple[int, ...]]:
        return list(self._parents)

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        valid = np.flatnonzero(np.isfinite(scores))
        if valid.size == 0:
            self._parents = [(i,) for i in range(len(codes))]
            return
        fitness = self._fitness(scores[valid])
        candidates = [self._individual(codes[i], f, i) for i, f in zip(valid, fitness)]
        elites = valid[np.argsort(-scores[valid], kind="stable")[: self.params.n_conserve]]
        children, lineage = self._breed(candidates, self.params.population - len(elites))
        self.population = np.concatenate([codes[elites], children]).astype(np.float32)
        self._parents = [(int(i),) for i in elites] + lineage

    def _fitness(self, scores: np.ndarray) -> np.ndarray:
        kT = scores.std() / self.params.selectivity
        if kT == 0:  # all scores equal: every code is as fit as the best
            return np.ones_like(scores)
        return np.exp((scores - scores.max()) / kT)

    @staticmethod
    def _individual(code: np.ndarray, fitness: float, index: int) -> Individual:
        individual = Individual(code.tolist())
        individual.fitness.values = (float(fitness),)
        individual.index = int(index)
        return individual

    def _breed(self, candidates: list[Individual], n: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        children, lineage = [], []
        with random_from(self.rng):
            for _ in range(n):
                first, second = self.toolbox.select(candidates, 2)
                child, _ = self.toolbox.mate(self.toolbox.clone(first), self.toolbox.clone(second))
                (child,) = self.toolbox.mutate(child)
                children.append(child)
                lineage.append((first.index, second.index))
        return np.array(children, dtype=np.float32).reshape(n, self.code_dim), lineage

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": self.population.copy(),
            "parents": [list(p) for p in self._parents],
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = np.asarray(state["population"], dtype=np.float32)
        self._parents = [tuple(p) for p in state["parents"]]
        self.rng.bit_generator.state = state["rng"]
