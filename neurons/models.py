"""Building a CNN by name from timm or torchvision, with its weights and its input config.

A model family is a small `ModelSource` (one file each: `bundled_models`, `timm_models`, `torchvision_models`);
`build_model` asks them in order: the bundled models, then timm, then torchvision, as DESIGN.md says.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import nn

from evolver_common import BadInput, apply_state_dict, load_state_file, nearest, seeded_init

# Random weights are seeded so that a run with `--weights random` is reproducible.
RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class InputConfig:
    """How a model wants its input, from the model's own config: size (H, W), mean, std per channel."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # 'bilinear' | 'bicubic' | 'nearest'


class ModelSource(Protocol):
    """A family of models (bundled, timm, torchvision) that can be built by name."""

    name: str

    def names(self) -> list[str]: ...
    def has(self, model: str) -> bool: ...
    def build(self, model: str) -> nn.Module: ...
    def build_pretrained(self, model: str) -> tuple[nn.Module, str]: ...
    def input_config(self, model: str, network: nn.Module) -> InputConfig: ...
    def graph_node_names(self, network: nn.Module) -> list[str]: ...
    def feature_extractor(self, network: nn.Module, nodes: list[str]) -> nn.Module: ...


def sources() -> list[ModelSource]:
    from neurons.bundled_models import BundledSource
    from neurons.timm_models import TimmSource
    from neurons.torchvision_models import TorchvisionSource
    return [BundledSource(), TimmSource(), TorchvisionSource()]


def source_of(model: str) -> ModelSource:
    """The family that provides `model`, or BadInput naming the closest models."""
    all_sources = sources()
    for source in all_sources:
        if source.has(model):
            return source
    names = [n for s in all_sources for n in s.names()]
    raise BadInput(
        f"Unknown model '{model}' (closest: {nearest(model, names)}). MODEL is a bundled model (stimnet), "
        "a timm model name (timm.list_models()) or a torchvision classification model that timm lacks, "
        "such as alexnet or vgg16."
    )


def build_model(model: str, weights: str | Path) -> tuple[nn.Module, ModelSource, str]:
    """The network `model` in eval mode with `weights` ('pretrained', 'random' or a path).

    Returns the network, its source, and a description of the weights for the run record.
    """
    source = source_of(model)
    weights = str(weights)
    if weights == "pretrained":
        network, description = source.build_pretrained(model)
    else:
        with seeded_init(RANDOM_WEIGHTS_SEED):
            network = source.build(model)
        if weights == "random":
            description = f"random (seed {RANDOM_WEIGHTS_SEED}, untrained)"
        else:
            apply_state_dict(network, load_state_file(weights), source=weights)
            description = str(Path(weights).resolve())
    return network.eval(), source, description


def missing_pretrained(model: str, looked_for: str, where: str) -> BadInput:
    """The error for pretrained weights that are neither cached nor downloadable."""
    return BadInput(
        f"No pretrained weights for '{model}' are cached and they cannot be downloaded ({where}). "
        f"Looked for {looked_for}. Either give the weights file with --weights PATH (.safetensors or "
        "a .pth state dict), or use --weights random for a seeded, untrained network."
    )
