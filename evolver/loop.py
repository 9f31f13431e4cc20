"""The closed loop, one generation a `step`: ask → render → respond → noise → record → tell.

A `Loop` drives one or more `Track`s through one generator and one neuron. A single run is one track;
a unit set (`resnet50:layer4:unit0-63`) is one track a unit, each told column k of the neuron's (n, k)
responses to its own images, all rendered and shown in one batch. Missing responses, noise, references
and records are handled here once, whatever the mode.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evolver.records import GENERATION_COLUMNS, SCORE_COLUMNS, RunDirectory, npy_bytes, png_bytes, to_uint8
from evolver.retest import Retest, choose, shortlist
from evolver_common import BadInput
from evolver_common.compute import small_linear_algebra
from evolver_common.memory import release_freed_memory

# Images whose responses did not come back are shown again (up to REPRESENTATIONS more blocks),
# or told to the optimizer as missing (NaN): it then learns from the others.
MISSING = ("represent", "skip")
REPRESENTATIONS = 2
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
    """One run in progress: its optimizer, noise, references, folder, and what is carried from generation
    to generation.

    Args:
        config: the run's RunConfig (generations, images, missing, interleave).
        neuron: the run's own neuron (recorded, asked for state and gradients); for a unit set, the unit.
        optimizer: its optimizer, `noise` (or None) and `noise_rng`: its noise model and random stream.
        directory: its folder (None until the caller has created it); `state`, the committed state when it
            is resumed (None for a new run).
        reference: the reference images' noise-free responses (k,), their images and names, or None.
        column: which column of the loop neuron's responses is this run's.
        retest: the shortlist shown again in the run's last generation to name its best image, or None
            (evolver.retest).
    """

    def __init__(self, config, neuron, optimizer, noise, noise_rng: np.random.Generator, directory: RunDirectory | None,
                 state: dict[str, Any] | None = None, reference=None, column: int = 0, retest: Retest | None = None):
        self.config, self.neuron, self.optimizer, self.retest = config, neuron, optimizer, retest
        self.noise, self.noise_rng = noise, noise_rng
        self.directory, self.column = directory, column
        self.reference, self.reference_images, self.reference_names = reference or (None, None, None)
        self.state = state or {"generation": -1, "next_image_id": 0, "told_first_id": 0, "first_best": None,
                               "best": None, "best_clean_so_far": float("-inf")}
        self.best, self.first_best = self.state["best"], self.state["first_best"]
        self.best_clean = self.state["best_clean_so_far"]
        self.stopped = False
        self.generator = None  # the loop's, once a Loop drives the track
        self.writing = None
        if state is not None and state.get("loop"):
            self.load_state_dict(state["loop"])
        if self.best is not None:
            _write_best(directory, self.best)

    @property
    def gen(self) -> int:
        """The generation the next step computes."""
        return self.state["generation"] + 1

    def active(self) -> bool:
        if self.stopped or self.gen >= generation_limit(self.config.generations):
            return False
        return not self.searched() or self.retesting()

    def searched(self) -> bool:
        """Whether the optimizer's share of the budget is spent (the re-test's is kept back)."""
        images, kept = self.config.images, self.retest is not None
        reserve = self.retest.presentations if kept else 0
        return (self.gen >= self.config.generations - kept
                or images is not None and self.state["next_image_id"] >= images - reserve)

    def retesting(self) -> bool:
        """Whether the next generation is the re-test: the search is over and it has images to show again (a
        run that no response came back to has none)."""
        return (self.retest is not None and self.searched() and not self.state.get("retested", False)
                and len(self.state.get("shortlist", {}).get("ids", ())) > 0)

    def ask(self) -> tuple[np.ndarray, list[tuple[int, ...]] | None]:
        """The codes to show next and their parents: the optimizer's, or at the end the shortlist, again."""
        if self.retesting():
            return np.repeat(self.state["shortlist"]["codes"], self.retest.repeats, axis=0), None
        return self.optimizer.ask(), self.optimizer.parents()

    def ids(self, n: int) -> np.ndarray:
        return np.arange(self.state["next_image_id"], self.state["next_image_id"] + n)

    def interleaved(self) -> tuple[list[int], list[str]]:
        """The reference images shown in this generation's block: indices into the set, and their ids."""
        if not self.config.interleave:
            return [], []
        n, gen = len(self.reference_images), self.gen
        picked = [(gen * self.config.interleave + k) % n for k in range(min(self.config.interleave, n))]
        return picked, [f"ref{i}" for i in picked]

    def columns(self) -> dict[str, tuple[str, ...]]:
        """The tables' columns: the design note's, plus noise-free and relative figures when they exist."""
        generation, score = list(GENERATION_COLUMNS), list(SCORE_COLUMNS)
        if self.noise:
            generation += ["best_clean", "best_clean_so_far"]
            score += ["score_clean"]
        if self.reference is not None:
            generation += ["relative_activation"]
        if self.noise or self.retest is not None:  # the image the run returns: its told response (its mean over its
            generation += ["returned", "returned_clean"] if self.noise else ["returned"]  # presentations), noise-free
        tables = {"generations.csv": tuple(generation), "scores.csv": tuple(score)}
        if self.config.interleave:
            tables["references.csv"] = ("gen", "image", "score")
        return tables

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "noise_rng": self.noise_rng.bit_generator.state,
                "noise": dict(self.noise.state) if self.noise else {},
                "neuron": self.neuron.state_dict() if hasattr(self.neuron, "state_dict") else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise_rng.bit_generator.state = state["noise_rng"]
        if self.noise:
            self.noise.state = dict(state["noise"])
        if state.get("neuron"):
            self.neuron.load_state_dict(state["neuron"])

    def conclude(self, codes: np.ndarray, parents, images: torch.Tensor, clean: np.ndarray, references: np.ndarray,
                 reference_names: list[str], seconds: float, writer: ThreadPoolExecutor) -> GenerationRecord:
        """Apply the noise, tell the optimizer (or, in the re-test, choose the image to return), update the
        figures and hand the generation's records to `writer`. `clean` holds the noise-free responses to
        the codes' images, then to `references`."""
        self.state = dict(self.state)  # the last generation's is being written meanwhile
        gen, state = self.gen, self.state
        told = self.noise(np.concatenate([clean, references]), self.noise_rng) if self.noise else \
            np.concatenate([clean, references])
        scores, reference_scores = told[:len(codes)], told[len(codes):]
        ids = self.ids(len(codes))
        if self.retesting():
            top, lineage, new_best = self._choose(scores, clean, images)
        else:
            self.optimizer.tell(codes, scores)
            top, new_best = self._keep_best(codes, scores, clean, ids, images)
            lineage = [";".join(str(state["told_first_id"] + p) for p in ps) for ps in parents] if parents \
                else [""] * len(codes)
        if self.first_best is None:
            self.first_best = float(scores[top]) if top is not None else float("nan")
        if np.isfinite(clean).any():
            self.best_clean = max(self.best_clean, float(np.nanmax(clean)))
        best, summary = self.best, _summary(scores)
        row = [gen, len(codes), *summary, self.best_told, round(seconds, 4)]
        if self.noise:
            row += [_summary(clean)[0], self.best_clean]
        if self.reference is not None:
            row += [self.best_clean / float(np.nanmax(self.reference))]
        if self.noise or self.retest is not None:
            returned = (best["score"], best["clean"]) if best else (float("nan"),) * 2
            row += returned if self.noise else returned[:1]
        records = Records(
            gen=gen, codes=codes.astype(np.float32), top_image=to_uint8(images[top]) if top is not None else None,
            generation_row=tuple(row), references=[(gen, name, float(s)) for name, s in zip(reference_names,
                                                                                             reference_scores)],
            best=best if new_best else None,
            score_rows=[(gen, int(i), lin, float(s), *([float(c)] if self.noise else []))
                        for i, lin, s, c in zip(ids, lineage, scores, clean)])
        self.state = {**{k: v for k, v in state.items() if k in ("shortlist", "retested")},
                      "generation": gen, "next_image_id": int(ids[-1]) + 1, "told_first_id": int(ids[0]),
                      "first_best": self.first_best, "best": best, "best_told": self.best_told,
                      "best_clean_so_far": self.best_clean,
                      "loop": copy.deepcopy(self.state_dict())}  # a snapshot: the optimizer moves on meanwhile
        self.wait()  # in order, and a failed write stops the run here
        self.writing = writer.submit(_record, self.directory, records, self.state)
        return GenerationRecord(self.directory.path, gen, self.state["next_image_id"], summary[0], summary[1],
                                self.best_told, seconds, scores, clean)

    @property
    def best_told(self) -> float:
        """The largest response told so far (the re-test's presentations are not told)."""
        told = self.state.get("best_told", self.best["score"] if self.best else float("nan"))
        return float("nan") if told is None else told

    def _keep_best(self, codes: np.ndarray, scores: np.ndarray, clean: np.ndarray, ids: np.ndarray,
                   images: torch.Tensor) -> tuple[int | None, bool]:
        """Update the best told image (and the re-test's shortlist) with a told generation: (its top row or
        None, whether the best changed)."""
        if self.retest is not None:
            self.state["retested"] = False  # a run resumed for more generations is re-tested at its new end
            self.state["shortlist"] = shortlist(self.state.get("shortlist"), self.retest.images, scores, ids,
                                                self.gen, codes)
        top = int(np.nanargmax(scores)) if np.isfinite(scores).any() else None
        if top is None or self.best is not None and not scores[top] > self.state.get("best_told", self.best["score"]):
            return top, False
        self.state["best_told"] = float(scores[top])
        self.best = {"score": float(scores[top]), "generation": self.gen, "image_id": int(ids[top]),
                     "code": codes[top].copy(), "image": to_uint8(images[top]), "presentations": 1,
                     "chosen_by": "the largest response told", "clean": self._noise_free(clean[top])}
        return top, True

    def _noise_free(self, response: float) -> float:
        """`response` where it is the image's noise-free response (a model neuron's, before any simulated
        noise); NaN for a noisy neuron's (a recorded one), whose noise-free response is not known."""
        return float(response) if self.noise or not getattr(self.neuron, "noisy", False) else float("nan")

    def _choose(self, scores: np.ndarray, clean: np.ndarray, images: torch.Tensor) -> tuple[int, list[str], bool]:
        """The re-test: the shortlisted image with the best mean response becomes the run's best. Returns
        the row of one of its presentations, the lineage of every row (the image shown again) and True."""
        kept = self.state["shortlist"]
        chosen = choose(kept, self.retest.repeats, scores, clean)
        k, top = chosen["row"], chosen["row"] * self.retest.repeats
        self.best = {"score": chosen["mean"], "generation": int(kept["generations"][k]),
                     "image_id": int(kept["ids"][k]), "code": kept["codes"][k].copy(),
                     "image": to_uint8(images[top]), "presentations": chosen["shown"],
                     "chosen_by": self.retest.describe(), "clean": self._noise_free(chosen["clean"])}
        self.state["retested"] = True
        return top, [str(i) for i in np.repeat(kept["ids"], self.retest.repeats)], True

    def wait(self) -> None:
        if self.writing is not None:
            self.writing.result()

    def result(self) -> RunResult:
        from evolver.plots import write_trajectory  # plotly only once the run is over

        write_trajectory([self.directory.path], self.directory.path / "trajectory.html")
        best = self.best
        return RunResult(self.directory.path, self.state["generation"] + 1, self.first_best,
                         best["score"] if best else float("nan"), best["generation"] if best else -1, notes(self),
                         best.get("presentations", 1) if best else 1)


