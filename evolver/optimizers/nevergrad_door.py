"""`nevergrad:NAME`: any optimizer of nevergrad's registry (Rapin & Teytaud 2018), the library Wang & Ponce
(GECCO 2022) benchmarked a dozen black-box searches from, through its ask/tell interface.

The code is an `ng.p.Array` that starts at the mean of the generator's prior with its spread as the
mutation's sigma; a generation is `population` asks (nevergrad's `num_workers`), and the run's image budget
(`--images`, else generations × population) is nevergrad's `budget` (NGOpt picks its algorithm from it). Nevergrad
minimises: it is told each response negated. A missing response (NaN) is told as the worst answered
response of its generation; a generation without any is shown again, untold. Where nevergrad's own batch
is larger than `population` (its CMA draws 4 + 3 ln d codes a batch, more in NGOpt's variants), it cannot
ask past its batch before the batch is told, as in its own `minimize(batch_mode=True)`: the generation
then ends with the batch's last codes, and is shorter.

Exact resume without pickle: nevergrad's optimizers hold their state in Python objects, but given the same
seed and the same tells they ask the same codes. The state is the seed and every generation's told losses;
`load_state_dict` replays them into a fresh optimizer and checks the SHA-256 of the codes it then asks
against the recorded one, so a nevergrad that would ask otherwise (another version) is refused by name.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput
from evolver_common.errors import nearest

PREFIX = "nevergrad:"
INSTALL = "nevergrad's optimizers need the package nevergrad: pip install 'evolver[nevergrad]'."


@dataclass
class NevergradParams:
    """population: codes a generation (nevergrad's num_workers: asks before the first tell)."""

    population: int = 20


def _nevergrad():
    try:
        import nevergrad
    except ImportError:
        raise BadInput(INSTALL) from None
    return nevergrad


@contextlib.contextmanager
def _quiet():
    """nevergrad's and pycma's running commentary (budget notes, step-size checks) kept from the run's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def methods() -> list[str]:
    """The names nevergrad's registry holds (`nevergrad:NAME`)."""
    return sorted(_nevergrad().optimizers.registry)


class Nevergrad(Optimizer):
    """One of nevergrad's optimizers (`method`) behind evolver's ask/tell contract."""

    Params = NevergradParams
    method: ClassVar[str]
    uses_budget: ClassVar[bool] = True

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, budget: int | None = None,
                 generations: int = 200, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        prior = np.asarray(sample(max(64, 2 * self.params.population), rng), dtype=np.float64)
        self.start, self.sigma = prior.mean(axis=0), float(prior.std(axis=0).mean()) or 1.0
        self.seed = int(rng.integers(2**31))
        self.budget = budget or generations * self.params.population
        self.told: list[np.ndarray] = []  # each generation's losses, as told
        self._begin()

    @classmethod
    def check_params(cls, p: NevergradParams) -> None:
        if p.population < 1:
            raise BadInput(f"Invalid parameters for optimizer '{cls.name}': population={p.population} "
                           "(must be >= 1).")

    def _begin(self) -> None:
        ng = _nevergrad()
        space = ng.p.Array(init=self.start).set_mutation(sigma=self.sigma)
        space.random_state = np.random.RandomState(self.seed)
        with _quiet():
            self.search = ng.optimizers.registry[self.method](parametrization=space, budget=self.budget,
                                                              num_workers=self.params.population)
        self._ask()

    def _ask(self) -> None:
        self.pending = []
        while len(self.pending) < self.params.population:
            try:
                with _quiet():
                    self.pending.append(self.search.ask())
            except RuntimeError as err:  # pycma's "samples expected but missing": its batch must be told first
                if not self.pending:
                    raise BadInput(f"nevergrad's {self.method} could not propose codes ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0]}). Try another nevergrad optimizer or population.") \
                        from None
                break
        self.codes = np.stack([np.asarray(c.value, dtype=np.float64) for c in self.pending]).astype(np.float32)

    def ask(self) -> np.ndarray:
        return self.codes.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        answered = np.isfinite(scores)
        if not answered.any():
            return
        losses = -np.where(answered, scores, scores[answered].min())
        self._tell(losses)
        self.told.append(losses)

    def _tell(self, losses: np.ndarray) -> None:
        with _quiet():
            for candidate, loss in zip(self.pending, losses):
                self.search.tell(candidate, float(loss))
        self._ask()

    def _digest(self) -> str:
        return hashlib.sha256(self.codes.tobytes()).hexdigest()

    def state_dict(self) -> dict[str, Any]:
        told = np.concatenate(self.told) if self.told else np.zeros(0)
        return {"seed": self.seed, "start": self.start.copy(), "sigma": self.sigma, "budget": self.budget,
                "told": told, "sizes": np.array([len(t) for t in self.told], dtype=np.int64), "asks": self._digest(),
                "nevergrad": _nevergrad().__version__, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.sigma = int(state["seed"]), float(state["sigma"])
        self.start, self.budget = np.asarray(state["start"], dtype=np.float64), int(state["budget"])
        self.rng.bit_generator.state = state["rng"]
        self._begin()
        sizes = np.asarray(state["sizes"], dtype=np.int64)
        told = np.split(np.asarray(state["told"], dtype=np.float64), np.cumsum(sizes)[:-1]) if len(sizes) else []
        for losses in told:
            if len(losses) != len(self.pending):
                break  # replayed into other asks: the digest below says so
            self._tell(losses)
        self.told = list(told)
        if self._digest() != state["asks"]:
            raise BadInput(f"The run's optimizer {self.name} cannot be resumed exactly: replaying its "
                           f"{len(told)} recorded generations into nevergrad {_nevergrad().__version__} asks other "
                           f"codes than the run recorded (its state was written by nevergrad "
                           f"{state['nevergrad']}). Install that version to resume it, or start a new run.")


@functools.cache
def optimizer(name: str) -> type[Nevergrad]:
    """The Optimizer class of `nevergrad:METHOD`; BadInput naming the closest methods for an unknown one."""
    method = name[len(PREFIX):]
    known = methods()
    if method not in known:
        raise BadInput(f"Unknown optimizer '{name}': nevergrad has no optimizer '{method}' (closest: "
                       f"{nearest(method, known)}). Any name of nevergrad's registry works after '{PREFIX}', e.g. "
                       f"{PREFIX}NGOpt, {PREFIX}TwoPointsDE, {PREFIX}CMA, {PREFIX}DiagonalCMA.")
    return type(f"Nevergrad{method}", (Nevergrad,), {"name": name, "method": method, "__module__": __name__})
