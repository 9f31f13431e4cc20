"""Training stimnet and its kin (`neurons.stimnet`'s architectures) on the procedural stimulus corpus:
plain, adversarially robust, or on corrupted stimuli; and their accuracy.

It lives above `neurons` and `generators` because it needs both: the networks and the corpus.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neurons.stimnet import build, normalise


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


def blur(images: torch.Tensor) -> torch.Tensor:
    """Images (n, 3, H, W) blurred by the 3x3 binomial kernel, edges replicated."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=images.device)
    kernel = (kernel[:, None] * kernel[None] / 16).expand(3, 1, 3, 3).contiguous()
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)


def colour_wash(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A slow colour field for each of `images` (n, 3, H, W), N(0, 1) at 4x4 points interpolated between."""
    field = torch.randn(len(images), 3, 4, 4, generator=gen)
    return F.interpolate(field, size=images.shape[-2:], mode="bilinear").to(images.device)


def corrupt(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1] with a generator's nuisances, each drawn per image at a random
    strength: pixel noise (sd up to 0.08, half the images), a slow colour wash (up to 0.2, half),
    a blur (a third) and a loss of contrast towards the image's mean (down to 0.5, a third)."""
    n = len(images)

    def drawn(*shape: int) -> torch.Tensor:  # from `gen`, a CPU generator, whatever the images' device
        return torch.rand(*shape, generator=gen).to(images.device)

    def chosen(share: float) -> torch.Tensor:
        return (drawn(n, 1, 1, 1) < share).float()

    def strength(high: float, low: float = 0.0) -> torch.Tensor:
        return low + (high - low) * drawn(n, 1, 1, 1)

    images = torch.lerp(images, blur(images), chosen(1 / 3))
    mean = images.mean((1, 2, 3), keepdim=True)
    images = torch.lerp(images, mean, chosen(1 / 3) * (1 - strength(1.0, 0.5)))
    wash, noise = colour_wash(images, gen), torch.randn(images.shape, generator=gen).to(images.device)
    images = images + chosen(0.5) * strength(0.2) * wash + chosen(0.5) * strength(0.08) * noise
    return images.clamp(0, 1)


def train_classifier(architecture: str, steps: int, seed: int, corpus_seed: int, batch_size: int = 128,
                     lr: float = 2e-3, robust_radius: float = 0.0, corruptions: bool = False,
                     progress: bool = True) -> nn.Sequential:
    """Train `architecture` to name the family of corpus stimuli (AdamW, cosine schedule, bf16 where native).

    With `robust_radius` > 0 it is trained on the worst images within that L2 distance of each
    stimulus instead (adversarial training): its input gradients then look like the features it
    names (Santurkar et al. 2019), which a guide of a generator needs. With `corruptions` it is
    trained on `corrupt`ed stimuli: trained on clean renderings alone, a classifier names a grating
    under faint pixel noise or a slow colour wash as a texture, and so cannot judge a generator's
    images, which always carry some."""
    from tqdm.auto import tqdm

    from evolver_common import autocast, resolve_precision, seeded_init
    from generators.corpus import FAMILIES, corpus

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    with seeded_init(seed):
        network = build(architecture, len(FAMILIES)).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    stream = corpus(corpus_seed, batch_size)
    nuisances = torch.Generator().manual_seed(corpus_seed + 1)
    network.train()
    bar = tqdm(range(steps), desc=f"train {architecture}", disable=not progress)
    for _ in bar:
        batch = next(stream)
        images = corrupt(batch.images, nuisances) if corruptions else batch.images
        images = images.contiguous(memory_format=torch.channels_last)
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
