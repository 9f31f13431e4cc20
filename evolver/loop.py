"""The closed loop, one generation a `step`: ask → render → respond → noise → record → tell.

A `Loop` drives one or more `Track`s through one neuron. A single run is one track; a unit set
(`resnet50:layer4:unit0-63`) is one track a unit, each told column k of the neuron's (n, k) responses to its
own images, all rendered and shown in one batch; a session (evolver.session) is one track a thread, each
through its own generator, their images shown in one block in a random order. Missing responses, noise,
references, channels and records are handled here once, whatever the mode.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evolver.presenting import Presenter, Shown
from evolver.track import (MAX_GENERATIONS_VARIABLE, GenerationRecord, Records, RunResult, Track, generation_limit,
                           record_generation)
from evolver_common import Interrupted
from evolver_common.compute import small_linear_algebra


class Loop:
    """Tracks evolved through their generators and one neuron, one generation a `step`.

    Args:
        neuron: answers for every track: (n,) responses for one track, (n, k) for k tracks (a unit set), or
            every channel it recorded (a rig's `respond_channels`, (n, channels)); each track reads its own
            column or channels of them (`Track.read`).
        generator: renders the codes of every track that has no generator of its own (a session's threads
            each have theirs).
        tracks: the runs.
        batch: images rendered and shown at a time (None: as many as CHUNK_BYTES of images hold, a
            generation's at once unless it is very large).
        on_generation: callables given each track's GenerationRecord after each of its generations.
        stop_when: a callable of a GenerationRecord; True ends that run (e.g. `no_improvement(20)`).
        progress: show a progress bar with the best response.
        session: a session's records (evolver.session.SessionRecords): its threads' images shown in one block
            in a random order, the order recorded, their generations committed together; None for a run or a
            unit set.
        channels: record every channel's response to each image in each run (`channels/`), as for a rig.
    """

    def __init__(self, neuron, generator, tracks: Sequence[Track], batch: int | None = None,
                 on_generation: Sequence[Callable[[GenerationRecord], Any]] = (),
                 stop_when: Callable[[GenerationRecord], bool] | None = None, progress: bool = False,
                 session=None, channels: bool = False):
        self.neuron, self.generator, self.tracks = neuron, generator, list(tracks)
        self.batch, self.on_generation, self.stop_when = batch, list(on_generation), stop_when
        self.session = session
        self.presenter = Presenter(neuron, self.tracks[0].config.missing)
        self.channels = channels or self.presenter.every_channel
        for track in self.tracks:
            track.generator = generator if track.generator is None else track.generator
        self.writer = ThreadPoolExecutor(max_workers=1)
        generations = max(generation_limit(t.config.generations) for t in self.tracks)
        if generations < max(t.config.generations for t in self.tracks):
            warnings.warn(f"{MAX_GENERATIONS_VARIABLE} stops this run after {generations} generations; resume it "
                          "without the variable to finish.", stacklevel=2)
        first = min(t.gen for t in self.tracks)
        label = "evolving" if len(self.tracks) == 1 else \
            f"evolving {len(self.tracks)} {'threads' if session is not None else 'units'}"
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
            block = self._show(asked)
            seconds = (time.perf_counter() - started) / len(active)
            concluded, start, codes_shown = [], 0, block.shown.drawn
            for (track, codes, parents), picked in zip(asked, block.picks):
                rows = np.r_[start:start + len(codes), codes_shown + np.asarray(picked, dtype=np.int64)]
                told = track.read(block.responses[rows])
                concluded.append(track.conclude(
                    codes, parents, partial(block.shown.image, start=start), told[:len(codes)], told[len(codes):],
                    [track.reference_names[block.references[p]] for p in picked], seconds,
                    int(block.again[rows].sum()), block.responses[rows] if self.channels else None))
                start += len(codes)
            self._record(active, concluded, block)
        records = [record for record, _ in concluded]
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

    def _record(self, tracks: list[Track], concluded: list[tuple[GenerationRecord, Records]], block: Block) -> None:
        """Hand the generation's records to the writer: each run's on its own, or a session's together
        with the block's order (one commit for the whole session)."""
        for track in self.tracks:
            track.wait()  # in order, and a failed write stops the run here
        if self.session is not None:
            writing = self.writer.submit(self.session.record, [(t, files) for t, (_, files) in zip(tracks, concluded)],
                                         block.shown_order(), self.session.snapshot())
            for track in self.tracks:
                track.writing = writing
            return
        for track, (_, files) in zip(tracks, concluded):
            track.writing = self.writer.submit(record_generation, files)

    def _show(self, asked: list[tuple]) -> Block:
        """Render every track's codes and show them with the reference images of the block (each shown once
        whatever the tracks that interleave it), in a random order for a session."""
        ids, parts, picks = [], [], []
        for track, codes, _ in asked:
            ids += track.image_ids(len(codes))
            parts.append((track.generator, codes))
        references, images = [], []  # indices into the reference set, and their images
        for track, _, _ in asked:
            picked, _ = track.interleaved()
            for i in picked:
                if i not in references:
                    references.append(i)
                    images.append(track.reference_images[i])
            picks.append([references.index(i) for i in picked])
        shown = Shown(parts, torch.stack(images) if images else None, self.batch, same_size=self.presenter.one_size())
        ids += [f"ref{i}" for i in references]
        order = self.session.shuffle(len(ids)) if self.session is not None else np.arange(len(ids))
        responses, again = self.presenter.respond(shown, ids, order, [t.read for t, _, _ in asked])
        return Block(shown, ids, order, picks, references, responses, again)

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
        results = [track.result() for track in self.tracks]
        if self.session is not None:
            self.session.finish()
        return results

    def _recorded(self) -> str:
        """What an interrupted run recorded, and the command that continues it."""
        done, planned = min(t.gen for t in self.tracks), self.tracks[0].config.generations
        path = self.tracks[0].directory.path
        if len(self.tracks) > 1 or self.session is not None:  # a unit set or a session resumes as a whole
            path = path.parent
            kind = "threads" if self.session is not None else "units"
            what = f"each of its {len(self.tracks)} {kind}' runs in {path} holds at least"
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


@dataclass
class Block:
    """One generation's presentation. Its rows are the tracks' codes in track order, then the reference images
    of the block (`references`: indices into the reference set, each shown once); `order` is the order the
    rows were presented in; `picks` holds each track's references (indices into `references`);
    `responses` (rows, columns) and `again`, the times each row was shown again for a missing response."""

    shown: Shown
    ids: list[str]
    order: np.ndarray
    picks: list[list[int]]
    references: list[int]
    responses: np.ndarray
    again: np.ndarray

    def shown_order(self) -> list[str]:
        """The ids of the block's images in the order they were presented."""
        return [self.ids[i] for i in self.order]


def no_improvement(generations: int, by: float = 0.0) -> Callable[[GenerationRecord], bool]:
    """A stopping rule: True once a run's best so far has not risen by more than `by` in `generations`
    generations (a rule per run, so one rule serves every track of a unit set)."""
    history: dict[Path, list[float]] = {}

    def stop(record: GenerationRecord) -> bool:
        bests = history.setdefault(record.run, [])
        bests.append(record.best_so_far)
        return len(bests) > generations and not bests[-1] > bests[-1 - generations] + by

    return stop
