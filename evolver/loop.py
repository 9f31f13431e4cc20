"""The closed loop, one generation a `step`: ask → render → respond → noise → record → tell.

A `Loop` drives one or more `Track`s through one generator and one neuron. A single run is one track;
a unit set (`resnet50:layer4:unit0-63`) is one track a unit, each told column k of the neuron's (n, k)
responses to its own images, all rendered and shown in one batch. Missing responses, noise, references
and records are handled here once, whatever the mode.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evolver.track import MAX_GENERATIONS_VARIABLE, GenerationRecord, RunResult, Track, generation_limit
from evolver_common import BadInput
from evolver_common.compute import small_linear_algebra

# Images whose responses did not come back are shown again (up to REPRESENTATIONS more blocks),
# or told to the optimizer as missing (NaN): it then learns from the others.
MISSING = ("represent", "skip")
REPRESENTATIONS = 2
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
