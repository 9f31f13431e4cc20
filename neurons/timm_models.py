"""timm models: built with `timm.create_model`, pretrained weights from the Hugging Face cache."""
from __future__ import annotations

import functools

import timm
from timm.models import create_feature_extractor, get_graph_node_names
from torch import nn

from evolver_common.downloads import offline_reason, reachable
from evolver_common.hub import HubFile
from neurons.model_source import InputConfig, missing_pretrained

# The files timm tries, in its own order, when a pretrained config names no file.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@functools.cache
def _all_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


class TimmSource:
    name = "timm"

    def names(self) -> list[str]:
        return list(_all_names())

    def has(self, model: str) -> bool:
        return timm.is_model(model)

    def build(self, model: str) -> nn.Module:
        return timm.create_model(model, pretrained=False)

    def build_pretrained(self, model: str) -> tuple[nn.Module, str]:
        from huggingface_hub import constants

        cfg = self.build(model).pretrained_cfg
        repo = cfg.get("hf_hub_id")
        if not repo:
            raise missing_pretrained(model, ["a Hugging Face hub id in its timm config"], "timm lists none")
        files = [HubFile(repo, name) for name in
                 ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else _HUB_FILES)]
        for file in files:
            cached = file.cached()
            if cached is not None:
                network = timm.create_model(model, pretrained=True, pretrained_cfg_overlay={"file": str(cached)})
                return network, str(cached)
        if not reachable(constants.ENDPOINT):
            raise missing_pretrained(model, [f.cache_pattern() for f in files], offline_reason(constants.ENDPOINT))
        return timm.create_model(model, pretrained=True), f"hf-hub:{repo}"

    def input_config(self, model: str, network: nn.Module) -> InputConfig:
        cfg = timm.data.resolve_model_data_config(network)
        return InputConfig(tuple(cfg["input_size"][1:]), tuple(cfg["mean"]), tuple(cfg["std"]),
                           cfg["interpolation"])

    def graph_node_names(self, network: nn.Module) -> list[str]:
        return get_graph_node_names(network)[1]

    def feature_extractor(self, network: nn.Module, nodes: list[str]) -> nn.Module:
        return create_feature_extractor(network, return_nodes=nodes)
