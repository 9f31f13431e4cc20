"""Runs: a RunConfig (specs or objects) built into a `Loop` and recorded in a run folder; resume."""
from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib.metadata
import json
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import generators
import neurons
from evolver import optimizers
from evolver.loop import MISSING, GenerationRecord, Loop, RunResult, Track, generation_limit
from evolver.records import RunDirectory
from evolver.reference import load_reference
from evolver.retest import Retest
from evolver_common import BadInput
from neurons.noise import Noise
from neurons.recorded import redact

# Independent random streams spawned from the run's seed, by purpose.
OPTIMIZER_STREAM, NOISE_STREAM = 0, 1

# The bundled world: stimnet's "star" unit, whose preferred stimulus is known; its evolved images
# drive it 3-4x above the best of 10,000 corpus images (CMA-ES, 100 generations); stimnet calls all of
# them stars, an independent classifier most (docs/bundled-world.md: the cmaes row of the ground-truth
# table; the card's "ground_truth" now holds the GA's evolutions).
DEFAULT_NEURON = "stimnet:classifier:unit7"

# Chosen by `evolver bench` (docs/optimizers.md, "Choosing the default optimizer"): CMA-ES had the best mean
# normalised score on the bundled DCGAN, noise-free and under noise; its uncertainty handling (uh-cmaes) keeps
# that noise-free (it is CMA-ES once the neuron proves noise-free) and holds up under a recorded neuron's noise.
DEFAULT_OPTIMIZER = "uh-cmaes"

VERSIONED_PACKAGES = ("evolver", "torch", "torchvision", "timm", "numpy", "deap", "pandas", "plotly")
PARTS = ("neuron", "generator", "optimizer")
Callbacks = Sequence[Callable[[GenerationRecord], Any]]


