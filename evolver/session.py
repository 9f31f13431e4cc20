"""Sessions: several threads (evolutions) on one neuron at once, as labs run them in vivo (Ponce et al.
2019's two threads; Wang & Ponce's one CMA-ES thread per generator; optimizers compared in one session).

Each generation every thread asks its optimizer, renders its codes with its own generator, and all the
images (with the reference images of the block) are shown to the neuron in one block, in a random order, so
that the neuron's drift within a session falls equally on every thread; each thread is told its own
responses, read from its own channel where the neuron has several (a rig's array, a unit set). A session's
folder holds `session.json` (the neuron, the options and the threads as asked), `blocks.csv` (each block's
order), `state/session.npz` (its commit) and one ordinary run folder a thread, `threadK/`. A generation is
committed for the whole session at once: every thread's files and rows are written, then the session's
state, which holds each thread's committed state, then each thread's; a session killed at any moment resumes
from its last generation that every thread finished, exactly as it would have gone on.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolver import optimizers
from evolver.build import (finished_generations, make_generator, make_neuron, make_track, one_response,
                           resumed_config, resumed_track, unit_neurons)
from evolver.config import PARTS, RunConfig, describe
from evolver.loop import Loop
from evolver.records import (BLOCKS, SESSION_FILE, SESSION_STATE, RunDirectory, check_out_folder,
                             read_state, session_record, state_bytes)
from evolver.reference import load_reference
from evolver.track import Column, Records
from evolver_common import BadInput, FolderLock, open_record, write_atomic
from evolver_common.memory import release_freed_memory
from evolver_common.secrets import redact
from evolver_common.specs import annotations, typed_options

BLOCKS_HEADER = b"gen,position,thread,image_id\n"
ORDER_STREAM = 2  # of the session's seed: the blocks' order (0 and 1 are a run's optimizer and noise)
SESSION_SCHEMA = 1  # of state/session.npz
THREAD_HELP = ("A thread is KEY=VALUE fields separated by commas: generator=NAME, generator_weights=W, "
               "optimizer=NAME[:PARAM=VALUE...], seed=N, channel=K (the column of the neuron's responses it follows: "
               "a rig's channel, a unit set's unit by position), generations=N; fields left out are the run's. "
               "E.g. --thread generator=dcgan --thread generator=stimuli,optimizer=ga:population=40.")


@dataclass
class Thread:
    """One thread of a session: what differs from the session's run options (None: the run's). From Python,
    `generator` and `optimizer` may be objects; `params` go to an optimizer named by a string."""

    generator: Any = None
    generator_weights: str | None = None
    optimizer: Any = None
    params: dict[str, Any] | None = None
    seed: int | None = None
    channel: int | None = None
    generations: int | None = None

    @classmethod
    def parse(cls, text: str) -> Thread:
        """A thread from the command line's `--thread` text (THREAD_HELP)."""
        fields = {}
        for part in re.split(r",(?=\s*\w+\s*=)", text.strip()):  # a value may hold commas (a list of families)
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise BadInput(f"--thread '{text}': '{part}' is not KEY=VALUE. {THREAD_HELP}")
            fields[key.strip()] = value.strip()
        if "params" in fields:
            raise BadInput(f"--thread '{text}': give an optimizer's parameters with its name, "
                           f"optimizer=NAME:PARAM=VALUE. {THREAD_HELP}")
        if "optimizer" in fields and "=" in fields["optimizer"]:
            # NAME:PARAM=VALUE..., the name itself may hold a colon (nevergrad:NGOpt)
            parts = fields["optimizer"].split(":")
            named = next(i for i, part in enumerate(parts) if "=" in part)
            fields["optimizer"] = ":".join(parts[:named])
            fields["params"] = optimizers.parse_params(parts[named:])
        return cls.of(fields, from_text=True)

    @classmethod
    def of(cls, given: Thread | dict[str, Any], from_text: bool = False) -> Thread:
        """A thread from a Thread or a dict of its fields, checked."""
        if isinstance(given, Thread):
            return given
        if not isinstance(given, dict):
            raise BadInput(f"A thread is a dict of its fields or an evolver.session.Thread; got a "
                           f"{type(given).__name__}. {THREAD_HELP}")
        kinds = {**annotations(cls), "generator": Any, "optimizer": Any}
        thread = cls(**typed_options(given, kinds, "A session's thread", THREAD_HELP, from_text=from_text,
                                     max_int=float("inf")))
        if thread.channel is not None and thread.channel < 0:
            raise BadInput(f"A thread's channel counts from 0; got {thread.channel}. {THREAD_HELP}")
        return thread

    def config(self, run: RunConfig, neuron: Any) -> RunConfig:
        """The thread's own run options: the session's, with this thread's, following `neuron`."""
        changed: dict[str, Any] = {"neuron": neuron}
        if self.generator is not None:
            changed.update(generator=self.generator, generator_options={})  # the run's options are its generator's
        if self.optimizer is not None:
            changed.update(optimizer=self.optimizer, params={})
        changed.update({k: v for k in ("generator_weights", "params", "seed", "generations")
                        if (v := getattr(self, k)) is not None})
        return dataclasses.replace(run, **changed)

    def request(self) -> dict[str, Any]:
        """As session.json records it: fields given, objects by their description."""
        return {f.name: {"object": describe(v)} if f.name in PARTS and not isinstance(v, str) else copy.deepcopy(v)
                for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


class SessionRecords:
    """A session's own records: the blocks' random order (its stream and `blocks.csv`), and the commit of every
    thread's generation at once (`record`, called by the loop's writer)."""

    def __init__(self, path: Path, seed: int, state: dict[str, Any] | None = None):
        self.path = path
        self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(ORDER_STREAM + 1)[ORDER_STREAM])
        self.generation, self.blocks_bytes, self.trees = -1, len(BLOCKS_HEADER), {}
        if state is not None:
            self.rng.bit_generator.state = state["order_rng"]
            self.generation, self.blocks_bytes = int(state["generation"]), int(state["blocks_bytes"])
            self.trees = state["threads"]

    def shuffle(self, n: int) -> np.ndarray:
        """The order (a permutation of range(n)) the next block's images are shown in."""
        return self.rng.permutation(n)

    def snapshot(self) -> dict[str, Any]:
        """The order's stream as it is after this generation's block, for `record`."""
        return copy.deepcopy(self.rng.bit_generator.state)

    def record(self, concluded: list[tuple[Any, Records]], order: list[str], order_rng: dict[str, Any]) -> None:
        """Write every thread's generation, then the session's commit (each thread's state in it), then each
        thread's: a kill between the two is undone on resume from the session's."""
        for _, records in concluded:
            records.write()
        self.generation += 1
        rows = "".join(f"{self.generation},{k},{i.partition(':')[0] if ':' in i else ''},{i}\n"
                       for k, i in enumerate(order))
        fd = open_record(self.path / BLOCKS, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "wb") as f:
            f.write(rows.encode())
            f.flush()
            os.fsync(f.fileno())
        self.blocks_bytes += len(rows.encode())
        trees = {}
        for _, records in concluded:
            trees[records.directory.path.name] = records.directory.committed_tree(records.state)
        self.trees = {**self.trees, **trees}
        write_atomic(self.path / SESSION_STATE, state_bytes({
            "schema_version": SESSION_SCHEMA, "generation": self.generation, "order_rng": order_rng,
            "blocks_bytes": self.blocks_bytes, "threads": self.trees}))
        for _, records in concluded:
            records.commit(trees[records.directory.path.name])
        release_freed_memory()

    def finish(self) -> None:
        """The session's page: every thread's trajectory overlaid (trajectory.html)."""
        from evolver.plots import write_trajectory  # plotly only once the session is over

        write_trajectory([self.path], self.path / "trajectory.html", scripts=self.path)


