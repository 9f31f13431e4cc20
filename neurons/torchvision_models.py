"""torchvision classification models that timm lacks (alexnet, vgg16, ...); weights from TORCH_HOME."""
from __future__ import annotations

import functools
import os
import urllib.parse

import torch
import torchvision
from torch import nn
from torchvision.models import feature_extraction

from evolver_common.downloads import offline_reason, reachable
from neurons.model_source import InputConfig, missing_pretrained


@functools.cache
def _all_names() -> tuple[str, ...]:
    return tuple(torchvision.models.list_models(module=torchvision.models))


def _default_weights(model: str):
    return torchvision.models.get_model_weights(model).DEFAULT


class TorchvisionSource:
    name = "torchvision"

    def names(self) -> list[str]:
        return list(_all_names())

    def has(self, model: str) -> bool:
        return model in _all_names()

    def build(self, model: str) -> nn.Module:
        return torchvision.models.get_model(model, weights=None)

    def build_pretrained(self, model: str) -> tuple[nn.Module, str]:
        weights = _default_weights(model)
        cached = os.path.join(torch.hub.get_dir(), "checkpoints",
                              os.path.basename(urllib.parse.urlsplit(weights.url).path))
        if not os.path.isfile(cached) and not reachable(weights.url):
            raise missing_pretrained(model, [cached], offline_reason(weights.url))
        # torchvision reads the cached file when it is there and downloads it otherwise.
        return torchvision.models.get_model(model, weights=weights), cached

    def input_config(self, model: str, network: nn.Module) -> InputConfig:
        transforms = _default_weights(model).transforms()
        size = transforms.crop_size[0]
        return InputConfig((size, size), tuple(transforms.mean), tuple(transforms.std),
                           transforms.interpolation.value)

    def graph_node_names(self, network: nn.Module) -> list[str]:
        return feature_extraction.get_graph_node_names(network)[1]

    def feature_extractor(self, network: nn.Module, nodes: list[str]) -> nn.Module:
        return feature_extraction.create_feature_extractor(network, return_nodes=nodes)
