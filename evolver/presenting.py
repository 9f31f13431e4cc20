"""Showing images to a neuron: what a block shows (`Shown`) and how it is presented (`Presenter`).

The loop shows each generation's codes through these, and the analyses after an evolution (evolver.analysis.showing:
`show`, `rf`, `landscape`) show their fixed images through the same, so that a rig meets one protocol:
blocks in a given order, images whose response did not come back shown again, absurd answers dropped.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from evolver_common import BadInput
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


class Presenter:
    """Shows blocks to one neuron: every channel where it answers on several (a rig's `respond_channels`),
    else its (n,) or (n, k) responses; images whose response is missing are shown again where `missing` is
    'represent'."""

    def __init__(self, neuron, missing: str = "represent"):
        self.neuron, self.missing = neuron, missing
        self.every_channel = hasattr(neuron, "respond_channels")  # a rig: ask for all, each reader reads its own

    def one_size(self) -> bool:
        """Whether a block's images must share one size: a rig shows them as one block, while a model neuron
        resizes each chunk itself."""
        return bool(getattr(self.neuron, "noisy", False))

    def respond(self, shown: Shown, ids: list[str], order: np.ndarray,
                reads: Sequence[Callable[[np.ndarray], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free responses (n, columns) to what is `shown`, presented in `order`, missing ones NaN after
        the images were shown again if `missing` says so; and the times each image was shown again (n,)."""
        clean = self.present(shown, order, [ids[i] for i in order], into=None)
        shown_again = np.zeros(len(ids), dtype=np.int64)
        for _ in range(REPRESENTATIONS if self.missing == "represent" else 0):
            missing = np.zeros(len(ids), dtype=bool)
            for read in reads:
                missing |= np.isnan(read(clean))
            again = order[np.isin(order, np.flatnonzero(missing))]  # shown again in the block's order
            if not again.size:
                break
            clean = self.present(shown, again, [ids[i] for i in again], into=clean)
            shown_again[again] += 1
        return clean, shown_again

    def present(self, shown: Shown, rows: np.ndarray, ids: list[str], into: np.ndarray | None) -> np.ndarray:
        """The responses (n, columns) with those of `rows` presented now (in that order) written `into` the
        earlier ones (None: a new array, NaN where not shown)."""
        answers = []
        for positions, images in shown.chunks(rows):
            answers.append((positions, self.answer(images, [ids[p] for p in positions])))
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

    def answer(self, images: torch.Tensor, ids: list[str]) -> np.ndarray:
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
                           f"images; it should return {expected}. What was recorded before this block is kept.")
        return answer.reshape(n, -1)


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


