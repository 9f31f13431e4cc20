"""Generators: anything that turns latent codes into images.

`create(name, **options)` builds one from the registry, like timm's `create_model`;
`entries()` describes them without loading any weights.
"""
from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from evolver_common import BadInput, nearest
from generators import biggan, dcgan, deepsim
from generators.base import Generator
from generators.dcgan import DCGAN


@dataclass(frozen=True)
class GeneratorEntry:
    """A registered generator: how to build it, its sizes, and where 'pretrained' looks for weights."""

    name: str
    factory: Callable[..., Generator]
    code_dim: str
    image_size: int
    weights_location: Callable[[], tuple[str, bool]]  # (where, found)


_REGISTRY: dict[str, GeneratorEntry] = {}


def register(entry: GeneratorEntry) -> None:
    """Make `entry.factory(**options)` available as `create(entry.name, **options)`."""
    _REGISTRY[entry.name] = entry


PLUGIN_GROUP = "evolver.generators"


def _load_plugins() -> None:
    """Register the generators of installed packages: entry points in `evolver.generators` naming a
    Generator class (or factory) that takes the options as keywords; built-in names are kept."""
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if entry.name not in _REGISTRY:
            register(GeneratorEntry(entry.name, _PluginFactory(entry), "?", 0,
                                    lambda entry=entry: (f"plugin {entry.value}", True)))


class _PluginFactory:
    """Imports the plugin when first used, so that a broken plugin only fails its own name."""

    def __init__(self, entry: importlib.metadata.EntryPoint):
        self.entry = entry

    def __call__(self, **options) -> Generator:
        try:
            factory = self.entry.load()
        except Exception as err:  # noqa: BLE001 - any import error of a third-party package
            raise BadInput(f"The generator plugin '{self.entry.name}' ({self.entry.value}) could not be loaded: "
                           f"{type(err).__name__}: {err}.") from None
        return factory(**options)


def available() -> list[str]:
    """The registered generator names."""
    return sorted(_REGISTRY)


def entries() -> list[GeneratorEntry]:
    return [_REGISTRY[name] for name in available()]


def create(name: str, **options) -> Generator:
    """Build the generator registered as `name` (e.g. 'dcgan', weights='random')."""
    if name not in _REGISTRY:
        raise BadInput(
            f"Unknown generator '{name}' (closest: {nearest(name, _REGISTRY)}). "
            f"Valid generators: {', '.join(available())}."
        )
    factory = _REGISTRY[name].factory
    if isinstance(factory, _PluginFactory):
        return factory(**options)
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as err:
        accepted = ", ".join(inspect.signature(factory).parameters)
        raise BadInput(f"Generator '{name}' does not take these options ({err}); it takes: {accepted}.") from None
    return factory(**options)


register(GeneratorEntry("dcgan", DCGAN, f"{dcgan.bundled_code_dim()} bundled (100 random)", DCGAN.image_size,
                        dcgan.weights_location))
for variant in deepsim.VARIANTS:
    register(GeneratorEntry(f"deepsim-{variant}", functools.partial(deepsim.DeePSiM, variant),
                            str(deepsim.code_dim(variant)), deepsim.DeePSiM.image_size,
                            functools.partial(deepsim.weights_location, variant)))
for size in biggan.SIZES:
    register(GeneratorEntry(f"biggan-deep-{size}", functools.partial(biggan.BigGAN, size),
                            "256 (128 with --class)", size, functools.partial(biggan.weights_location, size)))
_load_plugins()

__all__ = ["Generator", "DCGAN", "GeneratorEntry", "create", "register", "available", "entries"]
