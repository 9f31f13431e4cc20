"""Neurons: anything that turns images into responses.

`create(spec, **options)` builds one from a spec string, like timm's `create_model`.
"""
from __future__ import annotations

from pathlib import Path

from neurons.base import Neuron
from neurons.cnn import CNNUnit, LayerInfo, list_layers
from neurons.spec import UnitSpec


def create(spec: str, weights: str | Path = "pretrained", device: str = "auto",
           precision: str = "auto") -> Neuron:
    """The neuron a spec string names, e.g. 'resnet50:layer4:unit12' (see DESIGN.md)."""
    return CNNUnit(spec, weights=weights, device=device, precision=precision)


__all__ = ["Neuron", "CNNUnit", "UnitSpec", "LayerInfo", "create", "list_layers"]
