"""Runs: a RunConfig (specs or objects) built into a `Loop` and recorded in a run folder; resume."""
from __future__ import annotations

import dataclasses
import datetime
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import generators
import neurons
from evolver import optimizers
from evolver.config import PARTS, RunConfig, check_unchanged, conditions, describe
from evolver.loop import Loop
from evolver.records import UNIT_FOLDER, RunDirectory, check_out_folder
from evolver.reference import load_reference
from evolver.retest import Retest
from evolver.track import GenerationRecord, RunResult, Track
from evolver_common import BadInput, FolderLock, write_atomic
from evolver_common.secrets import redact
from neurons.noise import Noise

SET_FILE = "unit-set.json"  # in a unit set's folder: the set's neuron, so that the set resumes as one

# Independent random streams spawned from the run's seed, by purpose.
OPTIMIZER_STREAM, NOISE_STREAM = 0, 1

Callbacks = Sequence[Callable[[GenerationRecord], Any]]


def _generator(config: RunConfig) -> generators.Generator:
    if isinstance(config.generator, str):
        return generators.create(config.generator, weights=config.generator_weights, device=config.device,
                                 precision=config.precision, **config.generator_options)
    if not isinstance(config.generator, generators.Generator):
        raise BadInput(f"A generator is a name (`evolver generators`) or a generators.Generator; got a "
                       f"{type(config.generator).__name__}.")
    return config.generator


def _neuron(config: RunConfig) -> neurons.Neuron:
    if isinstance(config.neuron, str):
        objective = f"-({config.neuron})" if config.minimize else config.neuron
        neuron = neurons.create(objective, weights=config.weights, device=config.device, precision=config.precision)
    else:
        neuron = neurons.as_neuron(config.neuron)
        neuron = neurons.Negative(neuron) if config.minimize else neuron
    if config.compile:
        neuron.compile()
    return neuron


def _optimizer(config: RunConfig, generator, neuron) -> tuple[optimizers.Optimizer, np.random.Generator]:
    """The run's optimizer, and the random stream of its noise (both from the run's seed)."""
    streams = np.random.SeedSequence(config.seed).spawn(NOISE_STREAM + 1)
    noise_rng = np.random.default_rng(streams[NOISE_STREAM])
    if not isinstance(config.optimizer, str):
        if config.params:
            raise BadInput("Optimizer parameters go to an optimizer named by a string; an optimizer object has "
                           "its own.")
        if getattr(config.optimizer, "code_dim", generator.code_dim) != generator.code_dim:
            raise BadInput(f"The optimizer object works on {config.optimizer.code_dim}-d codes and the generator's "
                           f"are {generator.code_dim}-d.")
        return config.optimizer, noise_rng
    kind = optimizers.get(config.optimizer)
    hints = {"objective": lambda codes: neuron.differentiable(generator.differentiable(codes))} \
        if kind.needs_gradient else {}
    if kind.uses_choice:
        hints["choice"] = getattr(generator, "choice", None)  # a user's generator object may not declare one
    optimizer = optimizers.create(config.optimizer, code_dim=generator.code_dim, sample=generator.sample,
                                  rng=np.random.default_rng(streams[OPTIMIZER_STREAM]), **hints, **config.params)
    return optimizer, noise_rng


_MINIMIZE_SET = ("A unit set runs one evolution per unit, for each unit's highest response; --minimize works with "
                 "single units (or wrap the set: -(mean(...))).")


def _one_response(neuron, config: RunConfig) -> None:
    if neuron.outputs != 1 and config.minimize:
        raise BadInput(_MINIMIZE_SET)
    if neuron.outputs != 1:
        raise BadInput(f"The neuron '{neuron.spec}' gives {neuron.outputs} responses per image and an evolution "
                       "needs one: wrap it in mean(...), max(...), min(...) or onehot(SET, UNIT), e.g. "
                       "'mean(resnet50:layer4:unit0-63)'; a plain unit set such as resnet50:layer4:unit0-63 "
                       "evolves each unit on its own, all in one batch.")


def _track(config: RunConfig, neuron, generator, folder: Path | RunDirectory, command=None, reference=None,
           column: int = 0, lock: FolderLock | None = None) -> Track:
    """A run of `config` through `neuron` (its own) and `generator`: new in `folder` (a Path; held by `lock`,
    a unit set's, or its own), or resumed from its last committed generation (a RunDirectory)."""
    optimizer, noise_rng = _optimizer(config, generator, neuron)
    noise = Noise.parse(config.noise) if config.noise else None
    if isinstance(folder, RunDirectory):  # as it was resolved
        retest = Retest.resolve(folder.config()["resolved"]["retest"], True, config.generations, config.images)
        return Track(config, neuron, optimizer, noise, noise_rng, folder, folder.roll_back(), reference, column,
                     retest)
    retest = Retest.resolve(config.retest, bool(noise) or getattr(neuron, "noisy", False), config.generations,
                            config.images)
    track = Track(config, neuron, optimizer, noise, noise_rng, None, None, reference, column, retest)
    files = {} if reference is None else \
        {"reference.csv": pd.DataFrame({"image": reference[2], "score": reference[0]}).to_csv(index=False).encode()}
    track.directory = RunDirectory.create(folder, record(track, generator, command), track.features(), files, lock)
    return track


