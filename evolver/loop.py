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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evolver.track import (MAX_GENERATIONS_VARIABLE, GenerationRecord, Records, RunResult, Track, generation_limit,
                           record_generation)
from evolver_common import BadInput, Interrupted
from evolver_common.compute import small_linear_algebra
from evolver_common.images import resize
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
        self.every_channel = hasattr(neuron, "respond_channels")  # a rig: ask for all, each track reads its own
        self.channels = channels or self.every_channel
        for track in self.tracks:
            track.generator = generator if track.generator is None else track.generator
        self.missing = self.tracks[0].config.missing
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
        shown = Shown(parts, torch.stack(images) if images else None, self.batch, same_size=self._one_size())
        ids += [f"ref{i}" for i in references]
        order = self.session.shuffle(len(ids)) if self.session is not None else np.arange(len(ids))
        responses, again = self._respond(shown, ids, order, [t for t, _, _ in asked])
        return Block(shown, ids, order, picks, references, responses, again)

    def _one_size(self) -> bool:
        """Whether a block's images must share one size: a rig shows them as one block, while a model neuron
        resizes each chunk itself."""
        return bool(getattr(self.neuron, "noisy", False))

    def _respond(self, shown: Shown, ids: list[str], order: np.ndarray, tracks: list[Track]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free responses (n, columns) to what is `shown`, presented in `order`, missing ones NaN after
        the images were shown again if `missing` says so; and the times each image was shown again (n,)."""
        clean = self._present(shown, order, [ids[i] for i in order], into=None)
        shown_again = np.zeros(len(ids), dtype=np.int64)
        for _ in range(REPRESENTATIONS if self.missing == "represent" else 0):
            missing = np.zeros(len(ids), dtype=bool)
            for track in tracks:
                missing |= np.isnan(track.read(clean))
            again = order[np.isin(order, np.flatnonzero(missing))]  # shown again in the block's order
            if not again.size:
                break
            clean = self._present(shown, again, [ids[i] for i in again], into=clean)
            shown_again[again] += 1
        return clean, shown_again

    def _present(self, shown: Shown, rows: np.ndarray, ids: list[str], into: np.ndarray | None) -> np.ndarray:
        """The responses (n, columns) with those of `rows` presented now (in that order) written `into` the
        earlier ones (None: a new array, NaN where not shown)."""
        answers = []
        for positions, images in shown.chunks(rows):
            answers.append((positions, self._answer(images, [ids[p] for p in positions])))
        width = max([a.shape[1] for _, a in answers] + ([into.shape[1]] if into is not None else []))
        responses = np.full((shown.rows, width), np.nan)
        if into is not None:
            responses[:, :into.shape[1]] = into
        for positions, answer in answers:
            responses[rows[positions]] = np.nan
            responses[rows[positions], :answer.shape[1]] = answer
        with np.errstate(invalid="ignore"):
            absurd = np.abs(responses) > LARGEST_RESPONSE
        if absurd.any():  # no response is infinitely strong: a fault of the neuron, not a best image
            warnings.warn(f"The neuron {redact(self.neuron.spec)} answered ±inf, or beyond ±{LARGEST_RESPONSE:g}, to "
                          f"{int(absurd.sum())} image(s); those responses are treated as missing.", stacklevel=2)
            responses[absurd] = np.nan
        return responses

    def _answer(self, images: torch.Tensor, ids: list[str]) -> np.ndarray:
        """The neuron's responses (n, columns) to one chunk of images, checked."""
        n = len(images)
        if self.every_channel:
            answer = np.asarray(self.neuron.respond_channels(images, ids), dtype=np.float64)
            expected = f"(n={n}, channels)"
            good = answer.ndim == 2 and len(answer) == n
        else:
            answer = np.asarray(self.neuron.respond(images, ids), dtype=np.float64)
            shape = (n,) if self.neuron.outputs == 1 else (n, self.neuron.outputs)
            expected, good = str(shape), answer.shape == shape
        if not good:
            raise BadInput(f"The neuron {redact(self.neuron.spec)} returned responses of shape {answer.shape} for {n} "
                           f"images; it should return {expected}. The generations recorded before this one are kept.")
        return answer.reshape(n, -1)

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


class Shown:
    """What a generation shows: the images of each part's codes, rendered by the part's generator, then
    `references` (k, 3, H, W) in [0, 1] (or None), `chunk` at a time. The codes' images are rendered once and
    kept while they take at most KEPT_BYTES; beyond, each chunk is rendered as it is shown, so that memory
    follows the chunk, not the population, and the few images a record keeps are rendered again (`image`).

    Images of several sizes (threads through different generators) are shown a size at a time to a neuron
    that resizes them itself; `same_size` resizes them to the largest instead, as one block (a rig's)."""

    def __init__(self, parts: Sequence[tuple[Any, np.ndarray]], references: torch.Tensor | None, chunk: int | None,
                 same_size: bool = False):
        self.drawn = sum(len(codes) for _, codes in parts)  # rows of codes, before the references'
        self.references, self.same_size = references, same_size
        self.rows = self.drawn + (len(references) if references is not None else 0)
        groups: dict[int, tuple[Any, list[int], list[np.ndarray]]] = {}  # by generator: tracks may share one
        start = 0
        for generator, codes in parts:
            group = groups.setdefault(id(generator), (generator, [], []))
            group[1].extend(range(start, start + len(codes)))
            group[2].append(codes)
            start += len(codes)
        self.groups = [(generator, np.asarray(rows), np.concatenate(codes))
                       for generator, rows, codes in groups.values()]
        self.group, self.local = np.zeros(self.drawn, dtype=np.int64), np.zeros(self.drawn, dtype=np.int64)
        for k, (_, rows, _) in enumerate(self.groups):
            self.group[rows], self.local[rows] = k, np.arange(len(rows))
        sides = [getattr(g, "image_size", 256) for g, _, _ in self.groups]
        if references is not None:
            sides.append(references.shape[-1])
        image_bytes = 3 * 4 * max(sides) ** 2
        self.chunk = chunk or max(1, CHUNK_BYTES // image_bytes)
        self.kept: list[torch.Tensor | None] = [None] * len(self.groups)
        if self.drawn * image_bytes <= KEPT_BYTES:
            for k, (generator, _, codes) in enumerate(self.groups):
                rendered = [generator.render(codes[i:i + self.chunk]) for i in range(0, len(codes), self.chunk)]
                self.kept[k] = rendered[0] if len(rendered) == 1 else torch.cat(rendered)

    def chunks(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """The images of `rows` (indices into codes then references, in any order), `chunk` at a time: each
        as (positions in `rows`, images in that order)."""
        for i in range(0, len(rows), self.chunk):
            part = rows[i:i + self.chunk]
            pieces = []  # (positions in part, images)
            drawn = part < self.drawn
            for k in np.unique(self.group[part[drawn]]):
                where = np.flatnonzero(drawn & (self.group[np.minimum(part, self.drawn - 1)] == k))
                pieces.append((where, self._images(k, self.local[part[where]])))
            if not drawn.all():
                where = np.flatnonzero(~drawn)
                pieces.append((where, self.references[torch.as_tensor(part[where] - self.drawn)]))
            for where, images in self._alike(pieces):
                yield i + where, images

    def _alike(self, pieces: list[tuple[np.ndarray, torch.Tensor]]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """The pieces of a chunk joined where their images share a size (all of them, resized to the largest,
        where `same_size`), each in the order of the chunk."""
        first = pieces[0][1]
        pieces = [(w, x.to(first.device, first.dtype if x.dtype == first.dtype else torch.float32)) for w, x in pieces]
        if self.same_size:
            side = max(x.shape[-1] for _, x in pieces)
            pieces = [(w, resize(x, (side, side)).clamp(0, 1)) for w, x in pieces]
        by_size: dict[tuple[int, ...], list[tuple[np.ndarray, torch.Tensor]]] = {}
        for where, images in pieces:
            by_size.setdefault(tuple(images.shape[-2:]), []).append((where, images))
        for alike in by_size.values():
            where = np.concatenate([w for w, _ in alike])
            images = alike[0][1] if len(alike) == 1 else torch.cat([x.to(pieces[0][1].dtype) for _, x in alike])
            ordered = np.argsort(where, kind="stable")
            if (ordered != np.arange(len(ordered))).any():
                images = images[torch.as_tensor(ordered)]
            yield where[ordered], images

    def _images(self, group: int, local: np.ndarray) -> torch.Tensor:
        generator, _, codes = self.groups[group]
        kept = self.kept[group]
        if kept is None:
            return generator.render(codes[local])
        if local[-1] - local[0] == len(local) - 1 and (np.diff(local) == 1).all():  # consecutive: a view
            return kept[int(local[0]):int(local[-1]) + 1]
        return kept[torch.as_tensor(local)]

    def image(self, row: int, start: int = 0) -> torch.Tensor:
        """The image (3, H, W) of code `start + row`."""
        row += start
        k, local = int(self.group[row]), int(self.local[row])
        if self.kept[k] is not None:
            return self.kept[k][local]
        generator, _, codes = self.groups[k]
        return generator.render(codes[local:local + 1])[0]


def no_improvement(generations: int, by: float = 0.0) -> Callable[[GenerationRecord], bool]:
    """A stopping rule: True once a run's best so far has not risen by more than `by` in `generations`
    generations (a rule per run, so one rule serves every track of a unit set)."""
    history: dict[Path, list[float]] = {}

    def stop(record: GenerationRecord) -> bool:
        bests = history.setdefault(record.run, [])
        bests.append(record.best_so_far)
        return len(bests) > generations and not bests[-1] > bests[-1 - generations] + by

    return stop
