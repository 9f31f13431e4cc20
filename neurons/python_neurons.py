"""Neurons made from Python objects: a lab's own `torch.nn.Module` read at a unit, or any callable.

    neuron = neurons.from_module(model, "layer4", unit=12, input_size=224)   # read like resnet50:layer4:unit12
    neuron = neurons.as_neuron(lambda images: images.mean((1, 2, 3)))       # images (n,3,H,W) -> (n,)
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from evolver_common import BadInput
from neurons.base import Neuron
from neurons.cnn import CNNUnit, ModelReader
from neurons.model_source import IMAGENET_MEAN, IMAGENET_STD, InputConfig
from neurons.models import ModuleSource
from neurons.spec import UnitSpec


def from_module(model: nn.Module, layer: str, unit: int | str | Sequence[int] = 0, *,
                input_size: int | Sequence[int] | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, interpolation: str = "bilinear", name: str | None = None,
                device: str = "auto", precision: str = "auto") -> CNNUnit:
    """A unit of `model` read as timm and torchvision units are: the network cut after `layer` (a module
    path or graph node, as `named_modules()` prints it), the centre position of a spatial layer.

    Args:
        model: the network; a copy is read, so the caller's module is left as it was (mode, devices, grads).
        layer: the layer's name.
        unit: a channel (12), a set read at once (range(64), [1, 5, 9], giving (n, k) responses), or the
            text of a spec's unit part ('12@3,4', '12@mean', '0-63').
        input_size, mean, std, interpolation: how the model wants its input (side or (H, W) in pixels;
            per-channel statistics of [0, 1] images). Not given, they are ImageNet's (224, and its
            mean and s.d.), with a warning saying so: a model trained otherwise reads the images wrong.
        name: the model's name in specs and records (default: the class name, lower case).
    """
    if not isinstance(model, nn.Module):
        raise BadInput(f"from_module needs a torch.nn.Module, got a {type(model).__name__}; a plain function of "
                       "images is a neuron through neurons.as_neuron.")
    name = name or type(model).__name__.lower()
    units = unit if isinstance(unit, (int, str)) else f"[{','.join(str(int(u)) for u in unit)}]"
    spec = UnitSpec.parse(f"{name}:{layer}:{units}")
    assumed = [what for what, given in (("input_size=224", input_size), ("ImageNet's mean", mean),
                                        ("ImageNet's std", std)) if given is None]
    if assumed:
        warnings.warn(f"from_module({name}, '{layer}'): {', '.join(assumed)} assumed. Give input_size, mean and std "
                      "as the model was trained (its images' side in pixels, per-channel statistics of [0, 1] "
                      "images) to read it as it sees.", stacklevel=2)
    config = InputConfig.make(input_size or 224, IMAGENET_MEAN if mean is None else mean,
                              IMAGENET_STD if std is None else std, interpolation)
    source = ModuleSource(copy.deepcopy(model), config)
    return CNNUnit(spec, reader=ModelReader(name, [layer], "pretrained", device, precision, source=source))


class FunctionNeuron(Neuron):
    """Any callable `images (n, 3, H, W) in [0, 1] -> responses (n,)` as a neuron.

    The callable may return a tensor, an array or a list; it sees the generator's images as they are
    (no resizing or normalisation), on the generator's device."""

    def __init__(self, function: Callable[[torch.Tensor], object], name: str | None = None):
        if not callable(function):
            raise BadInput("A neuron is a spec string, a Neuron or a callable of images; got a "
                           f"{type(function).__name__}.")
        self.function = function
        self.spec = f"python:{name or getattr(function, '__qualname__', type(function).__qualname__)}"
        module = getattr(function, "__module__", None) or type(function).__module__
        self.weights = f"python callable {module}.{getattr(function, '__qualname__', type(function).__qualname__)}"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = self.function(images)
        responses = out.detach().double().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, float)
        if responses.shape != (len(images),):
            raise BadInput(f"The neuron {self.spec} returned responses of shape {responses.shape} for {len(images)} "
                           f"images; a neuron returns one number per image, shape ({len(images)},).")
        return responses

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        out = self.function(images)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return super().differentiable(images)
        return out


class Negative(Neuron):
    """-(neuron): what a run evolves to find a neuron's least preferred stimulus (`minimize`)."""

    def __init__(self, neuron: Neuron):
        self.neuron = neuron
        self.spec, self.weights, self.outputs = f"-({neuron.spec})", neuron.weights, neuron.outputs
        self.device, self.precision = neuron.device, neuron.precision

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return -np.asarray(self.neuron(images), dtype=np.float64)

    def respond(self, images: torch.Tensor, ids: list[str] | None = None) -> np.ndarray:
        return -np.asarray(self.neuron.respond(images, ids), dtype=np.float64)

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        return -self.neuron.differentiable(images)

    def compile(self) -> None:
        self.neuron.compile()

    def describe(self) -> dict:
        return {"negative_of": self.neuron.describe()}


def as_neuron(neuron: str | Neuron | Callable, **options) -> Neuron:
    """A Neuron from a spec string (`neurons.create(spec, **options)`), a Neuron, or a callable of images."""
    from neurons import create

    if isinstance(neuron, str):
        return create(neuron, **options)
    if isinstance(neuron, Neuron):
        return neuron
    if isinstance(neuron, nn.Module):
        raise BadInput(f"A {type(neuron).__name__} module is a network, not one neuron: say which unit of which layer "
                       "with neurons.from_module(model, 'LAYER', unit=N, input_size=..., mean=..., std=...).")
    return FunctionNeuron(neuron)