def start(config: RunConfig, threads: Sequence[Thread | dict], path: Path, progress: bool, command: list[str] | None,
          on_generation, stop_when, batch: int | None) -> Loop:
    """A new session's loop, its folder and the threads' run folders made."""
    threads = [Thread.of(t) for t in threads]
    if len(threads) < 1:
        raise BadInput(f"A session needs at least one thread. {THREAD_HELP}")
    _check_empty(path)
    neuron = make_neuron(config)
    parts = _threads(config, threads, neuron)  # every thread checked before the folder is made
    references = _references(config, neuron, parts)
    path.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(path).acquire("session's folder")
    try:
        _check_empty(path)
        _write_session(path, config, threads, command)
        write_atomic(path / BLOCKS, BLOCKS_HEADER)
        tracks = [make_track(thread_config, own, generator, path / f"thread{k}", command,
                             _reference_of(references, column), column, lock, str(k))
                  for k, (thread_config, own, generator, column) in enumerate(parts)]
        return _loop(neuron, tracks, batch, on_generation, stop_when, progress, SessionRecords(path, config.seed))
    except BaseException:
        lock.release()
        raise


def _check_empty(path: Path) -> None:
    check_out_folder(path)
    if path.is_dir() and any(p.name != FolderLock.NAME for p in path.iterdir()):
        raise BadInput(f"The output folder {path} is not empty. Give a new --out folder, or continue the session "
                       f"there with `evolver run --resume {path}`.")


