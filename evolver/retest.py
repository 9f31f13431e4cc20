"""Naming a run's best image from noisy answers: a shortlist shown again at the end of the run.

A recorded neuron answers each presentation with a spike count, not its mean rate, so the image with the
largest single answer is mostly the luckiest of the good ones (the winner's curse), and a lab that
re-tests it finds less. A run with a re-test keeps the `images` images with the largest answers and
spends its last generation showing each `repeats` more times; it returns the one whose mean over its
1 + `repeats` presentations is largest. The presentations of the re-test count as images shown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolver_common import BadInput

AUTO = "10x4"  # a noisy run's re-test: 40 presentations, 1.3% of a 3,000-image budget
RETEST_HELP = ("--retest takes auto (a re-test of the 10 best images, 4 times each, where responses are noisy: "
               "--noise or a recorded neuron; none otherwise), none, or KxR (the K best images, R more "
               "presentations each), e.g. 10x4.")


@dataclass(frozen=True)
class Retest:
    """Show the `images` best-answered images `repeats` more times each at the end of a run."""

    images: int
    repeats: int

    @classmethod
    def resolve(cls, text: str | None, noisy: bool, generations: int, images: int | None) -> Retest | None:
        """The re-test `text` asks for ('auto', 'none', 'KxR'; None is 'none') in a run of `generations` and
        `images`; 'auto' re-tests noisy runs that leave room for it (at least 2 generations, and at most
        half the images)."""
        text = (text or "none").strip()
        if text == "none" or text == "auto" and not noisy:
            return None
        match = re.fullmatch(r"(\d+)x(\d+)", AUTO if text == "auto" else text)
        if not match or not all(1 <= int(v) <= 1000 for v in match.groups()):
            raise BadInput(f"--retest {text!r}: {RETEST_HELP}")
        retest = cls(int(match[1]), int(match[2]))
        room = generations >= 2 and (images is None or 2 * retest.presentations <= images)
        if room or text != "auto":
            if not room:
                raise BadInput(f"--retest {text} shows {retest.presentations} images again in a last generation: the "
                               f"run needs at least 2 generations and twice as many images (it has {generations} "
                               f"generations, {images or 'no limit on'} images).")
            return retest
        return None

    @property
    def presentations(self) -> int:
        return self.images * self.repeats

    def __str__(self) -> str:
        return f"{self.images}x{self.repeats}"

    def describe(self) -> str:
        return (f"the best mean over {1 + self.repeats} presentations among the {self.images} images with the "
                f"largest responses, each shown {self.repeats} more times at the end")


@dataclass(frozen=True)
class Shortlist:
    """The images with the largest told responses so far, best first: their told responses (k,) float64,
    ids and generations (k,) int64 and codes (k, code_dim) float32."""

    scores: np.ndarray
    ids: np.ndarray
    generations: np.ndarray
    codes: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores, "ids": self.ids, "generations": self.generations, "codes": self.codes}

    def __len__(self) -> int:
        return len(self.ids)


def shortlist(kept: Shortlist | None, size: int, scores: np.ndarray, ids: np.ndarray, gen: int,
              codes: np.ndarray) -> Shortlist:
    """The `size` images with the largest told responses so far: `kept` (or none) and a generation's;
    ties keep the earlier image."""
    told = np.isfinite(scores)
    new = {"scores": scores[told].astype(np.float64), "ids": ids[told].astype(np.int64),
           "generations": np.full(int(told.sum()), gen, dtype=np.int64), "codes": codes[told].astype(np.float32)}
    merged = new if kept is None else {k: np.concatenate([v, new[k]]) for k, v in kept.as_dict().items()}
    top = np.argsort(-merged["scores"], kind="stable")[:size]
    return Shortlist(**{k: v[top] for k, v in merged.items()})


def choose(kept: Shortlist, repeats: int, scores: np.ndarray, clean: np.ndarray) -> dict[str, Any]:
    """The shortlisted image with the best mean over its presentations, from the re-test's told responses
    `scores` and noise-free ones `clean` (each (images × repeats,), image by image): {row, mean, shown, clean}."""
    again = scores.reshape(len(kept.scores), repeats)
    every = np.concatenate([kept.scores[:, None], again], axis=1)
    shown = np.isfinite(every).sum(axis=1)
    means = np.where(shown > 0, np.nansum(every, axis=1) / np.maximum(shown, 1), -np.inf)
    row = int(np.argmax(means))
    noise_free = clean.reshape(len(kept.scores), repeats)[row]
    return {"row": row, "mean": float(means[row]), "shown": int(shown[row]),
            "clean": float(np.nanmean(noise_free)) if np.isfinite(noise_free).any() else float("nan")}
