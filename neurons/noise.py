"""Noise models for simulated neurons: what a recorded neuron adds to its mean response.

Specs (the `--noise` option):
- `poisson:max_rate=R[,reps=K]` (XDream): responses are scaled so that the largest response of
  the first batch is R spikes, spike counts are Poisson-sampled K times (default 1) and averaged,
  and the mean count is scaled back to response units. Negative responses fire no spikes.
- `poisson:count=C[,overdispersion=F][,baseline=B]`: a recorded neuron's spike count in its window, one
  presentation at a time. Responses are scaled so that the median first-batch response (of those above
  zero) drives C spikes, B spontaneous spikes are added to every presentation (default 0), and the count
  is Poisson, or with F > 0 negative binomial: Poisson of the rate times a gain drawn from a gamma of mean 1
  and variance F, so that the variance is λ + F λ² (the modulated Poisson of Goris, Movshon & Simoncelli
  2014; F of 0.1–1 is typical of cortex). The count less B, scaled back, is the told response: its mean is
  the response (above zero). C=5 is an IT neuron at 25 spikes/s in a 200 ms window.
- `multiplicative:S` (Wang & Ponce 2022): s * max(0, 1 + S * N(0, 1)).
- `gaussian:sd=X`: s + X * N(0, 1).
All draws come from the run's seeded generator; the first batch's scale is part of the state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from evolver_common import BadInput

NOISE_HELP = ("Valid noise specs: poisson:max_rate=R[,reps=K] (e.g. poisson:max_rate=20,reps=2), "
              "poisson:count=C[,overdispersion=F][,baseline=B] (e.g. poisson:count=5,overdispersion=0.3), "
              "multiplicative:S (e.g. multiplicative:0.5), gaussian:sd=X (e.g. gaussian:sd=0.1).")


# Repeats a response is averaged over: beyond this, a typo that would fill memory.
MAX_REPS = 1000
# Above this many expected spikes a Poisson count is drawn as its normal approximation (exact to
# within 1/sqrt(rate)): numpy refuses rates near 1e19, which a response far above the first
# generation's largest (the scale is fixed on it) reaches.
NORMAL_ABOVE = 1e8


def spike_counts(rates: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of `reps` Poisson counts at each of `rates` (expected spikes, ≥ 0)."""
    small = rates <= NORMAL_ABOVE
    counts = np.empty_like(rates)
    counts[small] = rng.poisson(rates[small], size=(reps, int(small.sum()))).mean(axis=0)
    large = rates[~small]
    counts[~small] = large + np.sqrt(large / reps) * rng.standard_normal(large.shape)
    return counts


@dataclass
class Noise:
    """A parsed noise spec; `__call__(clean, rng)` returns noisy responses of the same shape."""

    kind: str
    level: float  # max_rate or count (poisson), S (multiplicative) or sd (gaussian)
    reps: int = 1
    anchor: str = "max"  # poisson: the first batch's response mapped to `level` spikes, 'max' or 'median'
    overdispersion: float = 0.0  # poisson:count: the gain's variance
    baseline: float = 0.0  # poisson:count: spontaneous spikes a presentation
    state: dict = field(default_factory=dict)  # poisson's scale, fixed on the first batch

    @classmethod
    def parse(cls, spec: str) -> Noise:
        match = re.fullmatch(r"(poisson|multiplicative|gaussian):(.+)", spec.strip())
        if not match:
            raise BadInput(f"Malformed noise spec '{spec[:200]}'. {NOISE_HELP}")
        kind, args = match.groups()
        try:
            if kind == "multiplicative":
                return cls._checked(cls(kind, float(args)))
            values = dict(part.split("=", 1) for part in args.split(","))
            if kind == "poisson" and "count" in values:
                noise = cls(kind, float(values.pop("count")), anchor="median",
                            overdispersion=float(values.pop("overdispersion", 0)),
                            baseline=float(values.pop("baseline", 0)))
            else:
                noise = cls(kind, float(values.pop("max_rate" if kind == "poisson" else "sd")),
                            int(values.pop("reps", 1)) if kind == "poisson" else 1)
            if values:
                raise ValueError(f"unknown {', '.join(values)}")
        except KeyError as err:
            raise BadInput(f"Malformed noise spec '{spec[:200]}' (missing {err.args[0]}). {NOISE_HELP}") from None
        except ValueError as err:
            raise BadInput(f"Malformed noise spec '{spec[:200]}' ({err}). {NOISE_HELP}") from None
        return cls._checked(noise)

    @staticmethod
    def _checked(noise: Noise) -> Noise:
        if not (0 < noise.level < np.inf) or not 1 <= noise.reps <= MAX_REPS:
            raise BadInput(f"The noise level must be a positive finite number and reps 1–{MAX_REPS}; got {noise.kind} "
                           f"level {noise.level}, reps {noise.reps}.")
        if not (0 <= noise.overdispersion < np.inf and 0 <= noise.baseline < np.inf):
            raise BadInput(f"The noise's overdispersion and baseline (poisson:count) must be finite and at least 0; got "
                           f"overdispersion={noise.overdispersion}, baseline={noise.baseline}.")
        return noise

    def __str__(self) -> str:
        if self.kind == "poisson" and self.anchor == "median":
            return f"poisson:count={self.level:g},overdispersion={self.overdispersion:g},baseline={self.baseline:g}"
        if self.kind == "poisson":
            return f"poisson:max_rate={self.level:g},reps={self.reps}"
        return f"multiplicative:{self.level:g}" if self.kind == "multiplicative" else f"gaussian:sd={self.level:g}"

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clean = np.asarray(clean, dtype=np.float64)
        noisy = np.full_like(clean, np.nan)
        seen = np.isfinite(clean)
        s = clean[seen]
        if self.kind == "multiplicative":
            noisy[seen] = s * np.maximum(0.0, 1.0 + self.level * rng.standard_normal(s.shape))
        elif self.kind == "gaussian":
            noisy[seen] = s + self.level * rng.standard_normal(s.shape)
        else:
            self._fix_scale(s)
            scale = self.state.get("scale", 1.0)
            rates = self.baseline + np.maximum(s, 0.0) * scale
            if self.overdispersion:
                rates = rates * rng.gamma(1 / self.overdispersion, self.overdispersion, size=rates.shape)
            noisy[seen] = (spike_counts(rates, self.reps, rng) - self.baseline) / scale
        return noisy

    def _fix_scale(self, responses: np.ndarray) -> None:
        """The spikes a response unit drives, fixed on the first batch with a response above zero."""
        driving = responses[responses > 0]
        if "scale" not in self.state and driving.size:
            anchor = driving.max() if self.anchor == "max" else np.median(driving)
            self.state["scale"] = self.level / float(anchor)