@dataclass
class RunConfig:
    """What a user asks for. `neuron`, `generator` and `optimizer` are each a spec string or an object
    (a Neuron or any callable of images; a Generator; an Optimizer built for the generator's codes).
    `params` are a named optimizer's (see `evolver.optimizers`); `generator_options` go to a named
    generator (e.g. truncation, class_index)."""

    neuron: Any = DEFAULT_NEURON
    minimize: bool = False  # evolve for the lowest response: the objective is -(neuron)
    weights: str = "pretrained"
    generator: Any = "dcgan"
    generator_weights: str = "pretrained"
    generator_options: dict[str, Any] = field(default_factory=dict)
    optimizer: Any = None  # None: the generator's own (generators.default_optimizer), else DEFAULT_OPTIMIZER
    params: dict[str, Any] = field(default_factory=dict)
    generations: int = 200
    seed: int = 0
    noise: str | None = None
    reference: str | None = None
    images: int | None = None  # stop once this many images were shown, within `generations`
    missing: str = "represent"  # responses that did not come back: 'represent' the images, or 'skip' them
    interleave: int = 0  # reference images shown in every generation's block (XDream), needs `reference`
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False  # torch.compile the neuron's networks: faster after a compile at the start
    retest: str = "auto"  # name the best image by re-showing a shortlist at the end (evolver.retest): auto, none, KxR

    def __post_init__(self):
        self._check_types()
        if self.optimizer is None:  # recorded as resolved, so that a resume runs the same one
            named = generators.default_optimizer(self.generator) if isinstance(self.generator, str) else None
            self.optimizer = named or DEFAULT_OPTIMIZER
        if isinstance(self.optimizer, str):
            optimizers.REGISTRY.get(self.optimizer)  # an unknown name is refused here, before any run starts
        if self.generations < 1:
            raise BadInput(f"--generations must be at least 1, got {self.generations}.")
        generation_limit(self.generations)  # a malformed EVOLVER_MAX_GENERATIONS fails before the run's folder
        if self.images is not None and self.images < 1:
            raise BadInput(f"--images must be at least 1, got {self.images}.")
        if self.missing not in MISSING:
            raise BadInput(f"--missing {self.missing}: valid choices are {', '.join(MISSING)}.")
        if self.interleave and not self.reference:
            raise BadInput("--interleave shows reference images in every block; give them with --reference.")
        if self.interleave < 0:
            raise BadInput(f"--interleave must not be negative, got {self.interleave}.")
        Retest.resolve(self.retest, True, self.generations, self.images)  # a malformed one fails before the run
        for part in PARTS:
            if isinstance(getattr(self, part), dict):
                raise BadInput(f"This run's {part} was a Python object ({getattr(self, part)['object']}); "
                               f"give it again: evolver.resume(path, {part}=...).")

    def _check_types(self) -> None:
        """Each option of its type (a sweep's TOML or a Python caller can give anything)."""
        wrong = []
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type
            if kind in ("int", "int | None") and not (isinstance(value, int) and not isinstance(value, bool)
                                                       or value is None and "None" in kind):
                wrong.append(f"{f.name}={value!r} (a whole number{' or nothing' if 'None' in kind else ''})")
            elif kind in ("str", "str | None") and not (isinstance(value, str) or value is None and "None" in kind):
                wrong.append(f"{f.name}={value!r} (text)")
            elif kind == "bool" and not isinstance(value, bool):
                wrong.append(f"{f.name}={value!r} (true or false)")
            elif kind.startswith("dict") and not isinstance(value, dict):
                wrong.append(f"{f.name}={value!r} (a table of name = value)")
        if wrong:
            raise BadInput(f"A run's options have the wrong types: {'; '.join(wrong)}.")

    def request(self) -> dict[str, Any]:
        """The config as config.json holds it: strings as given, each object as its `describe()`."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {name: {"object": describe(value)} if name in PARTS and not isinstance(value, str)
                else copy.deepcopy(value) for name, value in fields.items()}


def describe(part: Any) -> dict[str, Any]:
    """What a record says of an object given as a part of a run: its class and its own `describe()`."""
    if not hasattr(part, "describe") and callable(part):
        part = neurons.FunctionNeuron(part)
    kind = type(part)
    own = part.describe() if hasattr(part, "describe") else {}
    return {"class": f"{kind.__module__}.{kind.__qualname__}", **own}


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


def _one_response(neuron, config: RunConfig) -> None:
    if neuron.outputs != 1:
        raise BadInput(f"The neuron '{neuron.spec}' gives {neuron.outputs} responses per image (a set of units) and "
                       "an evolution needs one: wrap it in mean(...), max(...), min(...) or onehot(SET, UNIT), e.g. "
                       "'mean(resnet50:layer4:unit0-63)'; a plain unit set given to `evolver run` (or "
                       "evolver.run_units) evolves each unit on its own, all in one batch.")


def _track(config: RunConfig, neuron, generator, folder: Path | RunDirectory, command=None, reference=None,
           column: int = 0) -> Track:
    """A run of `config` through `neuron` (its own) and `generator`: new in `folder` (a Path), or resumed
    from its last committed generation (a RunDirectory)."""
    optimizer, noise_rng = _optimizer(config, generator, neuron)
    noise = Noise.parse(config.noise) if config.noise else None
    if isinstance(folder, RunDirectory):  # as it was resolved (runs made before the re-test have none)
        retest = Retest.resolve(folder.config()["resolved"].get("retest"), True, config.generations, config.images)
        return Track(config, neuron, optimizer, noise, noise_rng, folder, folder.roll_back(), reference, column,
                     retest)
    retest = Retest.resolve(config.retest, bool(noise) or getattr(neuron, "noisy", False), config.generations,
                            config.images)
    track = Track(config, neuron, optimizer, noise, noise_rng, None, None, reference, column, retest)
    track.directory = RunDirectory.create(folder, record(track, generator, command), track.columns())
    if reference is not None:
        table = pd.DataFrame({"image": reference[2], "score": reference[0]})
        track.directory.write_file("reference.csv", table.to_csv(index=False).encode())
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


def conditions(neuron, generator) -> dict[str, Any]:
    """What a run resolved to that a resume must find unchanged, by the name `resume(force=...)` takes."""
    return {"device": str(neuron.device), "precision": neuron.precision, "weights": neuron.weights,
            "generator-weights": generator.weights, "versions": {"python": platform.python_version(), **_versions()}}


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


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
        stop_when: Callable[[GenerationRecord], bool] | None = None, **options: Any) -> RunResult:
    """Evolve codes for a neuron and record the run under `out` (default runs/<time>-<name>).

    Give a RunConfig, or its fields as keywords (`run(neuron=my_neuron, generations=50, out="runs/a")`);
    `on_generation` callables see each generation's record, `stop_when` ends the run when it says True;
    `command` (the command line that asked for the run) goes to config.json (default: this process's)."""
    return start(config, out, progress, command, on_generation, stop_when, **options).run()[0]


def start(config: RunConfig | None = None, out: str | Path | None = None, progress: bool = False,
          command: list[str] | None = None, on_generation: Callbacks = (),
          stop_when: Callable[[GenerationRecord], bool] | None = None, **options: Any) -> Loop:
    """`run`'s loop, its folder created, to step by hand:

        with evolver.start(neuron=..., generations=50, out="runs/a") as loop:
            while loop.active():
                records = loop.step()   # one GenerationRecord a run
    """
    config = _config(config, options)
    generator, neuron = _generator(config), _neuron(config)
    _one_response(neuron, config)
    path = Path(out or default_run_path(config))
    track = _track(config, neuron, generator, path, command, reference=_reference(config, neuron, generator))
    return Loop(neuron, generator, [track], None, on_generation, stop_when, progress)


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
           **requested: Any) -> RunResult:
    """Continue the run in `path` from its last finished generation.

    `requested` holds options given again (RunConfig fields); they must match the run's configuration,
    except `generations`, which may extend the run. A run built from Python objects needs them again
    (`resume(path, neuron=same_neuron)`): the record holds their description, not the objects. What the
    run resolved to (device, precision, each part's weights, package versions) must be as recorded,
    unless `force` names it: a run continued under other conditions mixes two experiments.
    """
    directory = RunDirectory.open(path)
    directory.lock()
    try:  # until the loop holds the folder, a refusal here lets it go
        config = _resumed_config(directory, requested)
        generator, neuron = _generator(config), _neuron(config)
        forced = _check_unchanged(directory, conditions(neuron, generator), force)  # before anything is written
        reference = _reference(config, neuron, generator)
        track = _track(config, neuron, generator, directory, reference=reference)
        recorded = directory.config()
        if forced or config.generations != recorded["run"]["generations"]:  # written once all is checked
            recorded["run"]["generations"] = config.generations
            if forced:
                recorded.setdefault("forced", []).append({"generation": track.gen, "changed": forced})
            directory.write_config(recorded)
        loop = Loop(neuron, generator, [track], None, on_generation, stop_when, progress)
    except BaseException:
        directory.release()
        raise
    return loop.run()[0]


