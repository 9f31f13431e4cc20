"""A run's state as one typed, versioned record: what a run carries from one generation to the next.

`RunState` is what `state/state.npz` holds (the commit point of a generation, DESIGN.md's "One run on
disk"); `RunDirectory` is its only reader and writer. A state written by an earlier evolver is brought to
the current `SCHEMA_VERSION` by `migrate`, one explicit step a version, so the code that uses a state never
asks whether a key exists. The layouts, and the folders the tests keep of each (tests/data/layouts/):

- version 1 (no `schema_version` in the file): the untyped dicts of the one loop. Before the re-test
  (commit fafd0b6) they had no `best_told`, `shortlist` or `retested`, and their best image no
  `presentations`, `chosen_by` or `clean`; before start=prior (11ac1e6) a CMA-ES state had no
  `awaiting_prior`. CMA-ES kept its search under `strategy`, sep-CMA-ES under `state`.
- version 2: this module's dataclasses; every CMA-ES variant keeps its search under `search`.
- version 3: each table's committed rows and SHA-256 digest beside its length (`table_rows`,
  `table_digests`), checked before a run resumes. A version-2 state has neither: its tables are checked by
  length, and by ending at a row's end.
- version 4: `represented`, the images shown again so far because their response was missing. A
  version-3 state did not count them: it is read as 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from evolver.retest import Retest, Shortlist
from evolver_common import BadInput

SCHEMA_VERSION = 4
LARGEST_TOLD = "the largest response told"


@dataclass(frozen=True)
class Best:
    """The image a run returns so far.

    `score` is its told response (the mean over its `presentations`), `clean` its noise-free response
    (NaN where not known: a recorded neuron's), `code` (code_dim,) float32, `image` (H, W, 3) uint8."""

    score: float
    generation: int
    image_id: int
    code: np.ndarray
    image: np.ndarray
    presentations: int = 1
    chosen_by: str = LARGEST_TOLD
    clean: float = float("nan")

    def describe(self) -> dict[str, Any]:
        """best.json: everything but the arrays; null where a figure is not known."""
        described = {"image_id": self.image_id, "generation": self.generation, "score": self.score,
                     "presentations": self.presentations, "chosen_by": self.chosen_by, "clean": self.clean}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in described.items()}


@dataclass(frozen=True)
class RunState:
    """What a run has done, as of its last committed generation.

    `generation` is the last finished one (-1 before the first); image ids run from 0, `next_image_id` is
    the next one to give and `told_first_id` the first of the last told generation (the optimizer's parent
    indices count from it); `represented` counts the images shown again for a missing response. `best_told` is the largest response told to the optimizer, `first_best` the
    first generation's; `best_clean_so_far` the largest noise-free response seen. `shortlist` and
    `retested` are the re-test's (evolver.retest). `components` holds the states of the run's parts
    (`optimizer`, `noise`, `noise_rng`, `neuron`) as their own `state_dict`s; `table_bytes`, `table_rows`
    and `table_digests` each table's committed length, rows (after its header) and SHA-256 digest (hex)."""

    generation: int = -1
    next_image_id: int = 0
    told_first_id: int = 0
    first_best: float | None = None
    best: Best | None = None
    best_told: float = float("nan")
    best_clean_so_far: float = float("-inf")
    shortlist: Shortlist | None = None
    retested: bool = False
    represented: int = 0
    components: dict[str, Any] = field(default_factory=dict)
    table_bytes: dict[str, int] = field(default_factory=dict)
    table_rows: dict[str, int] = field(default_factory=dict)
    table_digests: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_tree(self) -> dict[str, Any]:
        """The state as a tree of numbers, strings and arrays (what `records.state_bytes` stores)."""
        tree = {f.name: getattr(self, f.name) for f in fields(self)}
        tree["best"] = {f.name: getattr(self.best, f.name) for f in fields(Best)} if self.best else None
        tree["shortlist"] = self.shortlist.as_dict() if self.shortlist else None
        return tree

    def searched(self, generations: int, images: int | None, retest: Retest | None) -> bool:
        """Whether the optimizer's share of a run of `generations` and `images` is spent (a re-test's last
        generation and images are kept back)."""
        gen, reserve = self.generation + 1, retest.presentations if retest else 0
        return gen >= generations - bool(retest) or images is not None and self.next_image_id >= images - reserve

    def retesting(self, generations: int, images: int | None, retest: Retest | None) -> bool:
        """Whether the next generation is the re-test: the search is over and it has images to show again (a
        run that no response came back to has none)."""
        return (retest is not None and self.searched(generations, images, retest) and not self.retested
                and self.shortlist is not None and len(self.shortlist) > 0)

    def finished(self, generations: int, images: int | None, retest: Retest | None) -> bool:
        """Whether a run of `generations` and `images` with `retest` has nothing left to do."""
        return (self.generation + 1 >= generations
                or self.searched(generations, images, retest) and not self.retesting(generations, images, retest))

    @classmethod
    def from_tree(cls, tree: dict[str, Any], noise_free: bool = True) -> RunState:
        """A state from a stored tree of any schema version; `noise_free` says whether the run's told
        responses are noise-free (no --noise, not a recorded neuron), which a version-1 best does not say."""
        tree = migrate(tree, noise_free)
        for name in ("generation", "next_image_id", "told_first_id", "represented"):
            if not isinstance(tree[name], int) or isinstance(tree[name], bool):
                raise TypeError(f"{name} is {tree[name]!r}, not a whole number")
        best = Best(**tree["best"]) if tree["best"] else None
        shortlist = Shortlist(**tree["shortlist"]) if tree["shortlist"] else None
        return cls(**{**tree, "best": best, "shortlist": shortlist})


