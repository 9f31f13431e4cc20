"""The Optimizer contract (DESIGN.md): ask/tell over numpy, maximising, resumable exactly."""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from evolver_common.specs import annotations, typed_options

Sampler = Callable[[int, np.random.Generator], np.ndarray]


class Optimizer(abc.ABC):
    """Proposes codes (`ask`) and learns from their scores (`tell`); higher scores are better.

    Subclasses declare their parameters as a dataclass in `Params`; every parameter is
    settable by name and recorded with the run. Randomness comes only from `rng`.

    Args:
        code_dim: length of a code.
        sample: the generator's initial distribution, `sample(n, rng) -> (n, code_dim)`.
        rng: the optimizer's own seeded generator; its state is part of `state_dict`.
        **params: values for the fields of `Params`.
    """

    name: ClassVar[str]
    Params: ClassVar[type]
    # True for white-box optimizers, given `render=` (codes -> images) and `respond=` (images -> responses),
    # both with autograd
    needs_gradient: ClassVar[bool] = False
    # True for optimizers given the generator's choice among kinds of image as `choice=` (a Choice or None)
    uses_choice: ClassVar[bool] = False
    # True for optimizers given the run's budget: `budget=` its images (None where it has none), `generations=`
    uses_budget: ClassVar[bool] = False

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, **params: Any):
        self.code_dim = code_dim
        self.sample = sample
        self.rng = rng
        self.params = self.parse_params(params)

    @classmethod
    def parse_params(cls, params: dict[str, Any]):
        """`Params` from a dict of values or strings ('0.3'), checked as every option is
        (evolver_common.specs.typed_options)."""
        defaults = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Params))
        values = typed_options(params, annotations(cls.Params), f"Invalid parameters for optimizer '{cls.name}'",
                               f"Their defaults: {defaults}.")
        parsed = cls.Params(**values)
        cls.check_params(parsed)
        return parsed

    @classmethod
    def check_params(cls, params) -> None:
        """Raise BadInput for parameter values outside their valid range."""

    @abc.abstractmethod
    def ask(self) -> np.ndarray:
        """The codes to evaluate next: (n, code_dim) float32."""

    @abc.abstractmethod
    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        """Scores (n,) of the codes from the last `ask`; NaN marks a missing response."""

    def parents(self) -> list[tuple[int, ...]] | None:
        """For each code of the last `ask`, the rows of the previously told batch it came from.

        None where the optimizer keeps no lineage (a distribution-based search).
        """
        return None

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: numpy arrays, numbers, strings, lists, dicts."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def describe(self) -> dict[str, Any]:
        """The optimizer's name and every parameter, for the run record."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}
