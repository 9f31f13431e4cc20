"""Neurons: anything that turns images into responses.

`create(spec, **options)` builds one from a spec string, like timm's `create_model`: a CNN unit
(`resnet50:layer4:unit12`), a unit set (`resnet50:layer4:unit0-63`, responses (n, k)), a model V1
cell (`v1:complex:ori=45`), a template (`template:IMAGE[:MODEL:LAYER]`) or an expression of these
(`neurons.objective`). A lab's own network joins by name (`register_model`, then `mynet:layer4:unit12`)
or as an object (`from_module`); any callable of images is a neuron through `as_neuron`.
"""
from __future__ import annotations

from pathlib import Path

from neurons.base import Neuron
from neurons.cnn import CNNUnit, LayerInfo, ModelReader, list_layers
from neurons.models import InputConfig, register_model
from neurons.objective import KINDS, Leaf, Objective, parse
from neurons.python_neurons import FunctionNeuron, Negative, as_neuron, from_module
from neurons.spec import UnitSpec


def create(spec: str, weights: str | Path = "pretrained", device: str = "auto",
           precision: str = "auto") -> Neuron:
    """The neuron a spec string or objective expression names (see DESIGN.md and `neurons.objective`)."""
    tree = parse(spec)
    if not isinstance(tree, Leaf):
        return Objective(tree, weights=weights, device=device, precision=precision)
    prefix = tree.spec.split(":", 1)[0]
    kind = KINDS.get(prefix) if prefix in KINDS else CNNUnit
    return kind(tree.spec, weights=weights, device=device, precision=precision)


__all__ = ["Neuron", "CNNUnit", "ModelReader", "Objective", "UnitSpec", "LayerInfo", "InputConfig", "FunctionNeuron",
           "Negative", "KINDS", "create", "as_neuron", "from_module", "register_model", "list_layers", "parse"]
