"""CMA-ES: full covariance through DEAP's `cma.Strategy`, and a separable (diagonal) variant.

DEAP's strategy keeps a full covariance and eigendecomposes it at every update, O(n^3): fine
for the DCGAN's 100-d codes, seconds per generation at DeePSiM's 4096-d. For those codes
`evolver.optimizers.create` gives `sep-cmaes` when `cmaes` is asked for; `sep-cmaes` is the diagonal CMA-ES of Ros & Hansen (2008), O(n) per sample, written here
because neither DEAP nor pycma offers one whose whole state is plain arrays (pycma's is an
object graph, resumable only by pickling) and whose randomness comes from our generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import cma

from evolver._deap import random_from
from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput

FULL_COVARIANCE_LIMIT = 1024  # `cmaes` on codes longer than this runs `sep-cmaes`
# On a neuron that answers every image alike, the plateau rule widens the step every generation without
# end (codes of 1e12 by generation 100). Past this many times its initial value (or non-finite), the search
# restarts from its mean with the initial step and covariance.
MAX_STEP_GROWTH = 100.0
STARTS = ("zero", "sample", "prior")


@dataclass
class CMAParams:
    """population: codes per generation (0 = CMA's default 4 + 3 ln n). sigma0: initial step size
    (0 = the standard deviation of the generator's initial codes). start: 'zero' (the zero code, as
    Wang & Ponce 2022), 'sample' (the mean of a batch of the generator's initial codes) or 'prior'
    (the first generation is the generator's own samples and the search starts at the best of them,
    as the GA starts from them; on the bundled conditional DCGAN, whose zero code is an even mixture
    of every class, it scored below 'zero' in `evolver bench`: docs/optimizers.md, "Choosing the default optimizer")."""

    population: int = 0
    sigma0: float = 0.0
    start: str = "zero"


def _start(params: CMAParams, code_dim: int, sample: Sampler, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    prior = sample(256, rng).astype(np.float64)
    centroid = prior.mean(0) if params.start == "sample" else np.zeros(code_dim)
    return centroid, params.sigma0 or float(prior.std())


def flat_fitness(scores: np.ndarray) -> bool:
    """Whether every score of a generation is the same, e.g. a unit silent for every image shown: the
    ranking carries no signal, and the step size must grow to find where the landscape slopes (pycma
    grows it by exp(0.2 + cs / damps) when the best ties the quarter-rank; ties of the whole
    generation only, here, because bf16 responses tie among the best near convergence). One score
    alone (the others missing) is no plateau."""
    return len(scores) > 1 and bool(np.ptp(scores) == 0)


def _check(name: str, params: CMAParams) -> None:
    if params.start not in STARTS:
        raise BadInput(f"Invalid parameters for optimizer '{name}': start={params.start!r} "
                       f"(must be one of {', '.join(STARTS)}).")
    if params.population < 0 or params.population == 1 or params.sigma0 < 0:
        raise BadInput(f"Invalid parameters for optimizer '{name}': population must be 0 (default) or at least 2, "
                       f"sigma0 non-negative; got population={params.population}, sigma0={params.sigma0}.")


class _CMA(Optimizer):
    """What both CMA-ES variants share: their parameters, the start and the record.

    With start='prior' the first generation asked is `sample`'s, and the first `tell` moves the
    search's mean to its best-scoring code, keeping the step size; a generation with no answer at
    all is shown again. Subclasses implement `_lambda` (codes a generation), `_generate` (a
    generation from the search state), `_recentre` (move its mean to a code), `_learn` (a CMA
    update from a told generation) and `_search_state` / `_load_search_state` (the record).
    """

    Params = CMAParams
    sigma0: float  # the initial step size, to which a restart returns

    def _begin(self) -> None:
        self.awaiting_prior = self.params.start == "prior"
        population = self.sample(self._lambda(), self.rng) if self.awaiting_prior else self._generate()
        self.population = np.asarray(population, dtype=np.float32)

    @classmethod
    def check_params(cls, params: CMAParams) -> None:
        _check(cls.name, params)

    def ask(self) -> np.ndarray:
        return self.population.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        valid = np.flatnonzero(np.isfinite(scores))
        if not self.awaiting_prior:
            self._learn(codes, scores, valid)
            if not self._step() <= MAX_STEP_GROWTH * self.sigma0:
                self._restart()
        elif valid.size:
            self._recentre(codes[valid[np.argmax(scores[valid])]].astype(np.float64))
            self.awaiting_prior = False
        else:
            return
        self.population = self._generate()

    def state_dict(self) -> dict[str, Any]:
        return {"search": self._search_state(), "awaiting_prior": self.awaiting_prior,
                "population": self.population.copy(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_search_state(state["search"])
        self.awaiting_prior = bool(state["awaiting_prior"])
        self.population = np.asarray(state["population"], dtype=np.float32)
        self.rng.bit_generator.state = state["rng"]


class CMAES(_CMA):
    """CMA-ES with a full covariance matrix (DEAP's `cma.Strategy`, log-weighted recombination)."""

    name = "cmaes"
    _STATE = ("centroid", "sigma", "pc", "ps", "C", "diagD", "B", "BD", "cond", "update_count")

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        centroid, self.sigma0 = _start(self.params, code_dim, sample, rng)
        self.strategy = self._strategy(centroid)
        self._begin()

    def _strategy(self, centroid: np.ndarray) -> cma.Strategy:
        options = {"lambda_": self.params.population} if self.params.population else {}
        return cma.Strategy(centroid=centroid, sigma=self.sigma0, **options)

    def _step(self) -> float:
        return float(self.strategy.sigma * np.max(self.strategy.diagD))

    @property
    def sigma(self) -> float:
        """The global step size σ."""
        return float(self.strategy.sigma)

    @sigma.setter
    def sigma(self, value: float) -> None:
        self.strategy.sigma = value

    def _restart(self) -> None:
        self.strategy = self._strategy(np.asarray(self.strategy.centroid, dtype=np.float64))

    def _lambda(self) -> int:
        return self.strategy.lambda_

    def _generate(self) -> np.ndarray:
        with random_from(self.rng):
            return np.array(self.strategy.generate(list), dtype=np.float32)

    def _recentre(self, code: np.ndarray) -> None:
        self.strategy.centroid = code

    def _learn(self, codes: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> None:
        # a CMA update needs a ranking of at least mu answers (the recombination weights); with fewer,
        # the step is kept and new samples are shown
        if valid.size < max(2, self.strategy.mu):
            return
        self.strategy.update([_Scored(codes[i], scores[i]) for i in valid])
        if flat_fitness(scores[valid]):
            self.strategy.sigma *= math.exp(0.2 + self.strategy.cs / self.strategy.damps)

    def _search_state(self) -> dict[str, Any]:
        return {k: np.asarray(getattr(self.strategy, k)) for k in self._STATE}

    def _load_search_state(self, search: dict[str, Any]) -> None:
        for key, value in search.items():
            setattr(self.strategy, key, value if np.ndim(value) else value.item())


class _Scored(list):
    """What DEAP's strategy update expects: a sequence with `fitness.values`."""

    class _Fitness:
        def __init__(self, value: float):
            self.values = (value,)

        def __lt__(self, other):  # DEAP sorts by fitness, best first
            return self.values < other.values

    def __init__(self, code: np.ndarray, score: float):
        super().__init__(code.astype(np.float64))
        self.fitness = self._Fitness(float(score))


class SepCMAES(_CMA):
    """Separable CMA-ES (Ros & Hansen 2008): a diagonal covariance, learning rate scaled by (n + 2) / 3."""

    name = "sep-cmaes"

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        n = code_dim
        self.lam = self.params.population or int(4 + 3 * math.log(n))
        self.mu = self.lam // 2
        w = math.log(self.mu + 0.5) - np.log(np.arange(1, self.mu + 1))
        self.weights = w / w.sum()
        self.mueff = 1 / np.sum(self.weights**2)
        self.cs = (self.mueff + 2) / (n + self.mueff + 5)
        self.ds = 1 + 2 * max(0.0, math.sqrt((self.mueff - 1) / (n + 1)) - 1) + self.cs
        self.cc = 4 / (n + 4)
        self.c1 = 2 / ((n + 1.3) ** 2 + self.mueff) * (n + 2) / 3
        self.cmu = min(1 - self.c1, 2 * (self.mueff - 2 + 1 / self.mueff) / ((n + 2) ** 2 + self.mueff) * (n + 2) / 3)
        self.chi = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        centroid, self.sigma0 = _start(self.params, n, sample, rng)
        self.state = self._initial(centroid)
        self._begin()

    def _initial(self, mean: np.ndarray) -> dict[str, Any]:
        n = self.code_dim
        return {"mean": mean, "sigma": self.sigma0, "diag": np.ones(n), "ps": np.zeros(n), "pc": np.zeros(n),
                "generation": 0}

    def _step(self) -> float:
        return float(self.state["sigma"] * np.sqrt(np.max(self.state["diag"])))

    @property
    def sigma(self) -> float:
        """The global step size σ."""
        return float(self.state["sigma"])

    @sigma.setter
    def sigma(self, value: float) -> None:
        self.state["sigma"] = value

    def _restart(self) -> None:
        self.state = self._initial(self.state["mean"])

    def _lambda(self) -> int:
        return self.lam

    def _generate(self) -> np.ndarray:
        s = self.state
        z = self.rng.standard_normal((self.lam, self.code_dim))
        return (s["mean"] + s["sigma"] * np.sqrt(s["diag"]) * z).astype(np.float32)

    def _recentre(self, code: np.ndarray) -> None:
        self.state["mean"] = code

    def _learn(self, codes: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> None:
        if valid.size < self.mu:
            return
        s, n = self.state, self.code_dim
        best = valid[np.argsort(-scores[valid], kind="stable")[: self.mu]]
        steps = (codes[best].astype(np.float64) - s["mean"]) / s["sigma"]  # y_i = sqrt(diag) z_i
        y_w = self.weights @ steps
        s["mean"] = s["mean"] + s["sigma"] * y_w
        s["ps"] = (1 - self.cs) * s["ps"] + math.sqrt(self.cs * (2 - self.cs) * self.mueff) * y_w / np.sqrt(s["diag"])
        s["generation"] += 1
        hsig = np.linalg.norm(s["ps"]) / math.sqrt(1 - (1 - self.cs) ** (2 * s["generation"])) / self.chi < 1.4 + 2 / (n + 1)
        s["pc"] = (1 - self.cc) * s["pc"] + hsig * math.sqrt(self.cc * (2 - self.cc) * self.mueff) * y_w
        s["diag"] = ((1 - self.c1 - self.cmu) * s["diag"] + self.c1 * s["pc"] ** 2
                     + self.cmu * self.weights @ steps**2)
        s["sigma"] *= math.exp(self.cs / self.ds * (np.linalg.norm(s["ps"]) / self.chi - 1))
        if flat_fitness(scores[valid]):
            s["sigma"] *= math.exp(0.2 + self.cs / self.ds)

    def _search_state(self) -> dict[str, Any]:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.state.items()}

    def _load_search_state(self, search: dict[str, Any]) -> None:
        self.state = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v)
                      for k, v in search.items()}
