"""UH-CMA-ES: CMA-ES that measures how much noise reorders its ranking, and widens its step when it does.

Hansen, Niederberger, Guzzella & Koumoutsakos (2009), "A method for handling uncertainty in evolutionary
optimization with an application to feedback control of combustion", IEEE TEC 13(1). A few codes of each
generation are shown twice; where the second answers move those codes' ranks further than a small share
(θ) of a chance ranking would, the search is uncertain and its step grows by `1 + 2 / (n + 10)` a
generation, so that the codes of a generation differ by more than the noise. The ranking uses each
re-shown code's mean answer.

Two departures, both measured on the bundled DCGAN (docs/optimizers.md, "A default that holds up under
noise"):
- the growth stops at `max_step` times the initial step: under a recorded neuron's noise the ranking never
  becomes certain, and a step grown without end leaves the generator's space (codes of norm 150);
- the re-showing stops once `PROOF` generations in a row had second answers equal to the first (and not all
  zero): a model neuron without simulated noise answers an image alike every time, and the search is then
  `cmaes`'s (its own draws are CMA-ES's throughout; only tied answers, broken at random, can widen its step
  before then).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evolver.optimizers.base import Sampler
from evolver.optimizers.cmaes import CMAES, CMAParams, SepCMAES, _CMA
from evolver_common import BadInput

PROOF = 3  # generations of identical second answers that show a noise-free neuron


@dataclass
class UHParams(CMAParams):
    """CMA-ES's parameters, and: reevaluate, the share of each generation shown twice (at least 2 codes,
    Hansen et al.'s max(0.1, 2 / population)); threshold, θ, the share of chance-level rank changes
    tolerated (0.2); smoothing, c_s, the weight of the newest generation in the uncertainty measure (0.3);
    max_step, how far the uncertainty may grow the step, in multiples of the initial step (3)."""

    reevaluate: float = 0.1
    threshold: float = 0.2
    smoothing: float = 0.3
    max_step: float = 3.0


class _Uncertainty(_CMA):
    """Uncertainty handling over either CMA-ES variant: see the module's docstring."""

    Params = UHParams

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        lam = self._lambda()
        self.repeats = min(lam, max(2, round(self.params.reevaluate * lam)))
        self.growth = 1 + 2 / (code_dim + 10)
        self.uncertainty = 0.0  # the smoothed rank-change measure s̄: above 0, noise reorders the ranking
        # ties are broken from a stream of its own, jumped off the run's, so that the search's own draws are
        # CMA-ES's: on a noise-free neuron it asks what `cmaes` would
        self.ties = np.random.Generator(rng.bit_generator.jumped())
        self.agreed = 0  # generations in a row whose second answers all equalled the first

    @classmethod
    def check_params(cls, params: UHParams) -> None:
        super().check_params(params)
        if not (0 < params.reevaluate <= 1 and 0 < params.threshold < 1 and 0 < params.smoothing <= 1
                and params.max_step >= 1):
            raise BadInput(f"Invalid parameters for optimizer '{cls.name}': reevaluate must be in (0, 1], threshold "
                           f"in (0, 1), smoothing in (0, 1] and max_step at least 1; got reevaluate="
                           f"{params.reevaluate}, threshold={params.threshold}, smoothing={params.smoothing}, "
                           f"max_step={params.max_step}.")

    def reevaluating(self) -> bool:
        """Whether the next generation shows some of its codes twice (not while its first generation is the
        generator's samples, nor once the neuron has shown itself noise-free)."""
        return not self.awaiting_prior and self.agreed < PROOF

    def ask(self) -> np.ndarray:
        # the population's codes are independent draws, so its first ones are as random a choice as any
        if self.reevaluating():
            return np.concatenate([self.population, self.population[:self.repeats]])
        return self.population.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        lam = len(self.population)
        if len(codes) == lam:
            return super().tell(codes, scores)
        scores = np.asarray(scores, dtype=np.float64)
        first, again = scores[:lam].copy(), scores[lam:]
        both = np.isfinite(first[:self.repeats]) & np.isfinite(again)
        self._measure(first, again, both)
        first[:self.repeats] = np.where(both, (first[:self.repeats] + again) / 2,
                                        np.where(np.isfinite(again), again, first[:self.repeats]))
        super().tell(codes[:lam], first)
        ceiling = self.params.max_step * self.sigma0
        if self.uncertainty > 0 and self.sigma < ceiling:
            self.sigma = min(self.sigma * self.growth, ceiling)

    def _measure(self, first: np.ndarray, again: np.ndarray, both: np.ndarray) -> None:
        """Update s̄ (Hansen et al. 2009, eq. 3) from the generation's answers and the second answers of its
        first codes; pairs with a missing answer are left out."""
        if not both.any():
            return
        if np.any(first[:self.repeats][both] != 0):  # zero proves nothing: a silent neuron, noisy or not, answers 0
            self.agreed = self.agreed + 1 if np.array_equal(first[:self.repeats][both], again[both]) else 0
        finite = np.isfinite(first)
        told = np.concatenate([first[finite], again[both]])
        # ties (spike counts tie often) are broken at random: answers that do not tell images apart rank them
        # no better than chance, which is the uncertainty measured
        order = np.lexsort((self.ties.random(told.size), -told))
        rank = np.empty(told.size)
        rank[order] = np.arange(1, told.size + 1)
        r_olds = rank[np.cumsum(finite)[both.nonzero()[0]] - 1]
        r_news = rank[finite.sum():]
        changes = [2 * (abs(r_new - r_old) - 1) - self._chance(told.size, r_new - (new > old))
                   - self._chance(told.size, r_old - (old > new))
                   for old, new, r_old, r_new in zip(first[both.nonzero()[0]], again[both], r_olds, r_news)]
        self.uncertainty = (1 - self.params.smoothing) * self.uncertainty + self.params.smoothing * np.mean(changes)

    def _chance(self, n: int, rank: int) -> float:
        """Δ_lim: the θ/2 quantile of the rank change |R' − rank| when R' is a random rank among `n` − 1."""
        return float(np.percentile(np.abs(np.arange(1, n) - rank), self.params.threshold * 50))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "uncertainty": self.uncertainty, "agreed": self.agreed,
                "ties": self.ties.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.uncertainty, self.agreed = float(state["uncertainty"]), int(state["agreed"])
        self.ties.bit_generator.state = state["ties"]


class UncertaintyCMAES(_Uncertainty, CMAES):
    """UH-CMA-ES with a full covariance (DEAP's strategy)."""

    name = "uh-cmaes"


class UncertaintySepCMAES(_Uncertainty, SepCMAES):
    """UH-CMA-ES with a diagonal covariance: what `uh-cmaes` runs on codes beyond FULL_COVARIANCE_LIMIT."""

    name = "uh-sep-cmaes"
