"""SphereCMA (Wang & Ponce 2022): search on a sphere of fixed code norm with geodesic steps.

Wang & Ponce found that in DeePSiM's space a code's norm mostly sets image contrast, so they
keep every code on a sphere of the initial codes' norm: new codes leave the current centre
along random tangent directions by an angle that decays over generations, and the centre moves
to the weighted mean of the best half, projected back on the sphere.

The angle's schedule is the authors' (Animadversio/ActMax-Optimizer-Dev, `core/Optimizers.py`,
`ZOHA_Sphere_lr_euclid.lr_schedule(n_gen, mode="exp", lim=(50, 7.33))`): their tangent step is
mu · v with v ~ N(0, I) on the tangent plane and mu = angle / √dim, so its length, the geodesic angle of
a sample (their "Current Exploration ... deg"), is the angle itself: 50° at the first generation to
7.33° at the last, log-linearly. evolver draws each sample at exactly that angle, over 75 generations
(their runs: population 40, 3,000 images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput


@dataclass
class SphereParams:
    """population: codes per generation. angle_start, angle_end: the geodesic step (radians) at the
    first generation and after `decay_generations` (log-linear in between, constant after): the authors'
    50° and 7.33°."""

    population: int = 40
    angle_start: float = math.radians(50.0)
    angle_end: float = math.radians(7.33)
    decay_generations: int = 75


class SphereCMA(Optimizer):
    name = "sphere-cma"
    Params = SphereParams

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        prior = sample(max(64, self.params.population), rng).astype(np.float64)
        self.radius = float(np.linalg.norm(prior, axis=1).mean())
        mu = self.params.population // 2
        w = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
        self.weights = w / w.sum()
        self.centre = self._on_sphere(prior[0])
        self.generation = 0
        self.population = self._generate()

    @classmethod
    def check_params(cls, p: SphereParams) -> None:
        if p.population < 4 or not 0 < p.angle_end <= p.angle_start < math.pi or p.decay_generations < 1:
            raise BadInput("Invalid parameters for optimizer 'sphere-cma': need population >= 4, "
                           f"0 < angle_end <= angle_start < pi, decay_generations >= 1; got {p}.")

    def _on_sphere(self, x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True) * self.radius

    def angle(self) -> float:
        p = self.params
        t = min(self.generation / p.decay_generations, 1.0)
        return float(p.angle_start * (p.angle_end / p.angle_start) ** t)

    def _generate(self) -> np.ndarray:
        unit = self.centre / self.radius
        tangent = self.rng.standard_normal((self.params.population, self.code_dim))
        tangent -= np.outer(tangent @ unit, unit)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        theta = self.angle()
        return (self.radius * (math.cos(theta) * unit + math.sin(theta) * tangent)).astype(np.float32)

    def ask(self) -> np.ndarray:
        return self.population.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        valid = np.flatnonzero(np.isfinite(scores))
        mu = len(self.weights)
        if valid.size >= mu:
            best = valid[np.argsort(-scores[valid], kind="stable")[:mu]]
            self.centre = self._on_sphere(self.weights @ codes[best].astype(np.float64))
            self.generation += 1
        self.population = self._generate()

    def state_dict(self) -> dict[str, Any]:
        return {"radius": self.radius, "centre": self.centre.copy(), "generation": self.generation, "population": self.population.copy(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.radius = float(state["radius"])
        self.centre = np.asarray(state["centre"], dtype=np.float64)
        self.generation = int(state["generation"])
        self.population = np.asarray(state["population"], dtype=np.float32)
        self.rng.bit_generator.state = state["rng"]
