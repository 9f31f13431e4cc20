"""stimnet: a small CNN trained on the procedural stimulus corpus to name a stimulus's family.

Its class units have known preferred stimuli (a star unit should prefer stars), which makes it
the ground-truth neuron of the bundled world. Architectures are data (`ARCHITECTURES`), so the
independent classifier of the ground-truth check is the same code with other numbers.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
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


def worst_nearby(network: nn.Module, images: torch.Tensor, family: torch.Tensor, radius: float,
                 steps: int = 2) -> torch.Tensor:
    """Images (n, 3, 64, 64) in [0, 1] within L2 distance `radius` (pixel units) of `images` that
    `network` names worst: projected gradient ascent on its cross-entropy (Madry et al. 2018)."""
    delta = torch.zeros_like(images, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(network(normalise((images + delta).clamp(0, 1))).float(), family)
        grad, = torch.autograd.grad(loss, delta)
        delta = delta + 2 * radius / steps * grad / _l2(grad).clamp_min(1e-12)
        delta = (delta * (radius / _l2(delta).clamp_min(radius))).detach().requires_grad_(True)
    return (images + delta).clamp(0, 1).detach()


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *[1] * (x.ndim - 1))


def train_classifier(architecture: str, steps: int, seed: int, corpus_seed: int, batch_size: int = 128,
                     lr: float = 2e-3, robust_radius: float = 0.0, progress: bool = True) -> nn.Sequential:
    """Train `architecture` to name the family of corpus stimuli (AdamW, cosine schedule, bf16 where native).

    With `robust_radius` > 0 it is trained on the worst images within that L2 distance of each
    stimulus instead (adversarial training): its input gradients then look like the features it
    names (Santurkar et al. 2019), which a guide of a generator needs."""
    from tqdm.auto import tqdm

    from evolver_common import autocast, resolve_precision, seeded_init
    from generators.stimuli import FAMILIES, corpus

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    with seeded_init(seed):
        network = build(architecture, len(FAMILIES)).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    stream = corpus(corpus_seed, batch_size)
    network.train()
    bar = tqdm(range(steps), desc=f"train {architecture}", disable=not progress)
    for _ in bar:
        batch = next(stream)
        images = batch.images.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            if robust_radius:
                images = worst_nearby(network, images, batch.family, robust_radius)
            logits = network(normalise(images))
        loss = F.cross_entropy(logits.float(), batch.family)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return network.eval()


@torch.no_grad()
def accuracy(logits: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, family: torch.Tensor,
             batch: int = 500) -> float:
    """Share of `images` (n, 3, 64, 64) in [0, 1] whose largest logit is their `family`."""
    predicted = torch.cat([logits(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return (predicted == family).float().mean().item()


def card(name: str) -> dict:
    """The JSON card shipped beside a bundled model's weights."""
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
