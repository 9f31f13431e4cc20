"""How a run's parts are made from its RunConfig (specs or objects) and recorded: its generator, neuron,
optimizer, reference images and tracks, new or resumed. `evolver.experiment` (runs and unit sets) and
`evolver.session` (threads) build their loops from these."""
from __future__ import annotations

import dataclasses
import datetime
import json
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
from evolver.records import RunDirectory
from evolver.reference import load_reference
from evolver.retest import Retest
from evolver.track import Track
from evolver_common import BadInput, FolderLock
from evolver_common.secrets import redact
from neurons.noise import Noise

# Independent random streams spawned from the run's seed, by purpose.
OPTIMIZER_STREAM, NOISE_STREAM = 0, 1


def make_generator(config: RunConfig) -> generators.Generator:
    if isinstance(config.generator, str):
        return generators.create(config.generator, weights=config.generator_weights, device=config.device,
                                 precision=config.precision, **config.generator_options)
    if not isinstance(config.generator, generators.Generator):
        raise BadInput(f"A generator is a name (`evolver generators`) or a generators.Generator; got a "
                       f"{type(config.generator).__name__}.")
    return config.generator


def make_neuron(config: RunConfig) -> neurons.Neuron:
    if isinstance(config.neuron, str):
        objective = f"-({config.neuron})" if config.minimize else config.neuron
        neuron = neurons.create(objective, weights=config.weights, device=config.device, precision=config.precision)
    else:
        neuron = neurons.as_neuron(config.neuron)
        neuron = neurons.Negative(neuron) if config.minimize else neuron
    if config.compile:
        neuron.compile()
    return neuron


def make_optimizer(config: RunConfig, generator, neuron) -> tuple[optimizers.Optimizer, np.random.Generator]:
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
    hints = {"render": generator.differentiable, "respond": neuron.differentiable} if kind.needs_gradient else {}
    if kind.uses_choice:
        hints["choice"] = getattr(generator, "choice", None)  # a user's generator object may not declare one
    if kind.uses_budget:
        hints.update(budget=config.images, generations=config.generations)
    optimizer = optimizers.create(config.optimizer, code_dim=generator.code_dim, sample=generator.sample,
                                  rng=np.random.default_rng(streams[OPTIMIZER_STREAM]), **hints, **config.params)
    return optimizer, noise_rng


MINIMIZE_SET = ("A unit set runs one evolution per unit, for each unit's highest response; --minimize works with "
                 "single units (or wrap the set: -(mean(...))).")


def one_response(neuron, config: RunConfig) -> None:
    if neuron.outputs != 1 and config.minimize:
        raise BadInput(MINIMIZE_SET)
    if neuron.outputs != 1:
        raise BadInput(f"The neuron '{neuron.spec}' gives {neuron.outputs} responses per image and an evolution "
                       "needs one: wrap it in mean(...), max(...), min(...) or onehot(SET, UNIT), e.g. "
                       "'mean(resnet50:layer4:unit0-63)'; a plain unit set such as resnet50:layer4:unit0-63 "
                       "evolves each unit on its own, all in one batch.")


def make_track(config: RunConfig, neuron, generator, folder: Path | RunDirectory, command=None, reference=None,
               column: int | Callable[[np.ndarray], np.ndarray] | None = None, lock: FolderLock | None = None,
               tag: str | None = None) -> Track:
    """A run of `config` through `neuron` (its own) and `generator`: new in `folder` (a Path; held by `lock`,
    a unit set's or a session's, or its own), or resumed from its last committed generation (a RunDirectory).
    `column`: what the run reads of the loop neuron's responses (Track), default the neuron's own channels (a
    rig's channel selection) or its one column; `tag`: its images' id prefix in a block shared by several runs."""
    if column is None:
        column = neuron.channels if hasattr(neuron, "respond_channels") else 0
    optimizer, noise_rng = make_optimizer(config, generator, neuron)
    noise = Noise.parse(config.noise) if config.noise else None
    if isinstance(folder, RunDirectory):  # as it was resolved
        retest = Retest.resolve(folder.config()["resolved"]["retest"], True, config.generations, config.images)
        track = Track(config, neuron, optimizer, noise, noise_rng, folder, folder.roll_back(), reference, column,
                      retest, tag)
        track.generator = generator
        return track
    retest = Retest.resolve(config.retest, bool(noise) or getattr(neuron, "noisy", False), config.generations,
                            config.images)
    track = Track(config, neuron, optimizer, noise, noise_rng, None, None, reference, column, retest, tag)
    track.generator = generator
    files = {} if reference is None else \
        {"reference.csv": pd.DataFrame({"image": reference[2], "score": reference[0]}).to_csv(index=False).encode()}
    track.directory = RunDirectory.create(folder, record(track, generator, command), track.features(), files, lock)
    return track


def reference_responses(config: RunConfig, neuron, generator):
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


def unit_neurons(config: RunConfig, neuron) -> list[tuple[int, Any, Any]] | None:
    """For a plain unit set, each unit as (its number, the part its run's config records, its neuron);
    None for any other neuron."""
    from neurons.cnn import CNNUnit
    from neurons.spec import UnitSpec

    inner = neuron.neuron if isinstance(neuron, neurons.Negative) else neuron
    if not isinstance(inner, CNNUnit) or not isinstance(inner.unit.unit, tuple):
        return None
    if config.minimize:
        raise BadInput(MINIMIZE_SET)
    units = []
    for unit in inner.unit.units:
        single = UnitSpec(inner.unit.model, inner.unit.layer, unit, inner.unit.position)
        unit_neuron = CNNUnit(single, reader=inner.reader)
        units.append((unit, str(single) if isinstance(config.neuron, str) else unit_neuron, unit_neuron))
    return units


def as_config(config: RunConfig | None, options: dict[str, Any]) -> RunConfig:
    if config is not None and options:
        raise BadInput(f"Give a RunConfig or its fields as keywords, not both (got {', '.join(options)}).")
    try:
        return config or RunConfig(**options)
    except TypeError as err:
        valid = ", ".join(f.name for f in dataclasses.fields(RunConfig))
        raise BadInput(f"{err}; a run's options are: {valid}.") from None


def finished_generations(directory: RunDirectory) -> int:
    state = directory.state()
    return state.generation + 1 if state else 0


def resumed_track(directory: RunDirectory, config: RunConfig, neuron, generator, reference, force: Sequence[str],
                  column: int | Callable[[np.ndarray], np.ndarray] | None = None, tag: str | None = None) -> Track:
    """The track of a recorded run, its conditions checked before anything is written, then its config.json
    updated with a changed --generations and what `force` accepted."""
    forced = check_unchanged(directory, conditions(neuron, generator), force)
    track = make_track(config, neuron, generator, directory, reference=reference, column=column, tag=tag)
    recorded = directory.config()
    if forced or config.generations != recorded["run"]["generations"]:
        recorded["run"]["generations"] = config.generations
        if forced:
            recorded.setdefault("forced", []).append({"generation": track.gen, "changed": forced})
        directory.write_config(recorded)
    return track


def resumed_config(recorded: dict[str, Any], where: Path, requested: dict[str, Any], done: int) -> RunConfig:
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
