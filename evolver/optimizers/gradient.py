"""White-box gradient ascent: Adam on the codes through a differentiable generator and neuron.

Not a black-box optimizer (a recorded neuron has no gradient) but the reference for what is
reachable: `evolver bench` divides by it. Each generation is one Adam step of every restart,
so it is charged the same images per generation as a black-box search of that population.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput


@dataclass
class GradientParams:
    """population: independent restarts. lr: Adam's step size, in code units."""

    population: int = 10
    lr: float = 0.2


class GradientAscent(Optimizer):
    name = "gradient"
    Params = GradientParams
    needs_gradient: ClassVar[bool] = True
    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator,
                 objective: Callable[[torch.Tensor], torch.Tensor] | None = None, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        if objective is None:
            raise BadInput("The gradient optimizer needs a differentiable objective (a model neuron and generator).")
        self.objective = objective
        self.codes = np.asarray(sample(self.params.population, rng), dtype=np.float64)
        self.moments = {"m": np.zeros_like(self.codes), "v": np.zeros_like(self.codes), "step": 0}

    @classmethod
    def check_params(cls, p: GradientParams) -> None:
        if p.population < 1 or not p.lr > 0:
            raise BadInput(f"Invalid parameters for optimizer 'gradient': need population >= 1 and lr > 0; got {p}.")

    def ask(self) -> np.ndarray:
        return self.codes.astype(np.float32)

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        x = torch.tensor(codes, dtype=torch.float32, requires_grad=True)
        self.objective(x).sum().backward()
        grad = x.grad.double().cpu().numpy()
        m, b1, b2 = self.moments, *self.BETAS
        m["step"] += 1
        m["m"] = b1 * m["m"] + (1 - b1) * grad
        m["v"] = b2 * m["v"] + (1 - b2) * grad**2
        m_hat, v_hat = m["m"] / (1 - b1 ** m["step"]), m["v"] / (1 - b2 ** m["step"])
        self.codes = codes.astype(np.float64) + self.params.lr * m_hat / (np.sqrt(v_hat) + self.EPS)

    def state_dict(self) -> dict[str, Any]:
        return {"codes": self.codes.copy(), "moments": {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                          for k, v in self.moments.items()},
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.codes = np.asarray(state["codes"], dtype=np.float64)
        self.moments = dict(state["moments"])
        self.rng.bit_generator.state = state["rng"]