def migrate(tree: dict[str, Any], noise_free: bool = True) -> dict[str, Any]:
    """`tree` brought to SCHEMA_VERSION, one version at a time (see the module's docstring)."""
    version = tree.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise BadInput(f"The run's state is of schema version {version!r}; this evolver reads versions 1 to "
                       f"{SCHEMA_VERSION}. A newer evolver wrote it: continue the run with that version.")
    for step in range(version, SCHEMA_VERSION):
        tree = MIGRATIONS[step](tree, noise_free)
    return tree


def _from_version_1(tree: dict[str, Any], noise_free: bool) -> dict[str, Any]:
    tree = dict(tree)
    best = tree.get("best")
    if best is not None:
        best = {"presentations": 1, "chosen_by": LARGEST_TOLD,
                "clean": best["score"] if noise_free else float("nan"), **best}
    tree["best"] = best
    if tree.get("best_told") is None:  # runs before the re-test: the best was the largest response told
        tree["best_told"] = best["score"] if best else float("nan")
    tree.setdefault("shortlist", None)
    tree.setdefault("retested", False)
    loop = dict(tree.pop("loop", None) or {})
    if "optimizer" in loop:
        loop["optimizer"] = _cma_search_renamed(loop["optimizer"])
    tree["components"] = loop
    tree["schema_version"] = 2
    return tree


def _cma_search_renamed(state: Any) -> Any:
    """A version-1 optimizer state with every CMA-ES search (racing-cmaes holds one an arm) under `search`
    and `awaiting_prior` given (False: the runs before start=prior had begun their search)."""
    if isinstance(state, list):
        return [_cma_search_renamed(s) for s in state]
    if not isinstance(state, dict):
        return state
    state = {k: _cma_search_renamed(v) for k, v in state.items()}
    for old in ("strategy", "state"):  # cmaes's, sep-cmaes's
        if old in state and "population" in state and "rng" in state:
            state["search"] = state.pop(old)
            state.setdefault("awaiting_prior", False)
    return state


def _from_version_2(tree: dict[str, Any], noise_free: bool) -> dict[str, Any]:
    return {**tree, "table_rows": {}, "table_digests": {}, "schema_version": 3}  # not recorded: not checked


def _from_version_3(tree: dict[str, Any], noise_free: bool) -> dict[str, Any]:
    return {**tree, "represented": 0, "schema_version": 4}  # not counted then


MIGRATIONS = {1: _from_version_1, 2: _from_version_2, 3: _from_version_3}


def noise_free_run(config: dict[str, Any]) -> bool:
    """Whether a run's told responses are noise-free, from its config.json: no simulated noise and a neuron
    that is not a recorded one."""
    from neurons import KINDS

    resolved = config.get("resolved", {})
    kind = str(resolved.get("neuron", {}).get("spec", "")).split(":", 1)[0]
    recorded = kind in KINDS and getattr(KINDS.get(kind), "noisy", False)
    return not resolved.get("noise") and not recorded
