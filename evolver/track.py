"""A run in progress: its optimizer, noise, references, folder and state (a RunState), one generation at a
time; what a generation gives (`GenerationRecord`) and what a run reached (`RunResult`). `evolver.loop`
drives the tracks."""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolver.records import RunDirectory, npy_bytes
from evolver.retest import Retest, choose, shortlist
from evolver.run_state import Best, RunState
from evolver.tables import GENERATIONS, REFERENCES, SCORES, Features, GenerationFigures, ReferenceRow, ScoreRow, summary
from evolver_common import BadInput
from evolver_common.images import png_bytes, to_uint8
from evolver_common.memory import release_freed_memory

# Stops every run after this many generations (a run resumes to its own count without it): for trying
# a script, a sweep or the documentation's examples in seconds.
MAX_GENERATIONS_VARIABLE = "EVOLVER_MAX_GENERATIONS"


def generation_limit(generations: int) -> int:
    """`generations`, or fewer where EVOLVER_MAX_GENERATIONS says so."""
    value = os.environ.get(MAX_GENERATIONS_VARIABLE, "").strip()
    if not value:
        return generations
    if not value.isdigit() or int(value) < 1:
        raise BadInput(f"{MAX_GENERATIONS_VARIABLE}={value!r}: give a whole number of generations (at least 1), "
                       "or unset it.")
    return min(generations, int(value))


@dataclass(frozen=True)
class GenerationRecord:
    """What one generation of one run gave: handed to `on_generation` callbacks and `stop_when` rules.

    `scores` are the responses the optimizer was told (after noise; NaN where missing), `clean` the
    noise-free ones, both (n,); `best_so_far` the run's best told response; `images` the images shown
    so far (the run's budget)."""

    run: Path
    gen: int
    images: int
    best: float
    mean: float
    best_so_far: float
    seconds: float
    scores: np.ndarray
    clean: np.ndarray


@dataclass
class RunResult:
    """What a finished (or resumed) run reached, and where its files are."""

    path: Path
    generations: int
    first_best: float
    best: float
    best_generation: int
    notes: list[str]
    presentations: int = 1  # of the best image, whose response `best` is the mean over them


