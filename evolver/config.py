"""What a user asks a run for (`RunConfig`), and the conditions a run resolved to that a resume must find
unchanged (device, precision, each part's weights, package versions)."""
from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import generators
import neurons
from evolver import optimizers
from evolver.records import RunDirectory
from evolver.retest import Retest
from evolver.presenting import MISSING
from evolver.track import generation_limit
from evolver_common import BadInput
from evolver_common.secrets import redact
from evolver_common.specs import annotations, typed_options

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
            optimizers.get(self.optimizer)  # an unknown name is refused here, before any run starts
        if self.generations < 1:
            raise BadInput(f"--generations must be at least 1, got {self.generations}.")
        if self.seed < 0:
            raise BadInput(f"--seed must be a whole number from 0 up (numpy's seeds are), got {self.seed}.")
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
        typed_options({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, annotations(RunConfig),
                      "A run's options have the wrong types", from_text=False, max_int=float("inf"))

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


# Where config.json records each of `conditions`.
RESOLVED = {"device": ("resolved", "device"), "precision": ("resolved", "precision"),
            "weights": ("resolved", "neuron", "weights"), "generator-weights": ("resolved", "generator", "weights"),
            "versions": ("versions",)}


def check_unchanged(directory: RunDirectory, now: dict[str, Any], force: Sequence[str]) -> list[str]:
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
