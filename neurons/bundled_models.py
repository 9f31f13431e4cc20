"""Models that ship inside the package (stimnet), with their weights and cards in neurons/weights/."""
from __future__ import annotations

from torch import nn
from torchvision.models import feature_extraction

from evolver_common import BadInput, apply_state_dict, load_state_file
from neurons import stimnet
from neurons.model_source import InputConfig


class BundledSource:
    name = "bundled"

    def names(self) -> list[str]:
        return ["stimnet"]

    def has(self, model: str) -> bool:
        return model in self.names()

    def build(self, model: str) -> nn.Module:
        return stimnet.build(model, len(stimnet.card(model)["classes"]))

    def build_pretrained(self, model: str) -> tuple[nn.Module, str]:
        path = stimnet.WEIGHTS_DIR / f"{model}.safetensors"
        if not path.is_file():
            raise BadInput(f"The bundled weights of '{model}' are missing from this installation ({path}); "
                           f"reinstall evolver, or reproduce them with scripts/train_stimnet.py.")
        network = self.build(model)
        apply_state_dict(network, load_state_file(path), source=str(path))
        return network, f"bundled {path.name}"

    def input_config(self, model: str, network: nn.Module) -> InputConfig:
        spec = stimnet.card(model)["input"]
        return InputConfig((spec["size"], spec["size"]), tuple(spec["mean"]), tuple(spec["std"]), "bilinear")

    def graph_node_names(self, network: nn.Module) -> list[str]:
        return feature_extraction.get_graph_node_names(network)[1]

    def feature_extractor(self, network: nn.Module, nodes: list[str]) -> nn.Module:
        return feature_extraction.create_feature_extractor(network, return_nodes=nodes)