class Track:
    """One run in progress: its optimizer, noise, references, folder, and its state (a RunState), carried
    from generation to generation.

    Args:
        config: the run's RunConfig (generations, images, missing, interleave).
        neuron: the run's own neuron (recorded, asked for state and gradients); for a unit set, the unit.
        optimizer: its optimizer, `noise` (or None) and `noise_rng`: its noise model and random stream.
        directory: its folder (None until the caller has created it); `state`, the committed state when it
            is resumed (None for a new run).
        reference: the reference images' noise-free responses (k,), their images and names, or None.
        column: which column of the loop neuron's responses is this run's: an index, or a callable of the
            responses (n, columns) that gives the run's (n,) (a rig's channel selection, `neurons.recorded`).
        retest: the shortlist shown again in the run's last generation to name its best image, or None
            (evolver.retest).
    """

    def __init__(self, config, neuron, optimizer, noise, noise_rng: np.random.Generator, directory: RunDirectory | None,
                 state: RunState | None = None, reference=None, column: int | Callable[[np.ndarray], np.ndarray] = 0,
                 retest: Retest | None = None, tag: str | None = None):
        self.config, self.neuron, self.optimizer, self.retest = config, neuron, optimizer, retest
        self.noise, self.noise_rng = noise, noise_rng
        self.directory, self.read = directory, column if callable(column) else Column(column)
        self.tag = tag  # the prefix of its images' ids where one block holds several runs' images
        self.reference, self.reference_images, self.reference_names = reference or (None, None, None)
        self.state = state or RunState()
        self.stopped = False
        self.generator = None  # its own (a session's thread's), else the loop's once a Loop drives it
        self.writing = None
        if self.state.components:
            self.load_state_dict(self.state.components)
        if self.state.best is not None:
            directory.write_best(self.state.best)

    @property
    def gen(self) -> int:
        """The generation the next step computes."""
        return self.state.generation + 1

    @property
    def best(self) -> Best | None:
        return self.state.best

    def active(self) -> bool:
        if self.stopped or self.gen >= generation_limit(self.config.generations):
            return False
        return not self.state.finished(self.config.generations, self.config.images, self.retest)

    def retesting(self) -> bool:
        """Whether the next generation is the re-test (RunState.retesting)."""
        return self.state.retesting(self.config.generations, self.config.images, self.retest)

    def ask(self) -> tuple[np.ndarray, list[tuple[int, ...]] | None]:
        """The codes to show next and their parents: the optimizer's, or at the end the shortlist, again."""
        if self.retesting():
            return np.repeat(self.state.shortlist.codes, self.retest.repeats, axis=0), None
        return self.optimizer.ask(), self.optimizer.parents()

    def ids(self, n: int) -> np.ndarray:
        return np.arange(self.state.next_image_id, self.state.next_image_id + n)

    def image_ids(self, n: int) -> list[str]:
        """The ids the neuron is given for the next `n` images: the run's image ids, prefixed by its tag."""
        return [f"{self.tag}:{i}" if self.tag else str(i) for i in self.ids(n)]

    def interleaved(self) -> tuple[list[int], list[str]]:
        """The reference images shown in this generation's block: indices into the set, and their ids."""
        if not self.config.interleave:
            return [], []
        n, gen = len(self.reference_images), self.gen
        picked = [(gen * self.config.interleave + k) % n for k in range(min(self.config.interleave, n))]
        return picked, [f"ref{i}" for i in picked]

    def features(self) -> Features:
        """What this run has that adds columns to its tables (evolver.tables)."""
        return Features(noise=bool(self.noise), reference=self.reference is not None, retest=self.retest is not None,
                        interleave=bool(self.config.interleave))

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "noise_rng": self.noise_rng.bit_generator.state,
                "noise": dict(self.noise.state) if self.noise else {},
                "neuron": self.neuron.state_dict() if hasattr(self.neuron, "state_dict") else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise_rng.bit_generator.state = state["noise_rng"]
        if self.noise:
            self.noise.state = dict(state["noise"])
        if state.get("neuron"):  # a neuron without state records {}
            self.neuron.load_state_dict(state["neuron"])

    def conclude(self, codes: np.ndarray, parents, image: Callable[[int], torch.Tensor], clean: np.ndarray,
                 references: np.ndarray, reference_names: list[str], seconds: float, represented: int = 0,
                 channels: np.ndarray | None = None) -> tuple[GenerationRecord, Records]:
        """Apply the noise, tell the optimizer (or, in the re-test, choose the image to return) and update the
        state; return the generation's record and what it leaves on disk (written by `record_generation`).
        `image(k)` is the image (3, H, W) of code k; `clean` holds the noise-free responses to the codes'
        images, `references` to the reference images shown; `represented` is how many times images of this
        generation were shown again for a missing response; `channels` every channel's responses (codes' rows,
        then the references'), or None."""
        gen, before = self.gen, self.state
        told = self.noise(np.concatenate([clean, references]), self.noise_rng) if self.noise else \
            np.concatenate([clean, references])
        scores, reference_scores = told[:len(codes)], told[len(codes):]
        ids = self.ids(len(codes))
        if self.retesting():
            top, lineage, state = self._choose(scores, clean, image)
        else:
            self.optimizer.tell(codes, scores)
            top, state = self._keep_best(codes, scores, clean, ids, image)
            lineage = [";".join(str(before.told_first_id + p) for p in ps) for ps in parents] if parents \
                else [""] * len(codes)
        first_best = state.first_best
        if first_best is None:
            first_best = float(scores[top]) if top is not None else float("nan")
        best_clean = max(state.best_clean_so_far, float(np.nanmax(clean))) if np.isfinite(clean).any() \
            else state.best_clean_so_far
        best = state.best
        self.state = replace(state, generation=gen, next_image_id=int(ids[-1]) + 1, told_first_id=int(ids[0]),
                             first_best=first_best, best_clean_so_far=best_clean,
                             represented=state.represented + represented,
                             components=copy.deepcopy(self.state_dict()))  # a snapshot: the optimizer moves on
        figures = GenerationFigures(
            gen, scores, clean, self.best_told, best_clean, seconds,
            float(np.nanmax(self.reference)) if self.reference is not None else float("nan"),
            best.score if best else float("nan"), best.clean if best else float("nan"))
        records = Records(
            directory=self.directory, state=self.state,
            gen=gen, codes=codes.astype(np.float32), top_image=to_uint8(image(top)) if top is not None else None,
            figures=figures,
            references=[ReferenceRow(gen, name, float(s)) for name, s in zip(reference_names, reference_scores)],
            best=best if best is not before.best else None,
            scores=[ScoreRow(gen, int(i), lin, float(s), float(c))
                    for i, lin, s, c in zip(ids, lineage, scores, clean)], channels=channels)
        told_best, told_mean, _ = summary(scores)
        return GenerationRecord(self.directory.path, gen, self.state.next_image_id, told_best, told_mean,
                                self.best_told, seconds, scores, clean), records

    @property
    def best_told(self) -> float:
        """The largest response told so far (the re-test's presentations are not told)."""
        return self.state.best_told

    def _keep_best(self, codes: np.ndarray, scores: np.ndarray, clean: np.ndarray, ids: np.ndarray,
                   image: Callable[[int], torch.Tensor]) -> tuple[int | None, RunState]:
        """The state with a told generation's best (and the re-test's shortlist) kept, and its top row or None."""
        state = self.state
        if self.retest is not None:  # a run resumed for more generations is re-tested at its new end
            state = replace(state, retested=False, shortlist=shortlist(state.shortlist, self.retest.images, scores,
                                                                       ids, self.gen, codes))
        top = int(np.nanargmax(scores)) if np.isfinite(scores).any() else None
        if top is None or state.best is not None and not scores[top] > state.best_told:
            return top, state
        best = Best(float(scores[top]), self.gen, int(ids[top]), codes[top].copy(), to_uint8(image(top)),
                    clean=self._noise_free(clean[top]))
        return top, replace(state, best=best, best_told=float(scores[top]))

    def _noise_free(self, response: float) -> float:
        """`response` where it is the image's noise-free response (a model neuron's, before any simulated
        noise); NaN for a noisy neuron's (a recorded one), whose noise-free response is not known."""
        return float(response) if self.noise or not getattr(self.neuron, "noisy", False) else float("nan")

    def _choose(self, scores: np.ndarray, clean: np.ndarray, image: Callable[[int], torch.Tensor]
                ) -> tuple[int, list[str], RunState]:
        """The re-test: the shortlisted image with the best mean response becomes the run's best. Returns
        the row of one of its presentations, the lineage of every row (the image shown again) and the state."""
        kept = self.state.shortlist
        chosen = choose(kept, self.retest.repeats, scores, clean)
        k, top = chosen["row"], chosen["row"] * self.retest.repeats
        best = Best(chosen["mean"], int(kept.generations[k]), int(kept.ids[k]), kept.codes[k].copy(),
                    to_uint8(image(top)), chosen["shown"], self.retest.describe(), self._noise_free(chosen["clean"]))
        lineage = [str(i) for i in np.repeat(kept.ids, self.retest.repeats)]
        return top, lineage, replace(self.state, best=best, retested=True)

    def wait(self) -> None:
        if self.writing is not None:
            self.writing.result()

    def result(self) -> RunResult:
        from evolver.pages import scripts_folder  # plotly only once the run is over
        from evolver.plots import write_trajectory

        write_trajectory([self.directory.path], self.directory.path / "trajectory.html",
                         scripts=scripts_folder(self.directory.path))
        best = self.best
        return RunResult(self.directory.path, self.state.generation + 1, self.state.first_best,
                         best.score if best else float("nan"), best.generation if best else -1, notes(self),
                         best.presentations if best else 1)


