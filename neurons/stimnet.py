"""stimnet: a small CNN trained on the procedural stimulus corpus to name a stimulus's family.

Its training lives in `evolver.training.stimnet` (it needs the corpus, which is the generators').

Its class units have known preferred stimuli (a star unit should prefer stars), which makes it
the ground-truth neuron of the bundled world. Architectures are data (`ARCHITECTURES`), so the
independent classifier of the ground-truth check is the same code with other numbers.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
# (output channels, kernel, stride) per conv block; 'pool' after a block halves the grid.
ARCHITECTURES = {
    "stimnet": {"blocks": [(32, 5, 2), (64, 3, 1), "pool", (128, 3, 1), "pool", (128, 3, 1)], "norm": "batch"},
    # the independent check: wider kernels, strided convs instead of pooling, group norm
    "checknet": {"blocks": [(48, 5, 2), (96, 5, 2), (192, 3, 2), (192, 3, 1)], "norm": "group"},
    # train-gan's guide against mode dropping: small kernels at full resolution, three poolings
    "guidenet": {"blocks": [(32, 3, 1), "pool", (64, 3, 1), "pool", (128, 3, 1), "pool", (192, 3, 1)], "norm": "batch"},
}
INPUT = {"size": 64, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def build(architecture: str = "stimnet", classes: int = 12) -> nn.Sequential:
    """The network: conv{i}/norm{i}/relu{i} blocks, pool{i}, global `avgpool`, `flatten`, `classifier`."""
    spec = ARCHITECTURES[architecture]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, conv, pool = 3, 0, 0
    for block in spec["blocks"]:
        if block == "pool":
            pool += 1
            layers[f"pool{pool}"] = nn.MaxPool2d(2)
            continue
        width, kernel, stride = block
        conv += 1
        layers[f"conv{conv}"] = nn.Conv2d(channels, width, kernel, stride, kernel // 2, bias=False)
        layers[f"norm{conv}"] = nn.BatchNorm2d(width) if spec["norm"] == "batch" else nn.GroupNorm(8, width)
        layers[f"relu{conv}"] = nn.ReLU()
        channels = width
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten(1)
    layers["classifier"] = nn.Linear(channels, classes)
    return nn.Sequential(layers)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, 64, 64) in [0, 1] -> the network's input."""
    mean = torch.tensor(INPUT["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(INPUT["std"], device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def card(name: str) -> dict:
    """The JSON card shipped beside a bundled model's weights."""
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
