"""The closed loop, one generation a `step`: ask → render → respond → noise → record → tell.

A `Loop` drives one or more `Track`s through one generator and one neuron. A single run is one track;
a unit set (`resnet50:layer4:unit0-63`) is one track a unit, each told column k of the neuron's (n, k)
responses to its own images, all rendered and shown in one batch. Missing responses, noise, references
and records are handled here once, whatever the mode.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evolver.track import MAX_GENERATIONS_VARIABLE, GenerationRecord, RunResult, Track, generation_limit
from evolver_common import BadInput, Interrupted
from evolver_common.compute import small_linear_algebra
from evolver_common.secrets import redact

# Images whose responses did not come back are shown again (up to REPRESENTATIONS more blocks),
# or told to the optimizer as missing (NaN): it then learns from the others.
MISSING = ("represent", "skip")
REPRESENTATIONS = 2
# No neuron answers beyond this; a response that does is a fault, and its square (a variance, CMA-ES's
# step) would overflow to inf.
LARGEST_RESPONSE = 1e150
# Images rendered and shown at a time when the loop is given no batch: 1,365 of 64 pixels a side, 10 of
# 1,024 (a generation of 10,000 such images would take 126 GB at once).
CHUNK_BYTES = 128 << 20
KEPT_BYTES = 1 << 30  # a generation's images kept whole up to this: 21,000 of 64 pixels a side


class Loop:
    """Tracks evolved through one generator and one neuron, one generation a `step`.

    Args:
        neuron: answers for every track: (n,) responses for one track, (n, k) for k tracks (column k each).
        generator: renders every track's codes.
        tracks: the runs.
        batch: images rendered and shown at a time (None: as many as CHUNK_BYTES of images hold, a
            generation's at once unless it is very large).
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
            shown, picks, responses, again = self._show(asked)
            seconds = (time.perf_counter() - started) / len(active)
            records, start, extra = [], 0, len(shown.codes)
            for (track, codes, parents), picked in zip(asked, picks):
                rows = slice(start, start + len(codes))
                references = responses[extra:extra + len(picked), track.column]
                represented = int(again[rows].sum() + again[extra:extra + len(picked)].sum())
                extra += len(picked)
                records.append(track.conclude(codes, parents, partial(shown.image, start=start),
                                              responses[rows, track.column], references,
                                              [track.reference_names[i] for i in picked], seconds, self.writer,
                                              represented))
                start += len(codes)
        for record in records:
            for callback in self.on_generation:
                callback(record)
        if self.stop_when is not None:
            for track, record in zip(active, records):
                track.stopped = bool(self.stop_when(record))
                if track.stopped:
                    warnings.warn(f"{track.directory.path}: its stop_when rule ended the run after generation "
                                  f"{record.gen} (of {track.config.generations} asked).", stacklevel=2)
        self.bar.update(1)
        finite = [r.best_so_far for r in records if np.isfinite(r.best_so_far)]
        self.bar.set_postfix(best_so_far=f"{max(finite):.4g}" if finite else "nan")
        return records

    def _show(self, asked: list[tuple]) -> tuple[Shown, list[list[int]], np.ndarray, np.ndarray]:
        """Render every track's codes and show them, then each track's interleaved reference images:
        (what was shown, each track's reference picks, the responses to all shown (n, columns), and the
        times each was shown again for a missing response (n,))."""
        codes = np.concatenate([codes for _, codes, _ in asked])
        ids, picks, references = [], [], []
        for track, codes_, _ in asked:
            ids += [str(i) if len(self.tracks) == 1 else f"{track.column}:{i}" for i in track.ids(len(codes_))]
        for track, _, _ in asked:
            picked, reference_ids = track.interleaved()
            if picked:
                references.append(track.reference_images[picked])
            ids += reference_ids
            picks.append(picked)
        shown = Shown(self.generator, codes, torch.cat(references) if references else None, self.batch)
        return shown, picks, *self._respond(shown, ids)

    def _respond(self, shown: Shown, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free responses (n, tracks' columns) to what is `shown`, missing ones NaN after the images
        were shown again if `missing` says so; and the times each image was shown again (n,)."""
        clean = self._present(shown, np.arange(len(ids)), ids)
        shown_again = np.zeros(len(ids), dtype=np.int64)
        for _ in range(REPRESENTATIONS if self.missing == "represent" else 0):
            again = np.flatnonzero(np.isnan(clean).any(axis=1))
            if not again.size:
                break
            clean[again] = self._present(shown, again, [ids[i] for i in again])
            shown_again[again] += 1
        return clean, shown_again

    def _present(self, shown: Shown, rows: np.ndarray, ids: list[str]) -> np.ndarray:
        answers, start = [], 0
        for images in shown.chunks(rows):
            n = len(images)
            answer = np.asarray(self.neuron.respond(images, ids[start:start + n]), dtype=np.float64)
            start += n
            expected = (n,) if self.neuron.outputs == 1 else (n, self.neuron.outputs)
            if answer.shape != expected:
                raise BadInput(f"The neuron {redact(self.neuron.spec)} returned responses of shape {answer.shape} for {n} "
                               f"images; a neuron of {self.neuron.outputs} output(s) returns {expected}. The "
                               "generations recorded before this one are kept.")
            answers.append(answer.reshape(n, -1))
        responses = np.concatenate(answers)
        with np.errstate(invalid="ignore"):
            absurd = np.abs(responses) > LARGEST_RESPONSE
        if absurd.any():  # no response is infinitely strong: a fault of the neuron, not a best image
            warnings.warn(f"The neuron {redact(self.neuron.spec)} answered ±inf, or beyond ±{LARGEST_RESPONSE:g}, to "
                          f"{int(absurd.sum())} image(s); those responses are treated as missing.", stacklevel=2)
            responses[absurd] = np.nan
        return responses

    def run(self) -> list[RunResult]:
        """Step until every track is finished (its generations, its image budget, or `stop_when`). Stopped
        by Ctrl-C or SIGTERM, it records what finished and raises Interrupted, saying how to continue."""
        interrupted = False
        try:
            while self.active():
                self.step()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.close()
        if interrupted:
            raise Interrupted(self._recorded()) from None
        return [track.result() for track in self.tracks]

    def _recorded(self) -> str:
        """What an interrupted run recorded, and the command that continues it."""
        done, planned = min(t.gen for t in self.tracks), self.tracks[0].config.generations
        path = self.tracks[0].directory.path
        if len(self.tracks) > 1:  # a unit set resumes as a whole
            path = path.parent
            what = f"each of its {len(self.tracks)} units' runs in {path} holds at least"
        else:
            what = f"{path} holds"
        return (f"Interrupted: {what} {done} finished generation(s) of {planned}, recorded. Continue with "
                f"`evolver run --resume {path}`.")

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


class Shown:
    """What a generation shows: the images of `codes` (n, code_dim), then `references` (k, 3, H, W) in [0, 1]
    (or None), `chunk` at a time. The codes' images are rendered once and kept while they take at most
    KEPT_BYTES; beyond, each chunk is rendered as it is shown, so that memory follows the chunk, not the
    population, and the few images a record keeps are rendered again (`image`)."""

    def __init__(self, generator, codes: np.ndarray, references: torch.Tensor | None, chunk: int | None):
        self.generator, self.codes, self.references = generator, codes, references
        image_bytes = 3 * 4 * getattr(generator, "image_size", 256) ** 2
        self.chunk = chunk or max(1, CHUNK_BYTES // image_bytes)
        self.kept = None
        if len(codes) * image_bytes <= KEPT_BYTES:
            parts = [generator.render(codes[i:i + self.chunk]) for i in range(0, len(codes), self.chunk)]
            self.kept = parts[0] if len(parts) == 1 else torch.cat(parts)

    def chunks(self, rows: np.ndarray) -> Iterator[torch.Tensor]:
        """The images of `rows` (increasing indices into codes then references), `chunk` at a time, in order."""
        for i in range(0, len(rows), self.chunk):
            part = rows[i:i + self.chunk]
            drawn, shown = part[part < len(self.codes)], []
            if len(drawn):
                shown.append(self._images(drawn))
            if len(drawn) < len(part):
                references = self.references[part[len(drawn):] - len(self.codes)]
                shown.append(references.to(shown[0].device, shown[0].dtype) if shown else references)
            yield shown[0] if len(shown) == 1 else torch.cat(shown)

    def _images(self, drawn: np.ndarray) -> torch.Tensor:
        if self.kept is None:
            return self.generator.render(self.codes[drawn])
        if drawn[-1] - drawn[0] == len(drawn) - 1:  # consecutive rows: a view, not a copy
            return self.kept[int(drawn[0]):int(drawn[-1]) + 1]
        return self.kept[torch.as_tensor(drawn)]

    def image(self, row: int, start: int = 0) -> torch.Tensor:
        """The image (3, H, W) of code `start + row`."""
        row += start
        return self.kept[row] if self.kept is not None else self.generator.render(self.codes[row:row + 1])[0]


def no_improvement(generations: int, by: float = 0.0) -> Callable[[GenerationRecord], bool]:
    """A stopping rule: True once a run's best so far has not risen by more than `by` in `generations`
    generations (a rule per run, so one rule serves every track of a unit set)."""
    history: dict[Path, list[float]] = {}

    def stop(record: GenerationRecord) -> bool:
        bests = history.setdefault(record.run, [])
        bests.append(record.best_so_far)
        return len(bests) > generations and not bests[-1] > bests[-1 - generations] + by

    return stop