def notes(track: Track) -> list[str]:
    """Warnings a reader of the results must see."""
    random = {
        "neuron": "the neuron's network has untrained random weights: its preferences are not a trained network's",
        "generator": "the generator has untrained random weights: its images are textures, not natural-like images",
    }
    parts = {"neuron": track.neuron, "generator": track.generator}
    found = [random[k] for k, part in parts.items() if str(getattr(part, "weights", "")).startswith("random")]
    if track.stopped:
        found.append(f"its stop_when rule ended the run after {track.gen} of the {track.config.generations} "
                     "generations asked")
    return found


@dataclass(frozen=True)
class Column:
    """The run's column of the loop neuron's responses (n, columns): NaN where a rig answered fewer."""

    index: int

    def __call__(self, responses: np.ndarray) -> np.ndarray:
        if self.index >= responses.shape[1]:
            return np.full(len(responses), np.nan)
        return responses[:, self.index]


@dataclass
class Records:
    """What one generation leaves on disk (docs/run-folder.md), and the state that commits it."""

    directory: RunDirectory
    state: RunState
    gen: int
    codes: np.ndarray
    top_image: np.ndarray | None  # (H, W, 3) uint8
    figures: GenerationFigures
    scores: list[ScoreRow]
    references: list[ReferenceRow]
    best: Best | None  # a new best to write (best.png, best_code.npy, best.json), or None
    channels: np.ndarray | None = None  # (images, channels): every channel's responses, rows as scores then references

    def write(self) -> None:
        """The generation's files and rows, not yet committed."""
        directory = self.directory
        directory.write_file(f"codes/gen_{self.gen:04d}.npy", npy_bytes(self.codes))
        if self.channels is not None:
            directory.write_file(f"channels/gen_{self.gen:04d}.npy", npy_bytes(self.channels))
        if self.top_image is not None:
            directory.write_file(f"images/gen_{self.gen:04d}.png", png_bytes(self.top_image))
        if self.references:
            directory.append(REFERENCES, self.references)
        directory.append(GENERATIONS, [self.figures])
        directory.append(SCORES, self.scores)

    def commit(self, tree: dict[str, Any] | None = None) -> None:
        """Commit the generation (with `tree`, the state as the session recorded it, where given), then
        write its new best."""
        self.directory.commit(self.state, tree)
        if self.best is not None:
            self.directory.write_best(self.best)


def record_generation(records: Records) -> None:
    """Write a generation's files and rows, then commit it: only then does it count as finished."""
    records.write()
    records.commit()
    release_freed_memory()
