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
`load_state_dict` replays them into a fresh optimizer and checks the SHA-256 of the last codes asked
against the recorded one, so a nevergrad that would ask otherwise (another version) is refused by name.
Codes are asked when `ask` is called, never ahead, so a run asks nevergrad for no more than its budget.
An optimizer of nevergrad's that fails on the run's space (one that needs bounds, or its own bug) stops
the run with a message naming it, what failed, and others to try.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import sys
import traceback
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


def _free_quietly(err: BaseException) -> None:
    """Free what a failed nevergrad call left in `err`'s frames: a half-built optimizer's `__del__` raises
    again, which Python would print as a traceback."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        traceback.clear_frames(err.__traceback__)
        gc.collect()
    finally:
        sys.unraisablehook = hook


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

    @contextlib.contextmanager
    def _calling_nevergrad(self):
        """nevergrad's own failures as one paragraph naming the optimizer and the space."""
        try:
            with _quiet():
                yield
        except BadInput:
            raise
        except Exception as err:  # noqa: BLE001 - whatever nevergrad raises, the run stops with a message
            message = (f"nevergrad's {self.method} failed on {self.code_dim}-d codes, {self.params.population} a "
                       f"generation, a budget of {self.budget} ({type(err).__name__}: "
                       f"{(str(err).splitlines() or [''])[0][:300]}). Not every optimizer of nevergrad's registry works "
                       "here: the code is an unbounded array and a generation's codes are asked before any is told "
                       "(a sequential one needs --param population=1); try another, e.g. nevergrad:NGOpt, "
                       "nevergrad:TwoPointsDE, nevergrad:CMA.")
            _free_quietly(err)
            raise BadInput(message) from None

    def _begin(self) -> None:
        ng = _nevergrad()
        space = ng.p.Array(init=self.start).set_mutation(sigma=self.sigma)
        space.random_state = np.random.RandomState(self.seed)
        with self._calling_nevergrad():
            self.search = ng.optimizers.registry[self.method](parametrization=space, budget=self.budget,
                                                              num_workers=self.params.population)
        self.pending: list | None = None  # the candidates asked and not yet told
        self.codes = np.zeros((0, self.code_dim), dtype=np.float32)  # the last codes asked

    def _ask(self) -> None:
        self.pending = []
        while len(self.pending) < self.params.population:
            try:
                with _quiet():
                    self.pending.append(self.search.ask())
            except RuntimeError:  # pycma's "samples expected but missing": its batch must be told first
                if self.pending:
                    break
                with self._calling_nevergrad():
                    raise
            except Exception:  # noqa: BLE001 - nevergrad's own failure, as a message
                with self._calling_nevergrad():
                    raise
        self.codes = np.stack([np.asarray(c.value, dtype=np.float64) for c in self.pending]).astype(np.float32)

    def ask(self) -> np.ndarray:
        if self.pending is None:
            self._ask()
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
        with self._calling_nevergrad():
            for candidate, loss in zip(self.pending, losses):
                self.search.tell(candidate, float(loss))
        self.pending = None

    def _digest(self) -> str:
        return hashlib.sha256(self.codes.tobytes()).hexdigest()

    def state_dict(self) -> dict[str, Any]:
        told = np.concatenate(self.told) if self.told else np.zeros(0)
        return {"seed": self.seed, "start": self.start.copy(), "sigma": self.sigma, "budget": self.budget,
                "told": told, "sizes": np.array([len(t) for t in self.told], dtype=np.int64),
                "pending": self.pending is not None, "asks": self._digest(), "nevergrad": _nevergrad().__version__,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.sigma = int(state["seed"]), float(state["sigma"])
        self.start, self.budget = np.asarray(state["start"], dtype=np.float64), int(state["budget"])
        self.rng.bit_generator.state = state["rng"]
        self._begin()
        sizes = np.asarray(state["sizes"], dtype=np.int64)
        told = np.split(np.asarray(state["told"], dtype=np.float64), np.cumsum(sizes)[:-1]) if len(sizes) else []
        for losses in told:
            self._ask()
            if len(losses) != len(self.pending):
                break  # replayed into other asks: the digest below says so
            self._tell(losses)
        if bool(state["pending"]):  # asked, and shown again untold (no response at all)
            self._ask()
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
