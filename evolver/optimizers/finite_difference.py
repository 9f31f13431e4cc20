"""XDream's gradient estimators (Xiao & Kreiman 2020, `xdream/Optimizers.py`): finite-difference gradient
descent (`fdgd`) and natural evolution strategies (`nes`, after Ilyas et al. 2018).

Both keep one centre code, show codes around it (antithetic pairs centre ± step by default), estimate the
gradient of the response from their scores and move the centre up it by `lr`. They start, as XDream's do
from zeros, at the mean of the generator's prior. The defaults are the start of XDream's own parameter
search (`tools/param_opt_with_CNN2.py`: 20 samples, search radius 1.5, learning rate 1.5).

XDream's update uses the raw responses, so its step grows with the neuron's response scale; evolver's
neurons answer from ~0.01 (a V1 cell) to ~100 (a class unit), so by default (`scale_free=true`) each
generation's scores are z-scored (less their mean, over their standard deviation) before the update, which
makes `lr` a step in code units whatever the neuron (and gives NES without pairs a baseline).
`scale_free=false` is XDream's update exactly.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput


@dataclass
class GradientEstimateParams:
    """population: codes a generation (antithetic: rounded down to pairs). radius: the standard deviation of
    a step around the centre, in code units. lr: the learning rate of the centre's move. antithetic: pairs
    centre ± step (else FDGD compares each step with the centre, shown as the last code, and NES uses the
    raw scores). scale_free: z-score each generation's scores first. radius_lr (NES only): the learning rate of the radius (0: fixed), kept above min_radius."""

    population: int = 20
    radius: float = 1.5
    lr: float = 1.5
    antithetic: bool = True
    scale_free: bool = True
    radius_lr: float = 0.0
    min_radius: float = 0.01


class _GradientEstimate(Optimizer):
    """The centre, the steps around it and their update; a subclass's `_gradient` estimates the gradient
    from the told generation. Codes with a missing response (NaN) leave the estimate (with their antithetic
    partner); a generation with too few responses is shown again."""

    Params = GradientEstimateParams
    BASELINE: ClassVar[bool]  # whether a non-antithetic generation ends with the centre itself

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        self.centre = np.asarray(sample(2 * self.params.population, rng), dtype=np.float64).mean(axis=0)
        self.radius = float(self.params.radius)
        self._draw()

    @classmethod
    def check_params(cls, p: GradientEstimateParams) -> None:
        if p.population < 2 or not p.radius > 0 or not p.lr > 0 or p.radius_lr < 0 or not p.min_radius > 0:
            raise BadInput(f"Invalid parameters for optimizer '{cls.name}': need population >= 2, radius > 0, "
                           f"lr > 0, radius_lr >= 0 and min_radius > 0; got {p}.")

    def _independent(self) -> int:
        p = self.params
        return p.population // 2 if p.antithetic else p.population - (1 if self.BASELINE else 0)

    def _draw(self) -> None:
        self.noise = self.rng.standard_normal((self._independent(), self.code_dim))

    def ask(self) -> np.ndarray:
        steps = self.radius * self.noise
        parts = [self.centre + steps]
        if self.params.antithetic:
            parts.append(self.centre - steps)
        elif self.BASELINE:
            parts.append(self.centre[None])
        return np.concatenate(parts).astype(np.float32)

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        answered = scores[np.isfinite(scores)]
        if answered.size < 2:  # too few to estimate anything: the same codes again
            return
        if self.params.scale_free:
            spread = answered.std()
            scores = (scores - answered.mean()) / spread if spread > 0 else scores - answered.mean()
        estimate = self._gradient(scores)
        if estimate is not None:
            self.centre = self.centre + self.params.lr * estimate
            self._draw()

    @abc.abstractmethod
    def _gradient(self, scores: np.ndarray) -> np.ndarray | None:
        """The gradient estimate from a generation's scores (NaN: missing), or None where none can be made."""

    def state_dict(self) -> dict[str, Any]:
        return {"centre": self.centre.copy(), "noise": self.noise.copy(), "radius": self.radius,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.centre = np.asarray(state["centre"], dtype=np.float64)
        self.noise = np.asarray(state["noise"], dtype=np.float64)
        self.radius = float(state["radius"])
        self.rng.bit_generator.state = state["rng"]


class FDGD(_GradientEstimate):
    """Finite-difference gradient descent: grad = mean(Δscore · step / mean|step|²), Δscore the half
    difference of an antithetic pair or a step's score less the centre's."""

    name = "fdgd"
    BASELINE = True

    def _gradient(self, scores: np.ndarray) -> np.ndarray | None:
        k = self._independent()
        difference = (scores[:k] - scores[k:]) / 2 if self.params.antithetic else scores[:k] - scores[-1]
        kept = np.isfinite(difference)
        if not kept.any():
            return None
        steps = self.radius * self.noise[kept]
        norm = np.abs(steps).mean(axis=1)
        return (difference[kept, None] * steps / norm[:, None] ** 2).mean(axis=0)


class NES(_GradientEstimate):
    """Natural evolution strategies: grad = mean(score · z) / radius over the standard-normal z of every code
    (z and -z for a pair), and where `radius_lr` > 0 the radius learns too: += radius_lr · mean(score ·
    (z² - 1)) / radius, kept above `min_radius`."""

    name = "nes"
    BASELINE = False

    def _gradient(self, scores: np.ndarray) -> np.ndarray | None:
        if self.params.antithetic:
            k = self._independent()
            kept = np.isfinite(scores[:k]) & np.isfinite(scores[k:])  # a pair whole or not at all
            scores = np.concatenate([scores[:k][kept], scores[k:][kept]])
            z = np.concatenate([self.noise[kept], -self.noise[kept]])
        else:
            kept = np.isfinite(scores)
            scores, z = scores[kept], self.noise[kept]
        if scores.size == 0:
            return None
        gradient = (scores[:, None] * z).mean(axis=0) / self.radius
        if self.params.radius_lr > 0:
            widen = (scores[:, None] * (z ** 2 - 1)).mean() / self.radius
            self.radius = max(self.params.min_radius, self.radius + self.params.radius_lr * widen)
        return gradient