def _reference(config: RunConfig, neuron, generator):
    """(noise-free responses, images, names) of the run's reference images, or None."""
    if not config.reference:
        return None
    images, names = load_reference(config.reference, generator.image_size)
    n = len(images)
    responses = np.concatenate([neuron.respond(images[i:i + 100], [f"ref{k}" for k in range(i, min(i + 100, n))])
                                for i in range(0, n, 100)])
    return responses, images, names


def record(track: Track, generator, command: list[str] | None = None) -> dict[str, Any]:
    """config.json: the request, and everything it resolved to; `command` is the command line that asked
    for it (default: this process's)."""
    config, neuron = track.config, track.neuron
    name = config.generator if isinstance(config.generator, str) else describe(generator)["class"]
    now = conditions(neuron, generator)
    return {
        "run": config.request(),
        "resolved": {
            "neuron": {"spec": neuron.spec, "weights": now["weights"]},
            "generator": {"name": name, "weights": now["generator-weights"], "code_dim": generator.code_dim,
                          "image_size": generator.image_size},
            "optimizer": track.optimizer.describe(),
            "noise": str(track.noise) if track.noise else None,
            "retest": str(track.retest) if track.retest else None,
            "reference": {"images": len(track.reference), "best": float(np.nanmax(track.reference))}
            if track.reference is not None else None,
            "device": now["device"],
            "precision": now["precision"],
            "precision_check": getattr(getattr(neuron, "reader", None), "precision_check", None),
        },
        "versions": now["versions"],
        "command": command or sys.argv,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


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
        **options: Any) -> RunResult | list[RunResult]:
    """Evolve codes for a neuron and record the run under `out` (default runs/<time>-<name>).

    Give a RunConfig, or its fields as keywords (`run(neuron=my_neuron, generations=50, out="runs/a")`);
    `on_generation` callables see each generation's record, `stop_when` ends the run when it says True;
    `command` (the command line that asked for the run) goes to config.json (default: this process's).

    A unit set (`resnet50:layer4:unit0-63`, or a unit set of `neurons.from_module`) is one independent
    evolution a unit, all shown in one batch (`batch` images at a time: 128 on a CPU, 512 on a GPU); each
    unit's run is an ordinary run folder, `out/unitN`, resumable on its own as a single-unit run. It
    returns a list of RunResults, one a unit in the set's order; a single neuron returns its RunResult."""
    loop, unit_set = _start(config, out, progress, command, on_generation, stop_when, batch, options)
    results = loop.run()
    return results if unit_set else results[0]


def start(config: RunConfig | None = None, out: str | Path | None = None, progress: bool = False,
          command: list[str] | None = None, on_generation: Callbacks = (),
          stop_when: Callable[[GenerationRecord], bool] | None = None, batch: int | None = None,
          **options: Any) -> Loop:
    """`run`'s loop, its folders created, to step by hand (one track a unit of a unit set):

        with evolver.start(neuron=..., generations=50, out="runs/a") as loop:
            while loop.active():
                records = loop.step()   # one GenerationRecord a run
    """
    return _start(config, out, progress, command, on_generation, stop_when, batch, options)[0]


