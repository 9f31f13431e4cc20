"""The run folder's tables, each column declared once: its name, when a run has it, and its value.

A table's header is the names of the columns a run has (`Table.header(features)`); every row is made
from the same declarations (`Table.row(header, source)`), following the header the table already has, so a
run resumed from an older layout goes on writing the columns it began with. The design note's run-folder
page (docs/run-folder.md) says what each column means.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Features:
    """What a run has that adds columns: simulated noise (noise-free figures beside the told ones),
    reference images (responses relative to theirs), a re-test or noise (the returned image's figures),
    interleaved reference images (references.csv)."""

    noise: bool = False
    reference: bool = False
    retest: bool = False
    interleave: bool = False


def always(_: Features) -> bool:
    return True


@dataclass(frozen=True)
class Column:
    name: str
    value: Callable[[Any], Any]
    present: Callable[[Features], bool] = always


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    present: Callable[[Features], bool] = always

    def header(self, features: Features) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.present(features))

    def row(self, header: tuple[str, ...], source: Any) -> tuple:
        """The row of `source` with the columns of `header` (a table's recorded header)."""
        return tuple(self._by_name[name].value(source) for name in header)

    @cached_property
    def _by_name(self) -> dict[str, Column]:  # once a table, not once a row
        return {c.name: c for c in self.columns}


@dataclass(frozen=True)
class GenerationFigures:
    """One generation of one run, as generations.csv records it: responses told (NaN where missing) and
    noise-free, (n,) each; the run's figures after it."""

    gen: int
    scores: np.ndarray
    clean: np.ndarray
    best_so_far: float
    best_clean_so_far: float
    seconds: float
    reference_best: float  # the reference images' best noise-free response, or NaN
    returned: float  # the told response of the image the run returns so far (its mean over its presentations)
    returned_clean: float  # and its noise-free response (NaN where not known)


@dataclass(frozen=True)
class ScoreRow:
    gen: int
    image_id: int
    parent_ids: str  # ';'-joined ids of the image's parents (a re-test's rows: the image shown again)
    score: float
    clean: float


@dataclass(frozen=True)
class ReferenceRow:
    gen: int
    image: str  # the reference image's id, refN
    score: float


def summary(responses: np.ndarray) -> tuple[float, float, float]:
    """Best, mean and standard deviation of the responses that came back (NaN where none did)."""
    finite = responses[np.isfinite(responses)]
    if not finite.size:
        return (float("nan"),) * 3
    return float(finite.max()), float(finite.mean()), float(finite.std())


def _noise(f: Features) -> bool:
    return f.noise


def _returned(f: Features) -> bool:
    return f.noise or f.retest


GENERATIONS = Table("generations.csv", (
    Column("gen", lambda g: g.gen),
    Column("n_images", lambda g: len(g.scores)),
    Column("best", lambda g: summary(g.scores)[0]),
    Column("mean", lambda g: summary(g.scores)[1]),
    Column("std", lambda g: summary(g.scores)[2]),
    Column("best_so_far", lambda g: g.best_so_far),
    Column("seconds", lambda g: round(g.seconds, 4)),
    Column("best_clean", lambda g: summary(g.clean)[0], _noise),
    Column("best_clean_so_far", lambda g: g.best_clean_so_far, _noise),
    Column("relative_activation", lambda g: g.best_clean_so_far / g.reference_best, lambda f: f.reference),
    Column("returned", lambda g: g.returned, _returned),
    Column("returned_clean", lambda g: g.returned_clean, _noise),
))

SCORES = Table("scores.csv", (
    Column("gen", lambda r: r.gen),
    Column("image_id", lambda r: r.image_id),
    Column("parent_ids", lambda r: r.parent_ids),
    Column("score", lambda r: r.score),
    Column("score_clean", lambda r: r.clean, _noise),
))

REFERENCES = Table("references.csv", (
    Column("gen", lambda r: r.gen),
    Column("image", lambda r: r.image),
    Column("score", lambda r: r.score),
), present=lambda f: f.interleave)

TABLES = (GENERATIONS, SCORES, REFERENCES)
BY_NAME = {t.name: t for t in TABLES}


def headers(features: Features) -> dict[str, tuple[str, ...]]:
    """{table name: its header} of the tables a run with `features` has."""
    return {t.name: t.header(features) for t in TABLES if t.present(features)}
