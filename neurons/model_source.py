"""What every model source shares: a model's input config, the ModelSource protocol a family of models
(bundled, timm, torchvision, a lab's own) implements, and the error for missing pretrained weights.
`neurons.models` registers the sources and builds a model by name."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from evolver_common import BadInput
from evolver_common.hub import missing_weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConfig:
    """How a model wants its input, from the model's own config: size (H, W), mean, std per channel."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # 'bilinear' | 'bicubic' | 'nearest'

    @classmethod
    def make(cls, size: int | Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
             std: Sequence[float] = IMAGENET_STD, interpolation: str = "bilinear") -> InputConfig:
        """A checked config: `size` a side in pixels or (H, W); `mean`, `std` three values of [0, 1] images."""
        side = (size, size) if isinstance(size, int) else tuple(size)
        problems = []
        if len(side) != 2 or not all(isinstance(v, int) and v > 0 for v in side):
            problems.append(f"input_size {size!r} is not a positive side or (H, W)")
        if len(tuple(mean)) != 3 or len(tuple(std)) != 3 or any(v <= 0 for v in std):
            problems.append(f"mean {tuple(mean)} and std {tuple(std)} need three values each, std above 0")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            problems.append(f"interpolation '{interpolation}' is not bilinear, bicubic or nearest")
        if problems:
            raise BadInput(f"Bad input config: {'; '.join(problems)}. A model's input config is its input size "
                           "and the per-channel mean and std it was trained with (ImageNet's by default).")
        return cls(side, tuple(float(v) for v in mean), tuple(float(v) for v in std), interpolation)


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


def missing_pretrained(model: str, looked_for: list[str], why: str) -> BadInput:
    """The error for pretrained weights that are neither cached nor downloadable."""
    return missing_weights(f"'{model}'", looked_for, why,
                           "Either give the weights file with --weights PATH (.safetensors or a .pth state dict), "
                           "or use --weights random for a seeded, untrained network.")
