"""Building a CNN by name from timm or torchvision, with its weights and its input config.

A model family is a small `ModelSource` (neurons.model_source; one file each: `bundled_models`, `timm_models`,
`torchvision_models`), registered in `SOURCES` with its place in the lookup order: `build_model` asks them
in that order: the models registered in this process (`register_model`), the bundled models, then timm,
then torchvision, as docs/design.md says.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn
from torchvision.models import feature_extraction

from evolver_common import BadInput, apply_state_dict, load_state_file, nearest, seeded_init
from evolver_common.registry import Registry
from evolver_common.state_files import file_weights, parameters_digest
from neurons.bundled_models import BundledSource
from neurons.model_source import InputConfig, ModelSource
from neurons.timm_models import TimmSource
from neurons.torchvision_models import TorchvisionSource

# Random weights are seeded so that a run with `--weights random` is reproducible.
RANDOM_WEIGHTS_SEED = 0

# A lab's own models, by name, within this process: `register_model`.
MODELS: Registry[Callable[[], nn.Module]] = Registry("model")


def register_model(name: str, factory: Callable[[], nn.Module], input_config: InputConfig | dict) -> None:
    """Make `name:LAYER:UNIT` a neuron spec in this process (the CLI's, expressions, sweeps).

    `factory()` returns the network with the weights 'pretrained' means; `random` re-initialises it
    (seeded) and a PATH loads a state dict into it. `input_config` is an InputConfig or the keywords of
    `InputConfig.make` (size, mean, std, interpolation)."""
    if ":" in name or not name.strip():
        raise BadInput(f"A model name cannot be empty or hold ':' (it starts a spec, NAME:LAYER:UNIT); got '{name}'.")
    try:
        config = input_config if isinstance(input_config, InputConfig) else InputConfig.make(**input_config)
    except TypeError as err:
        raise BadInput(f"register_model('{name}', ...): the input config {input_config!r} is not valid ({err}); give "
                       "an InputConfig or a dict with size (a side or (H, W)) and optionally mean, std and "
                       "interpolation, e.g. {'size': 224, 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}."
                       ) from None
    MODELS.register(name, factory, input_config=config)


class ModuleSource:
    """Networks built in Python: the registered models, or one module (`neurons.from_module`), read
    through torchvision's generic FX graph."""

    name = "python"

    def __init__(self, module: nn.Module | None = None, input_config: InputConfig | None = None):
        self.module, self.config = module, input_config

    def names(self) -> list[str]:
        return MODELS.available()

    def has(self, model: str) -> bool:
        return model in MODELS

    def build(self, model: str) -> nn.Module:
        network = self.module if self.module is not None else MODELS.get(model)()
        for layer in network.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        return network

    def build_pretrained(self, model: str) -> tuple[nn.Module, str]:
        network = self.module if self.module is not None else MODELS.get(model)()
        if not isinstance(network, nn.Module):
            raise BadInput(f"The factory registered as '{model}' returned a {type(network).__name__}, not a "
                           "torch.nn.Module.")
        kind = type(network)
        return network, f"{kind.__module__}.{kind.__qualname__} (weights sha1 {parameters_digest(network)})"

    def input_config(self, model: str, network: nn.Module) -> InputConfig:
        return self.config or MODELS.entry(model).info["input_config"]

    def graph_node_names(self, network: nn.Module) -> list[str]:
        return feature_extraction.get_graph_node_names(network)[1]

    def feature_extractor(self, network: nn.Module, nodes: list[str]) -> nn.Module:
        return feature_extraction.create_feature_extractor(network, return_nodes=nodes)


SOURCES: Registry[Callable[[], ModelSource]] = Registry("model source")
for place, (name, source) in enumerate((("python", ModuleSource), ("bundled", BundledSource), ("timm", TimmSource),
                                        ("torchvision", TorchvisionSource))):
    SOURCES.register(name, source, order=place)


def sources() -> list[ModelSource]:
    """One of each registered source, in lookup order."""
    return [e.factory() for e in sorted(SOURCES.registered(), key=lambda e: e.info["order"])]


def source_of(model: str) -> ModelSource:
    """The family that provides `model`, or BadInput naming the closest models."""
    all_sources = sources()
    for source in all_sources:
        if source.has(model):
            return source
    names = [n for s in all_sources for n in s.names()]
    raise BadInput(
        f"Unknown model '{model}' (closest: {nearest(model, names)}). MODEL is a model registered in this process "
        "(neurons.register_model), a bundled model (stimnet), "
        "a timm model name (timm.list_models()) or a torchvision classification model that timm lacks, "
        "such as alexnet or vgg16."
    )


def build_model(model: str, weights: str | Path, source: ModelSource | None = None
                ) -> tuple[nn.Module, ModelSource, str]:
    """The network `model` in eval mode with `weights` ('pretrained', 'random' or a path), from `source`
    (default: the first family that has it).

    Returns the network, its source, and a description of the weights for the run record.
    """
    source = source or source_of(model)
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
            description = file_weights(weights, network)
    return network.eval(), source, description
