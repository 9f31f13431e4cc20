"""Generators: anything that turns latent codes into images.

`create(name, **options)` builds one from the registry, like timm's `create_model`.
"""
from __future__ import annotations

from collections.abc import Callable

from evolver_common import BadInput, nearest
from generators.base import Generator
from generators.dcgan import DCGAN

_REGISTRY: dict[str, Callable[..., Generator]] = {}


def register(name: str, factory: Callable[..., Generator]) -> None:
    """Make `factory(**options)` available as `create(name, **options)`."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    """The registered generator names."""
    return sorted(_REGISTRY)


def create(name: str, **options) -> Generator:
    """Build the generator registered as `name` (e.g. 'dcgan', weights='random')."""
    if name not in _REGISTRY:
        raise BadInput(
            f"Unknown generator '{name}' (closest: {nearest(name, _REGISTRY)}). "
            f"Valid generators: {', '.join(available())}."
        )
    return _REGISTRY[name](**options)


register("dcgan", DCGAN)

__all__ = ["Generator", "DCGAN", "create", "register", "available"]
