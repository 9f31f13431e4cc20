"""Racing CMA-ES: CMA-ES from several starts at once, the weaker half dropped after each round.

A generator whose codes choose among kinds of image (`Generator.choice`: the `stimuli` generator's
families, a conditional DCGAN's classes) makes a landscape that one CMA-ES handles badly: its mean
sits between kinds, where the images are blends, and a run settles on whichever kind it met first.
Racing searches each kind on its own and spends the budget where it pays, by successive halving
(Karnin, Koren & Somekh 2013; Jamieson & Talwalkar 2016):

1. the first generation is `prior` of the generator's own samples;
2. an arm starts at the best-scoring sample of each of the `arms` best kinds (where the generator has
   no choice, at the `arms` best samples), as a CMA-ES over the code with the choice's logits held at
   that sample's (`cmaes`, or `sep-cmaes` on long codes), its step `step` times the samples' spread;
3. round r shows each arm `round_images` × 2^r images, one arm's generation after another; then the
   arms whose best response is in the better half go on, until one is left, which runs to the end.

On the `stimuli` generator's 10 families (docs/optimizers.md, "Racing kinds of image") it took V1
complex cells from a median 0.38 of their optimum to 0.94 at 3,000 images, simple cells from 0.44 to
0.85, where `cmaes` from the zero code blends the families.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from evolver.optimizers.base import Optimizer, Sampler
from evolver.optimizers.cmaes import CMAES, FULL_COVARIANCE_LIMIT, SepCMAES
from evolver_common import BadInput
from generators.base import Choice


@dataclass
class RacingParams:
    """arms: starts raced (kinds of image, where the generator has a choice). prior: generator samples
    shown first, from which the starts are picked (0 = 20 per arm). round_images: images each arm is
    shown in the first round, doubling each round. step: each arm's initial step size, as a fraction of
    the prior samples' standard deviation. population: codes per generation of an arm (0 = CMA's
    default 4 + 3 ln n)."""

    arms: int = 10
    prior: int = 0
    round_images: int = 60
    step: float = 0.5
    population: int = 0


class RacingCMA(Optimizer):
    """Successive halving over CMA-ES arms started from the generator's best samples (see above)."""

    name = "racing-cmaes"
    Params = RacingParams
    uses_choice: ClassVar[bool] = True

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator, choice: Choice | None = None,
                 **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        held = choice.columns() if choice else np.array([], dtype=int)
        self.free = np.setdiff1d(np.arange(code_dim), held)  # the code values the arms search
        self.choice = choice
        self.arms: list[dict[str, Any]] = []  # {start, best, shown, sigma}: empty until the prior is told
        self.searches: list[Optimizer | None] = []  # None for an arm dropped from the race
        self.alive: list[int] = []
        self.round = self.current = 0
        self.population = np.asarray(sample(self.params.prior or 20 * self.params.arms, rng), dtype=np.float32)

    @classmethod
    def check_params(cls, params: RacingParams) -> None:
        if params.arms < 1 or params.prior < 0 or params.round_images < 1 or not params.step > 0 \
                or params.population < 0 or params.population == 1:
            raise BadInput(f"Invalid parameters for optimizer '{cls.name}': arms and round_images must be at least "
                           f"1, prior 0 (default) or more, step positive, population 0 (default) or at least 2; got "
                           f"arms={params.arms}, prior={params.prior}, round_images={params.round_images}, "
                           f"step={params.step}, population={params.population}.")

    def ask(self) -> np.ndarray:
        return self.population.copy()

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if not self.arms:
            if np.isfinite(scores).any():  # a prior with no answer at all is shown again
                self._start(codes, scores)
                self.population = self._generate()
            return
        arm = self.arms[self.alive[self.current]]
        self.searches[self.alive[self.current]].tell(codes[:, self.free], scores)
        if np.isfinite(scores).any():
            arm["best"] = max(arm["best"], float(np.nanmax(scores)))
        arm["shown"] += len(codes)
        if len(self.alive) > 1 and arm["shown"] >= self.params.round_images * 2**self.round:
            self._next_arm()
        self.population = self._generate()

    def _start(self, codes: np.ndarray, scores: np.ndarray) -> None:
        """Arms at the best told codes: of distinct options where the generator has a choice."""
        told = np.flatnonzero(np.isfinite(scores))
        ranked = told[np.argsort(-scores[told], kind="stable")]
        if self.choice:
            _, first = np.unique(self.choice.picked(codes[ranked]), return_index=True)
            ranked = ranked[np.sort(first)]  # each option's best code, best option first
        starts = ranked[:self.params.arms]
        spread = float(np.asarray(codes, dtype=np.float64)[:, self.free].std())
        sigma = self.params.step * (spread or 1.0)  # identical samples: a unit step
        self.arms = [{"start": codes[i].astype(np.float64), "best": float(scores[i]), "shown": 0, "sigma": sigma}
                     for i in starts]
        self.searches = [self._search(arm) for arm in self.arms]
        self.alive = list(range(len(self.arms)))

    def _search(self, arm: dict[str, Any]) -> Optimizer:
        """The CMA-ES of an arm, over the free code values, centred at its start."""
        centre = arm["start"][self.free]
        search = SepCMAES if len(self.free) > FULL_COVARIANCE_LIMIT else CMAES
        return search(len(self.free), lambda n, _: np.tile(centre, (n, 1)), self.rng, start="sample",
                      sigma0=arm["sigma"], population=self.params.population)

    def _next_arm(self) -> None:
        self.current += 1
        if self.current < len(self.alive):
            return
        # the round is over: the better half (by best response, ties to the earlier arm) goes on
        ranked = sorted(self.alive, key=lambda k: -self.arms[k]["best"])
        self.alive = sorted(ranked[:max(1, len(ranked) // 2)])
        self.round, self.current = self.round + 1, 0
        for k in ranked[len(self.alive):]:
            self.searches[k] = None  # a dropped arm never runs again: its state is not kept
        for k in self.alive:
            self.arms[k]["shown"] = 0

    def _generate(self) -> np.ndarray:
        k = self.alive[self.current]
        free = self.searches[k].ask()
        codes = np.tile(self.arms[k]["start"].astype(np.float32), (len(free), 1))
        codes[:, self.free] = free
        return codes

    def state_dict(self) -> dict[str, Any]:
        return {"arms": [{**arm, "search": search.state_dict() if search else {}}
                         for arm, search in zip(self.arms, self.searches)],
                "alive": list(self.alive), "round": self.round, "current": self.current,
                "population": self.population.copy(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arms = [{k: v for k, v in arm.items() if k != "search"} for arm in state["arms"]]
        for arm in self.arms:
            arm["start"] = np.asarray(arm["start"], dtype=np.float64)
        self.alive = [int(k) for k in state["alive"]]
        self.searches = [self._search(arm) if k in self.alive else None for k, arm in enumerate(self.arms)]
        for search, arm in zip(self.searches, state["arms"]):
            if search:
                search.load_state_dict(arm["search"])
        self.round, self.current = int(state["round"]), int(state["current"])
        self.population = np.asarray(state["population"], dtype=np.float32)
        self.rng.bit_generator.state = state["rng"]

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["choice"] = None if self.choice is None else {"start": self.choice.start,
                                                                 "options": self.choice.options}
        return described

