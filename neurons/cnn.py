"""A unit of a CNN as a neuron: the network cut after the unit's layer, read at one position."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evolver_common import BadInput, autocast, nearest, resolve_device, resolve_precision
from neurons.base import Neuron
from neurons.models import InputConfig, ModelSource, build_model
from neurons.spec import UnitSpec


def _no_inplace(network: nn.Module) -> None:
    """Turn off in-place activations so that no later op overwrites an activation we read."""
    for module in network.modules():
        if hasattr(module, "inplace"):
            module.inplace = False


def _layer_names(network: nn.Module, source: ModelSource) -> list[str]:
    """Names a layer can be given by: graph nodes (`layer3.5.relu_2`) and module paths (`layer4`)."""
    nodes = source.graph_node_names(network)[1:]  # the first node is the input placeholder
    return nodes + [name for name, _ in network.named_modules() if name and name not in nodes]


def _cut_network(network: nn.Module, source: ModelSource, layer: str, model: str) -> nn.Module:
    """The network up to `layer` only; what comes after it is never computed."""
    try:
        return source.feature_extractor(network, [layer])
    except ValueError:  # FX's word for a node that is not in the graph
        valid = _layer_names(network, source)
        raise BadInput(
            f"Model '{model}' has no layer '{layer}' (closest: {nearest(layer, valid)}). "
            f"`evolver layers {model}` lists its {len(valid)} layer names."
        ) from None


class Preprocess(nn.Module):
    """Resize generator images to the model's input size and normalise with the model's statistics."""

    def __init__(self, config: InputConfig):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.config.size:
            mode = self.config.interpolation if self.config.interpolation in ("bilinear", "bicubic") else "bilinear"
            images = F.interpolate(images, size=self.config.size, mode=mode, antialias=True, align_corners=False)
        return (images - self.mean) / self.std


class CNNUnit(Neuron):
    """One unit of a timm or torchvision CNN.

    Args:
        spec: 'MODEL:LAYER:UNIT[@X,Y|@mean]' (see `neurons.spec`).
        weights: 'pretrained', 'random' (seeded) or the path of a .safetensors/.pth state dict.
        device, precision: see `evolver_common.compute`.
    """

    def __init__(self, spec: str | UnitSpec, weights: str | Path = "pretrained",
                 device: str = "auto", precision: str = "auto"):
        self.unit = spec if isinstance(spec, UnitSpec) else UnitSpec.parse(spec)
        self.spec = str(self.unit)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        network, source, self.weights = build_model(self.unit.model, weights)
        _no_inplace(network)
        self.input_config = source.input_config(self.unit.model, network)
        self.network = nn.Sequential(
            Preprocess(self.input_config),
            _cut_network(network, source, self.unit.layer, self.unit.model),
        ).eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        self.layer_shape = self._layer_shape()
        self._check_unit()

    def _layer_shape(self) -> tuple[int, ...]:
        probe = torch.zeros(1, 3, *self.input_config.size, device=self.device)
        return tuple(self.activations(probe).shape[1:])

    def _check_unit(self) -> None:
        shape, unit = self.layer_shape, self.unit
        where = f"layer '{unit.layer}' of {unit.model}"
        if len(shape) not in (1, 3):
            raise BadInput(f"The output of {where} has shape {shape}; a unit needs a (C,) or (C, H, W) layer.")
        if not 0 <= unit.unit < shape[0]:
            raise BadInput(f"Unit {unit.unit} is out of range: {where} has {shape[0]} units (0–{shape[0] - 1}).")
        if len(shape) == 1 and unit.position is not None:
            raise BadInput(f"{where} is not spatial (shape {shape}); drop the @{unit.position} position.")
        if isinstance(unit.position, tuple):
            x, y = unit.position
            if not (0 <= x < shape[2] and 0 <= y < shape[1]):
                raise BadInput(f"Position @{x},{y} is outside {where}, whose grid is {shape[2]}×{shape[1]} (X×Y).")

    def _layer(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            (out,) = self.network(images).values()
        return out.float()

    @torch.no_grad()
    def activations(self, images: torch.Tensor) -> torch.Tensor:
        """The whole layer's activations for `images` (n, 3, H, W) in [0, 1]: (n, C[, H', W']) float32."""
        return self._layer(images)

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        out = self._layer(images)[:, self.unit.unit]
        if out.ndim == 3:
            if self.unit.position == "mean":
                return out.mean(dim=(1, 2))
            x, y = self.unit.position or (out.shape[2] // 2, out.shape[1] // 2)
            return out[:, y, x]
        return out

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer: its name, its number of units and its spatial size (H, W) or None."""

    name: str
    units: int | None
    spatial: tuple[int, int] | None


def list_layers(model: str) -> list[LayerInfo]:
    """Every graph node of `model` with its output size at the model's input resolution."""
    network, source, _ = build_model(model, "random")
    _no_inplace(network)
    config = source.input_config(model, network)
    nodes = source.graph_node_names(network)[1:]  # the first node is the input placeholder
    with torch.no_grad():
        outputs = source.feature_extractor(network, nodes)(torch.zeros(1, 3, *config.size))
    layers = []
    for name, out in outputs.items():
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
        layers.append(LayerInfo(name, shape[0] if shape else None, shape[1:] if len(shape) == 3 else None))
    return layers
