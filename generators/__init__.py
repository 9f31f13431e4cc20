"""Generators: anything that turns latent codes into images.

`create(name, **options)` builds one from the registry, like timm's `create_model`; options may also be
written into the name, `NAME:KEY=VALUE[:KEY=VALUE...]` (`stimuli:layers=3`). `REGISTRY`'s entries
describe each (code size, image size, where 'pretrained' looks) without loading weights.
Installed packages add generators through the entry-point group `evolver.generators` (a Generator
class or factory that takes the options as keywords).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

from evolver_common import BadInput
from evolver_common.specs import annotations, parse_spec, typed_options
from evolver_common.registry import Entry, Registry
from generators import biggan, dcgan, deepsim, image_spaces
from generators.base import Generator
from generators.dcgan import DCGAN
from generators.stimuli import Stimuli

REGISTRY: Registry[Callable[..., Generator]] = Registry(
    "generator", group="evolver.generators", hint="`evolver generators` lists them.")


def register(name: str, factory: Callable[..., Generator], code_dim: str = "?", image_size: int = 0,
             weights_location: Callable[[], tuple[str, bool]] | None = None, optimizer: str | None = None) -> None:
    """Make `factory(**options)` available as `create(name, **options)`; the rest is what
    `evolver generators` shows: the code size, the image side, (where, found) of pretrained weights, and
    the optimizer a run through it gets when it names none (None: the project's default)."""
    REGISTRY.register(name, factory, code_dim=code_dim, image_size=image_size, optimizer=optimizer,
                      weights_location=weights_location or (lambda: ("given by the factory", True)))


def default_optimizer(spec: str) -> str | None:
    """The optimizer registered for the generator `spec` ('NAME[:KEY=VALUE...]'), without building it; None
    where it has none of its own."""
    return REGISTRY.entry(parse(spec)[0]).info.get("optimizer")


def available() -> list[str]:
    """The registered generator names."""
    return REGISTRY.available()


def entries() -> list[Entry]:
    """Every generator's entry; a plugin's `info` is empty until it is first built."""
    return [REGISTRY.entry(name) for name in REGISTRY.available()]


GENERATOR_HELP = "Options follow a generator's name as NAME:KEY=VALUE[:KEY=VALUE...], e.g. stimuli:layers=3."


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """'NAME:KEY=VALUE[:KEY=VALUE...]' -> (NAME, {KEY: VALUE text}); `create` converts the values to the
    types the generator's parameters declare."""
    parsed = parse_spec(spec, GENERATOR_HELP, address_fields=0)
    if parsed.address:
        raise BadInput(f"Malformed generator '{spec}' at '{parsed.address[0]}': {GENERATOR_HELP}")
    return parsed.kind, parsed.options


def create(name: str, **options) -> Generator:
    """Build the generator registered as `name` (e.g. 'dcgan', weights='random'; 'stimuli:layers=3')."""
    name, written = parse(name)
    factory = REGISTRY.get(name)
    options = typed_options({**written, **options}, annotations(factory),
                            f"Generator '{name}' does not take these options", max_int=float("inf"))
    return factory(**options)


register("dcgan", DCGAN, f"{dcgan.bundled_code_dim()} bundled (100 random)", DCGAN.image_size, dcgan.weights_location)
for variant in deepsim.VARIANTS:
    register(f"deepsim-{variant}", functools.partial(deepsim.DeePSiM, variant), str(deepsim.code_dim(variant)),
             deepsim.DeePSiM.image_size, functools.partial(deepsim.weights_location, variant))
# racing-cmaes: its ten families are a choice that one CMA-ES blends (docs/neurons.md, "Ground truth")
register("stimuli", Stimuli, "25 a layer (stimuli:layers=L)", 64, lambda: ("none needed (formulas)", True),
         optimizer="racing-cmaes")
for space in (image_spaces.Pixel, image_spaces.Fourier, image_spaces.Maco):
    resolution = image_spaces.DEFAULT_RESOLUTION
    register(space.kind, space, f"{math.prod(space.shape_at(resolution))} ({space.formula}, R={resolution})", 64,
             lambda: ("none needed (the code is the image)", True))
for size in biggan.SIZES:
    register(f"biggan-deep-{size}", functools.partial(biggan.BigGAN, size), "256 (128 with --class)", size,
             functools.partial(biggan.weights_location, size))

__all__ = ["Generator", "DCGAN", "Stimuli", "REGISTRY", "create", "default_optimizer", "parse", "register", "available",
           "entries"]
