"""A unit of a CNN as a neuron: the network cut after the unit's layer, read at one position."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evolver_common import BadInput, autocast, nearest, resolve_device, resolve_precision
from neurons.base import Neuron
from neurons.models import InputConfig, ModelSource, build_model
from neurons.precision import bf16_verdict
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


def _cut_network(network: nn.Module, source: ModelSource, layers: list[str], model: str) -> nn.Module:
    """The network up to the deepest of `layers` only; what comes after it is never computed."""
    try:
        return source.feature_extractor(network, layers)
    except ValueError:  # FX's word for a node that is not in the graph
        valid = _layer_names(network, source)
        layer = next((name for name in layers if name not in valid), layers[0])
        raise BadInput(
            f"Model '{model}' has no layer '{layer}' (closest: {nearest(layer, valid)}). "
            f"`evolver layers {model}` lists its {len(valid)} layer names."
        ) from None


def _fold_batch_norm(network: nn.Module) -> nn.Module:
    """The network with each eval-mode batch norm folded into the conv before it (one op instead of
    two: resnet50 at batch 17 on 2 cores, 563 → 450 ms; responses within bf16's rounding)."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(network, inplace=True)
    except Exception:  # noqa: BLE001 - a graph FX cannot retrace runs unfused, as it would anyway
        return network


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


class ModelReader:
    """A CNN cut after the deepest of `layers`: one forward pass gives every one of them.

    Units of one model in a composite objective share a reader, hence one forward pass.

    Args:
        model: a bundled, timm or torchvision model name.
        layers: layer names (`evolver layers MODEL`).
        weights: 'pretrained', 'random' (seeded) or the path of a .safetensors/.pth state dict.
        device, precision: see `evolver_common.compute`.
        source: the family that builds `model` (default: the first that has it; `neurons.from_module`
            passes one holding the user's network).
    """

    def __init__(self, model: str, layers: list[str], weights: str | Path = "pretrained",
                 device: str = "auto", precision: str = "auto", source: ModelSource | None = None):
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        network, source, self.weights = build_model(model, weights, source)
        _no_inplace(network)
        self.input_config = source.input_config(model, network)
        self.network = nn.Sequential(
            Preprocess(self.input_config), _fold_batch_norm(_cut_network(network, source, self.layers, model).eval()),
        ).eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        self.precision_check = None  # the bf16 ranking check behind precision 'auto' (neurons.precision)
        self.eager: nn.Module | None = None  # the uncompiled network, once `compile` was called
        if precision == "auto" and self.precision == "bf16":
            self.precision_check = bf16_verdict({"model": model, "layers": self.layers, "weights": self.weights},
                                                self.network, self.device, self.input_config.size)
            self.precision = "bf16" if self.precision_check["bf16"] else "fp32"
        probe = torch.zeros(1, 3, *self.input_config.size, device=self.device)
        with torch.no_grad():
            self.layer_shapes = {name: tuple(out.shape[1:]) for name, out in self.read(probe).items()}

    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's activations for `images` (n, 3, H, W) in [0, 1]: name -> (n, C[, H', W']) float32."""
        images = images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            try:
                outputs = self.network(images)
            except torch._dynamo.exc.TorchDynamoException as error:  # compiles lazily, on each new shape
                self._uncompile(error)
                outputs = self.network(images)
        return {name: out.float() for name, out in outputs.items()}

    def compile(self) -> None:
        """torch.compile the network (inductor, weights frozen as constants): each conv, its bias, ReLU
        and residual add become one kernel. resnet50, batch 40, bf16 on 2 cores: 32 → 41 images/s,
        after a compile on the first batch of each new size (~25 s the first time, ~10 s from
        inductor's disk cache)."""
        if self.eager is None:
            self.eager = self.network
            self.network = torch.compile(self.eager, options={"freezing": True})

    def _uncompile(self, error: Exception) -> None:
        if self.eager is None:
            raise error
        warnings.warn(f"torch.compile failed for {self.model} ({type(error).__name__}: {str(error)[:300]}); "
                      "running it uncompiled.", stacklevel=3)
        self.network = self.eager


def check_units(unit: UnitSpec, shape: tuple[int, ...]) -> None:
    """BadInput unless `unit`'s units and position exist in a layer of output shape `shape`."""
    where = f"layer '{unit.layer}' of {unit.model}"
    if len(shape) not in (1, 3):
        raise BadInput(f"The output of {where} has shape {shape}; a unit needs a (C,) or (C, H, W) layer.")
    outside = [u for u in unit.units if not 0 <= u < shape[0]]
    if outside:
        raise BadInput(f"Unit {outside[0]} is out of range: {where} has {shape[0]} units (0–{shape[0] - 1}).")
    if len(shape) == 1 and unit.position is not None:
        raise BadInput(f"{where} is not spatial (shape {shape}); drop the @{unit.position} position.")
    if isinstance(unit.position, tuple):
        x, y = unit.position
        if not (0 <= x < shape[2] and 0 <= y < shape[1]):
            raise BadInput(f"Position @{x},{y} is outside {where}, whose grid is {shape[2]}×{shape[1]} (X×Y).")


def select_units(layer: torch.Tensor, unit: UnitSpec) -> torch.Tensor:
    """`unit`'s responses from a layer's activations (n, C[, H, W]): (n,) for one unit, (n, k) for a set."""
    out = layer[:, list(unit.units)]
    if out.ndim == 4:
        if unit.position == "mean":
            out = out.mean(dim=(2, 3))
        else:
            x, y = unit.position or (out.shape[3] // 2, out.shape[2] // 2)
            out = out[:, :, y, x]
    return out if isinstance(unit.unit, tuple) else out[:, 0]


class CNNUnit(Neuron):
    """One unit of a timm or torchvision CNN, or a set of units of one layer (responses (n, k)).

    Args:
        spec: 'MODEL:LAYER:UNITS[@X,Y|@mean]' (see `neurons.spec`).
        weights, device, precision: as `ModelReader`.
        reader: a `ModelReader` of the model that already reads the layer (shared in composites).
    """

    def __init__(self, spec: str | UnitSpec, weights: str | Path = "pretrained",
                 device: str = "auto", precision: str = "auto", reader: ModelReader | None = None):
        self.unit = spec if isinstance(spec, UnitSpec) else UnitSpec.parse(spec)
        self.spec = str(self.unit)
        self.reader = reader or ModelReader(self.unit.model, [self.unit.layer], weights, device, precision)
        self.weights, self.device, self.precision = self.reader.weights, self.reader.device, self.reader.precision
        self.input_config, self.network = self.reader.input_config, self.reader.network
        self.layer_shape = self.reader.layer_shapes[self.unit.layer]
        self.outputs = len(self.unit.units) if isinstance(self.unit.unit, tuple) else 1
        check_units(self.unit, self.layer_shape)

    @torch.no_grad()
    def activations(self, images: torch.Tensor) -> torch.Tensor:
        """The whole layer's activations for `images` (n, 3, H, W) in [0, 1]: (n, C[, H', W']) float32."""
        return self.reader.read(images)[self.unit.layer]

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        return self.select(self.reader.read(images))

    def select(self, layers: dict[str, torch.Tensor]) -> torch.Tensor:
        """This unit's responses from a forward pass of its reader (`ModelReader.read`)."""
        return select_units(layers[self.unit.layer], self.unit)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()

    def compile(self) -> None:
        self.reader.compile()


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