def resume(path: Path, progress: bool, on_generation, stop_when, force: Sequence[str],
           requested: dict[str, Any], threads: Sequence[Thread | dict] | None = None) -> Loop:
    """A session's loop continued from its last committed generation (every thread's, restored from the
    session's commit where a kill came between the two)."""
    lock = FolderLock(path).acquire("session's folder")
    try:
        recorded = session_record(path)
        state = _session_state(path)
        threads = _recorded_threads(path, recorded["threads"], threads)
        done = state["generation"] + 1 if state else 0
        config = resumed_config(recorded["run"], path, requested, done)
        neuron = make_neuron(config)
        parts = _threads(config, threads, neuron)
        references = _references(config, neuron, parts)
        _cut_blocks(path, state["blocks_bytes"] if state else len(BLOCKS_HEADER))
        tracks = []
        for k, (thread_config, own, generator, column) in enumerate(parts):
            folder = path / f"thread{k}"
            reference = _reference_of(references, column)
            if not (folder / "config.json").is_file():  # the kill came while the threads' folders were made
                tracks.append(make_track(thread_config, own, generator, folder, None, reference, column, lock, str(k)))
                continue
            directory = RunDirectory.open(folder)
            directory.lock(held=lock)
            tree = (state or {}).get("threads", {}).get(folder.name)
            if tree is not None and finished_generations(directory) != tree["generation"] + 1:
                directory.restore(tree)
            tracks.append(resumed_track(directory, thread_config, own, generator, reference, force, column, str(k)))
        return _loop(neuron, tracks, None, on_generation, stop_when, progress, SessionRecords(path, config.seed, state))
    except BaseException:
        lock.release()
        raise


def _loop(neuron, tracks, batch, on_generation, stop_when, progress, session: SessionRecords) -> Loop:
    channels = hasattr(neuron, "respond_channels") or neuron.outputs > 1
    return Loop(neuron, None, tracks, batch, on_generation, stop_when, progress, session=session, channels=channels)


def _threads(config: RunConfig, threads: list[Thread], neuron) -> list[tuple[RunConfig, Any, Any, Any]]:
    """Each thread's (run options, own neuron, generator, what it reads of the session neuron's responses);
    threads asking for the same generator share it."""
    made: dict[str, Any] = {}
    parts = []
    for k, thread in enumerate(threads):
        part, own, column = _follow(config, neuron, thread.channel)
        thread_config = thread.config(config, part)
        key = json.dumps([thread_config.generator, thread_config.generator_weights, thread_config.generator_options],
                         sort_keys=True, default=repr) if isinstance(thread_config.generator, str) else None
        generator = made.get(key) if key else None
        if generator is None:
            generator = make_generator(thread_config)
            if key:
                made[key] = generator
        optimizer = thread_config.optimizer
        if not isinstance(optimizer, str) and any(optimizer is made_config.optimizer for made_config, *_ in parts):
            raise BadInput(f"Thread {k} would share an optimizer object with another thread: each thread evolves "
                           "its own codes, so give each its own optimizer (a name, or an object of its own).")
        parts.append((thread_config, own, generator, column))
    return parts