def _start(config, out, progress, command, on_generation, stop_when, batch, options) -> tuple[Loop, bool]:
    """The loop of a run, and whether it is a unit set's (one track a unit)."""
    config = _config(config, options)
    generator, neuron = _generator(config), _neuron(config)
    path = Path(out or default_run_path(config))
    units = _unit_neurons(config, neuron)
    if units is None:
        _one_response(neuron, config)  # before the reference images are shown to it
    reference = _reference(config, neuron, generator)
    if units is None:
        return Loop(neuron, generator, [_track(config, neuron, generator, path, command, reference)], batch,
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
        tracks = [_track(dataclasses.replace(config, neuron=part), unit, generator, path / f"unit{number}", command,
                         (reference[0][:, column], *reference[1:]) if reference else None, column, lock)
                  for column, (number, part, unit) in enumerate(units)]
    except BaseException:
        lock.release()
        raise
    return Loop(neuron, generator, tracks, batch, on_generation, stop_when, progress), True


def _unit_neurons(config: RunConfig, neuron) -> list[tuple[int, Any, Any]] | None:
    """For a plain unit set, each unit as (its number, the part its run's config records, its neuron);
    None for any other neuron."""
    from neurons.cnn import CNNUnit
    from neurons.spec import UnitSpec

    inner = neuron.neuron if isinstance(neuron, neurons.Negative) else neuron
    if not isinstance(inner, CNNUnit) or not isinstance(inner.unit.unit, tuple):
        return None
    if config.minimize:
        raise BadInput(_MINIMIZE_SET)
    units = []
    for unit in inner.unit.units:
        single = UnitSpec(inner.unit.model, inner.unit.layer, unit, inner.unit.position)
        unit_neuron = CNNUnit(single, reader=inner.reader)
        units.append((unit, str(single) if isinstance(config.neuron, str) else unit_neuron, unit_neuron))
    return units


def _config(config: RunConfig | None, options: dict[str, Any]) -> RunConfig:
    if config is not None and options:
        raise BadInput(f"Give a RunConfig or its fields as keywords, not both (got {', '.join(options)}).")
    try:
        return config or RunConfig(**options)
    except TypeError as err:
        valid = ", ".join(f.name for f in dataclasses.fields(RunConfig))
        raise BadInput(f"{err}; a run's options are: {valid}.") from None


def resume(path: str | Path, progress: bool = True, on_generation: Callbacks = (),
           stop_when: Callable[[GenerationRecord], bool] | None = None, force: Sequence[str] = (),
           **requested: Any) -> RunResult | list[RunResult]:
    """Continue the run in `path` from its last finished generation; a unit set's folder (`out` of a unit
    set) continues as a set, all its units in one batch, and returns their RunResults in the set's order.

    `requested` holds options given again (RunConfig fields); they must match the run's configuration,
    except `generations`, which may extend the run. A run built from Python objects needs them again
    (`resume(path, neuron=same_neuron)`): the record holds their description, not the objects. What the
    run resolved to (device, precision, each part's weights, package versions) must be as recorded,
    unless `force` names it: a run continued under other conditions mixes two experiments.
    """
    if (Path(path) / SET_FILE).is_file() and not (Path(path) / "config.json").is_file():
        return _resume_set(Path(path), progress, on_generation, stop_when, force, requested)
    directory = RunDirectory.open(path)
    directory.lock()
    try:  # until the loop holds the folder, a refusal here lets it go
        config = _resumed_config(directory.config()["run"], directory.path, requested, _finished(directory))
        generator, neuron = _generator(config), _neuron(config)
        track = _resumed_track(directory, config, neuron, generator, _reference(config, neuron, generator), force)
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
        config = _resumed_config(recorded, path, requested, max(_finished(d) for d in folders))
        generator, neuron = _generator(config), _neuron(config)
        units = _unit_neurons(config, neuron)
        if units is None:
            raise BadInput(f"{path / SET_FILE} names {config.neuron!r}, which is not a unit set.")
        reference = _reference(config, neuron, generator)
        tracks, found = [], {d.path.name: d for d in folders}
        for column, (number, part, unit) in enumerate(units):
            unit_config = dataclasses.replace(config, neuron=part)
            unit_reference = (reference[0][:, column], *reference[1:]) if reference else None
            directory = found.get(f"unit{number}")
            if directory is None:
                tracks.append(_track(unit_config, unit, generator, path / f"unit{number}", None, unit_reference,
                                     column, lock))
                continue
            directory.lock(held=lock)
            tracks.append(_resumed_track(directory, unit_config, unit, generator, unit_reference, force, column))
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


def _finished(directory: RunDirectory) -> int:
    state = directory.state()
    return state.generation + 1 if state else 0


def _resumed_track(directory: RunDirectory, config: RunConfig, neuron, generator, reference, force: Sequence[str],
                   column: int = 0) -> Track:
    """The track of a recorded run, its conditions checked before anything is written, then its config.json
    updated with a changed --generations and what `force` accepted."""
    forced = check_unchanged(directory, conditions(neuron, generator), force)
    track = _track(config, neuron, generator, directory, reference=reference, column=column)
    recorded = directory.config()
    if forced or config.generations != recorded["run"]["generations"]:
        recorded["run"]["generations"] = config.generations
        if forced:
            recorded.setdefault("forced", []).append({"generation": track.gen, "changed": forced})
        directory.write_config(recorded)
    return track


def _resumed_config(recorded: dict[str, Any], where: Path, requested: dict[str, Any], done: int) -> RunConfig:
    """The recorded options (config.json's `run`) with those given again (a conflicting one refused); `done`
    is the generations the run has finished."""
    fields = dict(recorded)
    conflicts = []
    for name, value in requested.items():
        if value is None or name == "generations":
            continue
        was = fields.get(name)
        if name in PARTS and not isinstance(value, str):
            same = was == {"object": json.loads(json.dumps(describe(value)))} or was == getattr(value, "spec", None)
            fields[name] = value
        else:  # a spec given again with its secret matches the record that keeps the secret out
            same = value == was or isinstance(value, str) and redact(value) == was
            fields[name] = value if same else was
        if not same:
            conflicts.append(f"{name}={value!r} (the run has {was!r})")
    if conflicts:
        raise BadInput(
            f"--resume {where}: these options conflict with the run's config.json: {'; '.join(conflicts)}. "
            "Leave them out to continue the run as it was (only --generations may change), or start a new run."
        )
    if requested.get("generations") is not None:
        if 1 <= requested["generations"] < done:  # below 1: RunConfig says what is valid
            raise BadInput(f"--resume {where} --generations {requested['generations']}: the run has finished "
                           f"{done} generations already. Give more to continue it, or leave --generations out to "
                           "continue it as recorded.")
        fields["generations"] = requested["generations"]
    return RunConfig(**fields)


__all__ = ["RunConfig", "RunResult", "GenerationRecord", "Loop", "run", "start", "resume", "describe"]
