"""Runs: a RunConfig (specs or objects) built into a `Loop` and recorded in a run folder; resume."""
from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evolver.build import (as_config, finished_generations, make_generator, make_neuron, make_track,
                           one_response, reference_responses, resumed_config, resumed_track, unit_neurons)
from evolver import session
from evolver.config import PARTS, RunConfig, describe
from evolver.loop import Loop
from evolver.records import THREAD_FOLDER, UNIT_FOLDER, RunDirectory, check_out_folder, is_session
from evolver.track import GenerationRecord, RunResult
from evolver_common import BadInput, FolderLock, write_atomic
from evolver_common.secrets import redact

SET_FILE = "unit-set.json"  # in a unit set's folder: the set's neuron, so that the set resumes as one

Callbacks = Sequence[Callable[[GenerationRecord], Any]]


def default_run_path(config: RunConfig, root: Path = Path("runs")) -> Path:
    """runs/<YYYYmmdd-HHMMSS>-<neuron and optimizer>, unique."""
    name = {p: v if isinstance(v, str) else getattr(v, "spec", getattr(v, "name", type(v).__name__))
            for p in PARTS for v in [getattr(config, p)]}
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", redact(f"{name['neuron']}-{name['optimizer']}")).strip("-")[:80]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{stamp}-{slug}", 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{slug}-{n}"
    return path


def run(config: RunConfig | None = None, out: str | Path | None = None, progress: bool = True,
        command: list[str] | None = None, on_generation: Callbacks = (),
        stop_when: Callable[[GenerationRecord], bool] | None = None, batch: int | None = None,
        threads: Sequence[session.Thread | dict[str, Any]] | None = None, **options: Any) -> RunResult | list[RunResult]:
    """Evolve codes for a neuron and record the run under `out` (default runs/<time>-<name>).

    Give a RunConfig, or its fields as keywords (`run(neuron=my_neuron, generations=50, out="runs/a")`);
    `on_generation` callables see each generation's record, `stop_when` ends the run when it says True;
    `command` (the command line that asked for the run) goes to config.json (default: this process's).

    A unit set (`resnet50:layer4:unit0-63`, or a unit set of `neurons.from_module`) is one independent
    evolution a unit, all shown in one batch (`batch` images at a time: 128 on a CPU, 512 on a GPU); each
    unit's run is an ordinary run folder, `out/unitN`, resumable on its own as a single-unit run. It
    returns a list of RunResults, one a unit in the set's order; a single neuron returns its RunResult.

    `threads` makes it a session (evolver.session): several evolutions on the neuron at once, each a dict
    (or `session.Thread`) of what differs from these options (generator, generator_weights, optimizer, params,
    seed, channel, generations), their images shown in one block a generation in a random order; each thread's
    run is `out/threadK`, and it returns their RunResults in order."""
    loop, several = _start(config, out, progress, command, on_generation, stop_when, batch, threads, options)
    results = loop.run()
    return results if several else results[0]


def start(config: RunConfig | None = None, out: str | Path | None = None, progress: bool = False,
          command: list[str] | None = None, on_generation: Callbacks = (),
          stop_when: Callable[[GenerationRecord], bool] | None = None, batch: int | None = None,
          threads: Sequence[session.Thread | dict[str, Any]] | None = None, **options: Any) -> Loop:
    """`run`'s loop, its folders created, to step by hand (one track a unit of a unit set, or a thread):

        with evolver.start(neuron=..., generations=50, out="runs/a") as loop:
            while loop.active():
                records = loop.step()   # one GenerationRecord a run
    """
    return _start(config, out, progress, command, on_generation, stop_when, batch, threads, options)[0]


def _start(config, out, progress, command, on_generation, stop_when, batch, threads, options) -> tuple[Loop, bool]:
    """The loop of a run, and whether it has several tracks (a unit set's or a session's)."""
    config = as_config(config, options)
    path = Path(out or default_run_path(config))
    if threads is not None:
        return session.start(config, threads, path, progress, command, on_generation, stop_when, batch), True
    generator, neuron = make_generator(config), make_neuron(config)
    units = unit_neurons(config, neuron)
    if units is None:
        one_response(neuron, config)  # before the reference images are shown to it
    reference = reference_responses(config, neuron, generator)
    if units is None:
        return Loop(neuron, generator, [make_track(config, neuron, generator, path, command, reference)], batch,
                    on_generation, stop_when, progress), False
    # 64 stimnet units × 40 codes on 2 CPU cores: 1,010 images/s in chunks of 128, 700 in chunks of 512
    # (a chunk's activations stay in cache); a GPU wants the larger batches
    batch = batch or (512 if neuron.device.type == "cuda" else 128)
    check_out_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(path).acquire("unit set's folder")  # one for the set: a unit's run resumed alone waits
    try:
        if (path / SET_FILE).exists():
            raise BadInput(f"The output folder {path} holds a unit set already. Give a new --out folder, or "
                           f"continue that set with `evolver run --resume {path}`.")
        named = config.neuron if isinstance(config.neuron, str) else {"object": describe(config.neuron)}
        write_atomic(path / SET_FILE, (redact(json.dumps({"neuron": named}, indent=1)) + "\n").encode())
        tracks = [make_track(dataclasses.replace(config, neuron=part), unit, generator, path / f"unit{number}", command,
                             (reference[0][:, column], *reference[1:]) if reference else None, column, lock,
                             str(column))
                  for column, (number, part, unit) in enumerate(units)]
    except BaseException:
        lock.release()
        raise
    return Loop(neuron, generator, tracks, batch, on_generation, stop_when, progress), True


