"""Noise models for simulated neurons: what a recorded neuron adds to its mean response.

Specs (the `--noise` option):
- `poisson:max_rate=R[,reps=K]` (XDream): responses are scaled so that the largest response of
  the first batch is R spikes, spike counts are Poisson-sampled K times (default 1) and averaged,
  and the mean count is scaled back to response units. Negative responses fire no spikes.
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
    level: float  # max_rate (poisson), S (multiplicative) or sd (gaussian)
    reps: int = 1
    state: dict = field(default_factory=dict)  # poisson's scale, fixed on the first batch

    @classmethod
    def parse(cls, spec: str) -> Noise:
        match = re.fullmatch(r"(poisson|multiplicative|gaussian):(.+)", spec.strip())
        if not match:
            raise BadInput(f"Malformed noise spec '{spec[:200]}'. {NOISE_HELP}")
        kind, args = match.groups()
        try:
            if kind == "multiplicative":
                return cls._checked(kind, float(args), 1)
            values = dict(part.split("=", 1) for part in args.split(","))
            level = float(values.pop("max_rate" if kind == "poisson" else "sd"))
            reps = int(values.pop("reps", 1)) if kind == "poisson" else 1
            if values:
                raise ValueError(f"unknown {', '.join(values)}")
        except KeyError as err:
            raise BadInput(f"Malformed noise spec '{spec[:200]}' (missing {err.args[0]}). {NOISE_HELP}") from None
        except ValueError as err:
            raise BadInput(f"Malformed noise spec '{spec[:200]}' ({err}). {NOISE_HELP}") from None
        return cls._checked(kind, level, reps)

    @classmethod
    def _checked(cls, kind: str, level: float, reps: int) -> Noise:
        if not (0 < level < np.inf) or not 1 <= reps <= MAX_REPS:
            raise BadInput(f"The noise level must be a positive finite number and reps 1–{MAX_REPS}; got {kind} level "
                           f"{level}, reps {reps}.")
        return cls(kind, level, reps)

    def __str__(self) -> str:
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
            if "scale" not in self.state and s.size and s.max() > 0:
                self.state["scale"] = self.level / float(s.max())
            scale = self.state.get("scale", 1.0)
            noisy[seen] = spike_counts(np.maximum(s, 0.0) * scale, self.reps, rng) / scale
        return noisy