# Where config.json records each of `conditions`.
RESOLVED = {"device": ("resolved", "device"), "precision": ("resolved", "precision"),
            "weights": ("resolved", "neuron", "weights"), "generator-weights": ("resolved", "generator", "weights"),
            "versions": ("versions",)}


def _check_unchanged(directory: RunDirectory, now: dict[str, Any], force: Sequence[str]) -> list[str]:
    """What differs from the record and `force` accepts; BadInput for a difference it does not."""
    unknown = sorted(set(force) - set(RESOLVED))
    if unknown:
        raise BadInput(f"--force {unknown[0]}: it names what may differ from the record: {', '.join(RESOLVED)}.")
    recorded, now = directory.config(), json.loads(redact(json.dumps(now)))  # as config.json would hold it
    changed, forced = [], []
    for name, keys in RESOLVED.items():
        was, is_ = recorded, now[name]
        for key in keys:
            was = (was or {}).get(key)
        if was is not None and was != is_:
            (forced if name in force else changed).append(f"{name}: recorded {was!r}, now {is_!r}")
    if changed:
        raise BadInput(f"--resume {directory.path}: the run would continue under other conditions than it began "
                       f"({'; '.join(changed)}). Restore them, or accept the change with --force "
                       f"{' --force '.join(c.split(':')[0] for c in changed)} (it is then part of the record).")
    return forced


def _resumed_config(directory: RunDirectory, requested: dict[str, Any]) -> RunConfig:
    """The recorded config with the options given again (a conflicting one refused)."""
    recorded = directory.config()
    fields = dict(recorded["run"])
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
            f"--resume {directory.path}: these options conflict with the run's config.json: {'; '.join(conflicts)}. "
            "Leave them out to continue the run as it was (only --generations may change), or start a new run."
        )
    if requested.get("generations") is not None:
        fields["generations"] = requested["generations"]
    return RunConfig(**fields)


def run_units(config: RunConfig | None = None, out: str | Path | None = None, progress: bool = True,
              batch: int | None = None, command: list[str] | None = None, on_generation: Callbacks = (),
              stop_when: Callable[[GenerationRecord], bool] | None = None, **options: Any) -> list[RunResult]:
    """One independent evolution per unit of a unit set (`resnet50:layer4:unit0-63`, or a unit set of
    `neurons.from_module`), all in one batch.

    Every generation, each unit's optimizer proposes its population; the populations are rendered and
    shown together (`batch` images at a time: 128 on a CPU, 512 on a GPU) and each unit's run is told
    its own unit's responses to its own images. Each unit gets an ordinary run folder, `out/unitN`, with
    its own config (the single unit's spec), resumable on its own as a single-unit run.
    """
    from neurons.cnn import CNNUnit
    from neurons.spec import UnitSpec

    config = _config(config, options)
    if config.minimize:
        raise BadInput("A unit set runs one evolution per unit, for each unit's highest response; --minimize works "
                       "with single units (or wrap the set: -(mean(...))).")
    generator, shared = _generator(config), _neuron(config)
    if not isinstance(shared, CNNUnit) or not isinstance(shared.unit.unit, tuple):
        raise BadInput(f"run_units evolves each unit of a unit set, such as resnet50:layer4:unit0-63; "
                       f"'{shared.spec}' is not one.")
    # 64 stimnet units × 40 codes on 2 CPU cores: 1,010 images/s in chunks of 128, 700 in chunks of 512
    # (a chunk's activations stay in cache); a GPU wants the larger batches
    batch = batch or (512 if shared.device.type == "cuda" else 128)
    out = Path(out or default_run_path(config))
    reference = _reference(config, shared, generator)
    tracks = []
    for column, unit in enumerate(shared.unit.units):
        single = UnitSpec(shared.unit.model, shared.unit.layer, unit, shared.unit.position)
        unit_neuron = CNNUnit(single, reader=shared.reader)
        part = str(single) if isinstance(config.neuron, str) else unit_neuron
        own = (reference[0][:, column], *reference[1:]) if reference else None
        tracks.append(_track(dataclasses.replace(config, neuron=part), unit_neuron, generator, out / f"unit{unit}",
                             command, own, column))
    return Loop(shared, generator, tracks, batch, on_generation, stop_when, progress).run()


__all__ = ["RunConfig", "RunResult", "GenerationRecord", "Loop", "run", "start", "resume", "run_units", "describe"]