def resume(path: str | Path, progress: bool = True, on_generation: Callbacks = (),
           stop_when: Callable[[GenerationRecord], bool] | None = None, force: Sequence[str] = (),
           threads: Sequence[session.Thread | dict[str, Any]] | None = None,
           **requested: Any) -> RunResult | list[RunResult]:
    """Continue the run in `path` from its last finished generation; a unit set's folder (`out` of a unit
    set) continues as a set, all its units in one batch, and returns their RunResults in the set's order; a
    session's folder continues as a session (`threads` given again only where a thread's part was an object).

    `requested` holds options given again (RunConfig fields); they must match the run's configuration,
    except `generations`, which may extend the run. A run built from Python objects needs them again
    (`resume(path, neuron=same_neuron)`): the record holds their description, not the objects. What the
    run resolved to (device, precision, each part's weights, package versions) must be as recorded,
    unless `force` names it: a run continued under other conditions mixes two experiments.
    """
    if (Path(path) / SET_FILE).is_file() and not (Path(path) / "config.json").is_file():
        return _resume_set(Path(path), progress, on_generation, stop_when, force, requested)
    if is_session(path):
        return session.resume(Path(path), progress, on_generation, stop_when, force, requested, threads).run()
    if is_session(Path(path).parent) and THREAD_FOLDER.fullmatch(Path(path).name):
        raise BadInput(f"{path} is a thread of the session {Path(path).parent}: its threads continue together, "
                       f"with `evolver run --resume {Path(path).parent}`.")
    directory = RunDirectory.open(path)
    directory.lock()
    try:  # until the loop holds the folder, a refusal here lets it go
        config = resumed_config(directory.config()["run"], directory.path, requested, finished_generations(directory))
        generator, neuron = make_generator(config), make_neuron(config)
        track = resumed_track(directory, config, neuron, generator, reference_responses(config, neuron, generator), force)
        loop = Loop(neuron, generator, [track], None, on_generation, stop_when, progress)
    except BaseException:
        directory.release()
        raise
    return loop.run()[0]


def _resume_set(path: Path, progress, on_generation, stop_when, force, requested) -> list[RunResult]:
    """A unit set's runs continued together: each unit's folder resumed, one its kill left unmade started."""
    lock = FolderLock(path).acquire("unit set's folder")
    try:
        folders = [RunDirectory.open(p) for p in sorted(path.iterdir()) if UNIT_FOLDER.fullmatch(p.name)
                   and (p / "config.json").is_file()]
        if not folders:
            raise BadInput(f"The unit set's folder {path} holds no unit's run folder (unitN/ with its config.json): "
                           "nothing to resume. Start the set again with `evolver run --out`.")
        recorded = {**folders[0].config()["run"], "neuron": _set_record(path)}
        config = resumed_config(recorded, path, requested, max(finished_generations(d) for d in folders))
        generator, neuron = make_generator(config), make_neuron(config)
        units = unit_neurons(config, neuron)
        if units is None:
            raise BadInput(f"{path / SET_FILE} names {config.neuron!r}, which is not a unit set.")
        reference = reference_responses(config, neuron, generator)
        tracks, found = [], {d.path.name: d for d in folders}
        for column, (number, part, unit) in enumerate(units):
            unit_config = dataclasses.replace(config, neuron=part)
            unit_reference = (reference[0][:, column], *reference[1:]) if reference else None
            directory = found.get(f"unit{number}")
            if directory is None:
                tracks.append(make_track(unit_config, unit, generator, path / f"unit{number}", None, unit_reference,
                                         column, lock, str(column)))
                continue
            directory.lock(held=lock)
            tracks.append(resumed_track(directory, unit_config, unit, generator, unit_reference, force, column,
                                        str(column)))
        batch = 512 if neuron.device.type == "cuda" else 128
        loop = Loop(neuron, generator, tracks, batch, on_generation, stop_when, progress)
    except BaseException:
        lock.release()
        raise
    return loop.run()


def _set_record(path: Path) -> str | dict:
    try:
        return json.loads((path / SET_FILE).read_text(encoding="utf-8"))["neuron"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path / SET_FILE} is damaged ({type(err).__name__}: {err}); each unit's folder still "
                       f"resumes on its own: `evolver run --resume {path}/unitN`.") from None


__all__ = ["RunConfig", "RunResult", "GenerationRecord", "Loop", "run", "start", "resume", "describe"]