def _follow(config: RunConfig, neuron, channel: int | None) -> tuple[Any, Any, Any]:
    """What a thread following `channel` of the session's neuron records as its neuron, its own neuron, and what
    it reads of the responses (Track's column)."""
    if hasattr(neuron, "respond_channels"):  # a rig: every channel comes back
        if channel is None:
            return config.neuron, neuron, neuron.channels
        if config.minimize:
            raise BadInput("--minimize goes with threads that follow the rig's own channel selection, not channel=.")
        view = neuron.channel(channel)
        return (view.spec if isinstance(config.neuron, str) else view), view, view.channels
    units = unit_neurons(config, neuron)
    if units is not None:
        if channel is None or channel >= len(units):
            raise BadInput(f"The neuron {redact(neuron.spec)} is a set of {len(units)} units: give each thread the one "
                           f"it follows, channel=K with K from 0 to {len(units) - 1} (the unit's position in the set).")
        number, part, unit = units[channel]
        return part, unit, Column(channel)
    one_response(neuron, config)
    if channel not in (None, 0):
        raise BadInput(f"The neuron {redact(neuron.spec)} gives one response per image, so a thread's channel can only "
                       f"be 0 (got {channel}); channels are a rig's array or a unit set's units.")
    return config.neuron, neuron, 0


def _references(config: RunConfig, neuron, parts) -> tuple[np.ndarray, torch.Tensor, list[str]] | None:
    """The reference images, at the largest of the threads' image sizes, with every column of the neuron's
    noise-free responses (n, columns); None without references."""
    if not config.reference:
        return None
    size = max(generator.image_size for _, _, generator, _ in parts)
    images, names = load_reference(config.reference, size)
    respond = getattr(neuron, "respond_channels", neuron.respond)
    answers = [np.asarray(respond(images[i:i + 100], [f"ref{k}" for k in range(i, min(i + 100, len(images)))]),
                          dtype=np.float64) for i in range(0, len(images), 100)]
    width = max(a.reshape(len(a), -1).shape[1] for a in answers)
    responses = np.full((len(images), width), np.nan)
    start = 0
    for a in answers:
        a = a.reshape(len(a), -1)
        responses[start:start + len(a), :a.shape[1]] = a
        start += len(a)
    return responses, images, names


def _reference_of(references, column) -> tuple | None:
    if references is None:
        return None
    read = column if callable(column) else Column(column)
    return read(references[0]), references[1], references[2]


def _write_session(path: Path, config: RunConfig, threads: list[Thread], command: list[str] | None) -> None:
    record = {"run": config.request(), "threads": [t.request() for t in threads], "command": command or sys.argv,
              "created": datetime.datetime.now().isoformat(timespec="seconds")}
    write_atomic(path / SESSION_FILE, (redact(json.dumps(record, indent=2)) + "\n").encode())


def _recorded_threads(path: Path, recorded: list[dict], given: Sequence[Thread | dict] | None) -> list[Thread]:
    """The threads as recorded, or as given again (where a thread's part was a Python object)."""
    if given is None:
        objects = [f"thread {k}'s {name}" for k, t in enumerate(recorded) for name, v in t.items()
                   if isinstance(v, dict) and "object" in v]
        if objects:
            raise BadInput(f"--resume {path}: {', '.join(objects)} was a Python object; give the threads again: "
                           "evolver.resume(path, threads=[...]).")
        return [Thread.of(t) for t in recorded]
    threads = [Thread.of(t) for t in given]
    if json.loads(redact(json.dumps([t.request() for t in threads]))) != recorded:
        raise BadInput(f"--resume {path}: the threads given differ from those {path / SESSION_FILE} records "
                       f"({recorded}); a session continues with the threads it began with.")
    return threads


def _session_state(path: Path) -> dict[str, Any] | None:
    """The session's last commit, or None before its first generation ended."""
    if not (path / SESSION_STATE).is_file():
        return None
    state = read_state(path / SESSION_STATE)
    if not isinstance(state, dict) or state.get("schema_version") != SESSION_SCHEMA or \
            not {"generation", "order_rng", "blocks_bytes", "threads"} <= set(state):
        raise BadInput(f"{path / SESSION_STATE} does not hold a session's commit of schema {SESSION_SCHEMA} (written "
                       "by another evolver, or damaged), so the session cannot continue from it. Its threads' folders "
                       "are readable (evolver.open_session).")
    return state


def _cut_blocks(path: Path, size: int) -> None:
    """blocks.csv back to its committed length."""
    fd = open_record(path / BLOCKS, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size < size:
            raise BadInput(f"{path / BLOCKS} is shorter than the session's commit recorded ({size} bytes): cut or "
                           "edited? Restore it from a backup; the threads' folders are readable (evolver.open_run).")
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