def notes(track: Track) -> list[str]:
    """Warnings a reader of the results must see."""
    random = {
        "neuron": "the neuron's network has untrained random weights: its preferences are not a trained network's",
        "generator": "the generator has untrained random weights: its images are textures, not natural-like images",
    }
    parts = {"neuron": track.neuron, "generator": track.generator}
    return [random[k] for k, part in parts.items() if str(getattr(part, "weights", "")).startswith("random")]


class Loop:
    """Tracks evolved through one generator and one neuron, one generation a `step`.

    Args:
        neuron: answers for every track: (n,) responses for one track, (n, k) for k tracks (column k each).
        generator: renders every track's codes.
        tracks: the runs.
        batch: images rendered and shown at a time (None: a generation's images at once).
        on_generation: callables given each track's GenerationRecord after each of its generations.
        stop_when: a callable of a GenerationRecord; True ends that run (e.g. `no_improvement(20)`).
        progress: show a progress bar with the best response.
    """

    def __init__(self, neuron, generator, tracks: Sequence[Track], batch: int | None = None,
                 on_generation: Sequence[Callable[[GenerationRecord], Any]] = (),
                 stop_when: Callable[[GenerationRecord], bool] | None = None, progress: bool = False):
        self.neuron, self.generator, self.tracks = neuron, generator, list(tracks)
        self.batch, self.on_generation, self.stop_when = batch, list(on_generation), stop_when
        for track in self.tracks:
            track.generator = generator
        self.missing = self.tracks[0].config.missing
        self.writer = ThreadPoolExecutor(max_workers=1)
        generations = max(generation_limit(t.config.generations) for t in self.tracks)
        if generations < max(t.config.generations for t in self.tracks):
            warnings.warn(f"{MAX_GENERATIONS_VARIABLE} stops this run after {generations} generations; resume it "
                          "without the variable to finish.", stacklevel=2)
        first = min(t.gen for t in self.tracks)
        label = "evolving" if len(self.tracks) == 1 else f"evolving {len(self.tracks)} units"
        self.bar = tqdm(total=generations, initial=first, desc=label, unit="gen", disable=not progress)

    def active(self) -> list[Track]:
        return [t for t in self.tracks if t.active()]

    def step(self) -> list[GenerationRecord]:
        """One generation of every active track; their records are written in the background (one
        generation at most in flight, so a killed run loses no more than its last generation)."""
        active = self.active()
        if not active:
            return []
        with small_linear_algebra():
            started = time.perf_counter()
            asked = [(t, *t.ask()) for t in active]
            images, picks, responses = self._show(asked)
            seconds = (time.perf_counter() - started) / len(active)
            records, start, extra = [], 0, len(images)
            for (track, codes, parents), picked in zip(asked, picks):
                rows = slice(start, start + len(codes))
                start += len(codes)
                references = responses[extra:extra + len(picked), track.column]
                extra += len(picked)
                records.append(track.conclude(codes, parents, images[rows], responses[rows, track.column],
                                              references, [track.reference_names[i] for i in picked], seconds,
                                              self.writer))
        for record in records:
            for callback in self.on_generation:
                callback(record)
        if self.stop_when is not None:
            for track, record in zip(active, records):
                track.stopped = bool(self.stop_when(record))
        self.bar.update(1)
        finite = [r.best_so_far for r in records if np.isfinite(r.best_so_far)]
        self.bar.set_postfix(best_so_far=f"{max(finite):.4g}" if finite else "nan")
        return records

    def _show(self, asked: list[tuple]) -> tuple[torch.Tensor, list[list[int]], np.ndarray]:
        """Render every track's codes and show them, then each track's interleaved reference images:
        (the codes' images, each track's reference picks, the responses to all shown (n, columns))."""
        images = self._render(np.concatenate([codes for _, codes, _ in asked]))
        shown, ids, picks = [images], [], []
        for track, codes, _ in asked:
            ids += [str(i) if len(self.tracks) == 1 else f"{track.column}:{i}" for i in track.ids(len(codes))]
        for track, _, _ in asked:
            picked, reference_ids = track.interleaved()
            if picked:
                shown.append(track.reference_images[picked].to(images.device, images.dtype))
            ids += reference_ids
            picks.append(picked)
        return images, picks, self._respond(torch.cat(shown) if len(shown) > 1 else images, ids)

    def _render(self, codes: np.ndarray) -> torch.Tensor:
        size = self.batch or len(codes)
        if len(codes) <= size:  # one chunk: no copy
            return self.generator.render(codes)
        return torch.cat([self.generator.render(codes[i:i + size]) for i in range(0, len(codes), size)])

    def _respond(self, images: torch.Tensor, ids: list[str]) -> np.ndarray:
        """Noise-free responses (n, tracks' columns) to `images`; missing ones NaN, after the images were
        shown again if `missing` says so."""
        clean = self._present(images, ids)
        for _ in range(REPRESENTATIONS if self.missing == "represent" else 0):
            again = np.flatnonzero(np.isnan(clean).any(axis=1))
            if not again.size:
                break
            clean[again] = self._present(images[again], [ids[i] for i in again])
        return clean

    def _present(self, images: torch.Tensor, ids: list[str]) -> np.ndarray:
        size, answers = self.batch or len(images), []
        for i in range(0, len(images), size):
            n = len(images[i:i + size])
            answer = np.asarray(self.neuron.respond(images[i:i + size], ids[i:i + size]), dtype=np.float64)
            expected = (n,) if self.neuron.outputs == 1 else (n, self.neuron.outputs)
            if answer.shape != expected:
                raise BadInput(f"The neuron {self.neuron.spec} returned responses of shape {answer.shape} for {n} "
                               f"images; a neuron of {self.neuron.outputs} output(s) returns {expected}. The "
                               "generations recorded before this one are kept.")
            answers.append(answer.reshape(n, -1))
        responses = np.concatenate(answers)
        infinite = np.isinf(responses)
        if infinite.any():  # no response is infinitely strong: a fault of the neuron, not a best image
            warnings.warn(f"The neuron {self.neuron.spec} answered ±inf to {int(infinite.sum())} image(s); those "
                          "responses are treated as missing.", stacklevel=2)
            responses[infinite] = np.nan
        return responses

    def run(self) -> list[RunResult]:
        """Step until every track is finished (its generations, its image budget, or `stop_when`)."""
        try:
            while self.active():
                self.step()
        finally:
            self.close()
        return [track.result() for track in self.tracks]

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the last records to be written (after stepping by hand: `with Loop(...) as loop:`)."""
        try:
            for track in self.tracks:
                track.wait()
        finally:
            self.writer.shutdown()
            self.bar.close()
            for track in self.tracks:
                if track.directory is not None:
                    track.directory.release()


def no_improvement(generations: int, by: float = 0.0) -> Callable[[GenerationRecord], bool]:
    """A stopping rule: True once a run's best so far has not risen by more than `by` in `generations`
    generations (a rule per run, so one rule serves every track of a unit set)."""
    history: dict[Path, list[float]] = {}

    def stop(record: GenerationRecord) -> bool:
        bests = history.setdefault(record.run, [])
        bests.append(record.best_so_far)
        return len(bests) > generations and not bests[-1] > bests[-1 - generations] + by

    return stop


@dataclass
class Records:
    """What one generation leaves on disk (the design note's run folder)."""

    gen: int
    codes: np.ndarray
    top_image: np.ndarray | None  # (H, W, 3) uint8
    generation_row: tuple
    score_rows: list[tuple]
    references: list[tuple]
    best: dict[str, Any] | None  # a new best to write (best.png, best_code.npy, best.json), or None


def _record(directory: RunDirectory, records: Records, state: dict[str, Any]) -> None:
    """Write a generation's files and rows, then commit it: only then does it count as finished."""
    directory.write_file(f"codes/gen_{records.gen:04d}.npy", npy_bytes(records.codes))
    if records.top_image is not None:
        directory.write_file(f"images/gen_{records.gen:04d}.png", png_bytes(records.top_image))
    if records.references:
        directory.append_rows("references.csv", records.references)
    directory.append_rows("generations.csv", [records.generation_row])
    directory.append_rows("scores.csv", records.score_rows)
    directory.commit(state)
    if records.best is not None:
        _write_best(directory, records.best)
    release_freed_memory()


def _summary(scores: np.ndarray) -> tuple[float, float, float]:
    """Best, mean and standard deviation of the responses that came back."""
    finite = scores[np.isfinite(scores)]
    if not finite.size:
        return (float("nan"),) * 3
    return float(finite.max()), float(finite.mean()), float(finite.std())


def _write_best(directory: RunDirectory, best: dict[str, Any]) -> None:
    directory.write_file("best.png", png_bytes(best["image"]))
    directory.write_file("best_code.npy", npy_bytes(best["code"].astype(np.float32)))
    described = {k: best.get(k) for k in ("image_id", "generation", "score", "presentations", "chosen_by", "clean")}
    described = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in described.items()}
    directory.write_file("best.json", (json.dumps(described, indent=2) + "\n").encode())  # null: not known
