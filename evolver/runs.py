"""Reading a run folder back: `open_run(path)` gives a read-only `Run`.

One reader for users and for evolver's own commands (plot, report, sweep --status, bench, the checks). It
reads what the run had committed when it was opened (its last finished generation), so it may be used on a
run that another process is still writing: rows of a generation being written are left out.

    run = evolver.open_run("runs/20261207-101500-stimnet-classifier-unit7-uh-cmaes")
    run.generations[["gen", "best", "best_so_far"]]     # pandas
    run.best.response, run.best.image                    # (H, W, 3) uint8
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from evolver.records import (BLOCKS, SESSION_FILE, SESSION_STATE, THREAD_FOLDER, RunDirectory, is_session, read_state,
                             session_record)
from evolver.retest import Retest
from evolver.run_state import RunState
from evolver_common import BadInput
from evolver_common.images import read_image


@dataclass(frozen=True)
class BestImage:
    """The image a run returns: `image` (H, W, 3) uint8, `code` (code_dim,) float32, `response` its told
    response (the mean over its `presentations`), `clean` its noise-free response (NaN where not known),
    the `generation` and `image_id` it was first shown as, and how it was chosen."""

    image: np.ndarray
    code: np.ndarray
    response: float
    clean: float
    generation: int
    image_id: int
    presentations: int
    chosen_by: str


class Run:
    """A run folder as committed when it was opened (`refresh()` reads it again).

    `config` is config.json (dict); `state` the RunState (None before the first generation finished);
    `generations`, `scores` and `references` the tables (pandas; `references` None without interleaved
    references); `best` the returned image; `finished` whether the run reached its end."""

    def __init__(self, path: str | Path):
        self.directory = RunDirectory.open(path)
        self.path = self.directory.path
        self.refresh()

    def refresh(self) -> Run:
        """Read the run's last committed generation again (a run another process is writing moves on)."""
        self.__dict__.pop("config", None)
        self.state: RunState | None = self.directory.state()  # read first: the tables are cut at its lengths
        self._tables: dict[str, pd.DataFrame] = {}
        return self

    @cached_property
    def config(self) -> dict[str, Any]:
        return self.directory.config()

    def _table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            self._tables[name] = self.directory.table(name, self.state)
        return self._tables[name]

    @property
    def generations(self) -> pd.DataFrame:
        """generations.csv: one row a finished generation (docs/run-folder.md names the columns)."""
        return self._table("generations.csv")

    @property
    def scores(self) -> pd.DataFrame:
        """scores.csv: one row an image shown."""
        return self._table("scores.csv")

    @property
    def references(self) -> pd.DataFrame | None:
        """references.csv: the interleaved reference images' responses, or None."""
        return self._table("references.csv") if "references.csv" in self.directory.headers() else None

    def rows_after(self, name: str, start: int = 0) -> tuple[pd.DataFrame, int]:
        """The rows of table `name` (generations.csv, scores.csv, references.csv) committed after byte
        `start` (0: all), and the byte to give next time: `evolver watch` follows a run this way, reading
        each row once however long the run."""
        if name not in self.directory.headers():
            raise BadInput(f"{self.path} has no table {name}; it has {', '.join(self.directory.headers())}.")
        return self.directory.rows_after(name, start, self.state)

    @cached_property
    def reference_set(self) -> pd.DataFrame | None:
        """reference.csv: each reference image (`image`) and the response it drew (`score`), shown once
        before the first generation; None for a run without reference images."""
        path = self.path / "reference.csv"
        return pd.read_csv(path) if path.is_file() else None

    @property
    def best(self) -> BestImage | None:
        """The image the run returns so far, or None before any response came back."""
        best = self.state.best if self.state else None
        if best is None:
            return None
        return BestImage(best.image, best.code, best.score, best.clean, best.generation, best.image_id,
                         best.presentations, best.chosen_by)

    @property
    def finished(self) -> bool:
        """Whether the run reached its end: its generations, its image budget or its re-test."""
        if self.state is None:
            return False
        run = self.config["run"]
        retest = Retest.resolve(self.config["resolved"]["retest"], True, run["generations"], run.get("images"))
        return self.state.finished(run["generations"], run.get("images"), retest)

    @cached_property
    def thread(self) -> dict[str, Any] | None:
        """Where the run is a session's thread (`SESSION/threadK`), what the thread asked that differs from the
        session's options (session.json); None for a run of its own."""
        match = THREAD_FOLDER.fullmatch(self.path.name)
        if not match or not is_session(self.path.parent):
            return None
        threads = session_record(self.path.parent)["threads"]
        return threads[int(match[1])] if int(match[1]) < len(threads) else None

    @property
    def generation(self) -> int:
        """The last committed generation (-1 before the first)."""
        return self.state.generation if self.state else -1

    def channels(self, gen: int | None = None) -> pd.DataFrame:
        """Every channel's response to each image of generation `gen` (None: of every committed generation),
        where the run records them (a rig's array; a session on a unit set): one row an image, as scores.csv
        then references.csv list them (`image_id`: the image's id, or a reference image's name), then
        `channel_0`, `channel_1`, ... (NaN where a channel did not answer). The responses are as the neuron gave
        them, before simulated noise."""
        if gen is None:
            return pd.concat([self.channels(g) for g in range(self.generation + 1)], ignore_index=True) \
                if self.generation >= 0 else pd.DataFrame(columns=["gen", "image_id"])
        self._check_generation(gen)
        path = self.path / "channels" / f"gen_{gen:04d}.npy"
        if not path.is_file():
            raise BadInput(f"{self.path} records no channels: a run records every channel's responses where its "
                           "neuron has several (a rig, or a session on a unit set).")
        values = np.load(path, allow_pickle=False)
        scores, references = self.scores, self.references
        images = scores.loc[scores.gen == gen, "image_id"].tolist()
        if references is not None:
            images += references.loc[references.gen == gen, "image"].tolist()
        frame = pd.DataFrame(values, columns=[f"channel_{k}" for k in range(values.shape[1])])
        frame.insert(0, "image_id", images)
        frame.insert(0, "gen", gen)
        return frame

    def codes(self, gen: int) -> np.ndarray:
        """The codes shown in generation `gen`: (n, code_dim) float32."""
        self._check_generation(gen)
        return np.load(self.path / "codes" / f"gen_{gen:04d}.npy", allow_pickle=False)

    def top_image(self, gen: int) -> np.ndarray | None:
        """The image with the largest told response of generation `gen`, (H, W, 3) uint8 (None where no
        response came back)."""
        self._check_generation(gen)
        path = self.path / "images" / f"gen_{gen:04d}.png"
        if not path.is_file():
            return None
        return (read_image(path, "The generation's image")[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def images(self, gen: int, generator=None) -> torch.Tensor:
        """Every image of generation `gen`, rendered again from its codes: (n, 3, H, W) in [0, 1]. The
        generator is the run's own (`generator`) unless one is given."""
        codes = self.codes(gen)
        return (generator or self.generator).render(codes)

    @cached_property
    def generator(self):
        """The run's own generator (its recorded name, options and weights), on the CPU in fp32, made once."""
        import generators

        run = self.config["run"]
        if not isinstance(run["generator"], str):
            raise BadInput(f"The run {self.path} was made with a generator object ({run['generator']['object']}); "
                           "give it again: run.images(gen, generator=...).")
        return generators.create(run["generator"], weights=run["generator_weights"], device="cpu",
                                 precision="fp32", **(run.get("generator_options") or {}))

    def _check_generation(self, gen: int) -> None:
        if not 0 <= gen <= self.generation:
            raise BadInput(f"Generation {gen} of {self.path} is not recorded: it has generations 0 to "
                           f"{self.generation}." if self.generation >= 0 else
                           f"{self.path} has no finished generation yet.")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, generation {self.generation}, {'finished' if self.finished else 'unfinished'})"


def open_run(path: str | Path) -> Run:
    """The run folder at `path`, read-only, as committed now (BadInput if it is not a run folder)."""
    return Run(path)


class Session:
    """A session's folder (evolver.session), read-only: `config` (session.json: the run's options and the
    threads as asked), `threads` (a Run a thread, in order), `blocks` (blocks.csv as committed: each block's
    images in the order shown, `thread` empty for a reference image)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not is_session(self.path):
            raise BadInput(f"{self.path} is not a session's folder: it has no {SESSION_FILE} (a session is what "
                           "`evolver run --thread ... --thread ...` writes).")
        self.config = session_record(self.path)
        self.threads = [Run(self.path / f"thread{k}") for k in range(len(self.config["threads"]))
                        if (self.path / f"thread{k}" / "config.json").is_file()]

    @property
    def blocks(self) -> pd.DataFrame:
        state = self.path / SESSION_STATE
        size = int(read_state(state)["blocks_bytes"]) if state.is_file() else None
        with open(self.path / BLOCKS, "rb") as f:
            data = f.read(size) if size is not None else f.readline()
        return pd.read_csv(io.BytesIO(data), dtype={"thread": "Int64", "image_id": str})

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, {len(self.threads)} threads)"


def open_session(path: str | Path) -> Session:
    """The session folder at `path`, read-only (BadInput if it is not one)."""
    return Session(path)
