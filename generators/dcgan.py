"""The classic DCGAN generator (Radford et al. 2016): 100-d code to 64x64 RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from evolver_common import (BadInput, apply_state_dict, autocast, load_state_file, resolve_device,
                            resolve_precision, seeded_init)
from generators.base import Generator


def dcgan_network(code_dim: int = 100, ngf: int = 64, channels: int = 3) -> nn.Sequential:
    """ConvTranspose2d 4/1/0 from 1x1 to 4x4, then 4/2/1 four times up to 64x64; Tanh out."""
    widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(code_dim, widths[0], 4, 1, 0, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(True),
    ]
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (Karras et al. 2018): one more feature map holding how
    much the images of a group of `group` differ, so that D can tell a collapsed batch from a real one."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group if n % self.group == 0 else n
        spread = x.float().view(g, n // g, c, h, w).std(0, unbiased=False).mean((1, 2, 3))  # (n / g,)
        return torch.cat([x, spread.repeat(g)[:, None, None, None].expand(n, 1, h, w).to(x.dtype)], 1)


def dcgan_discriminator(ndf: int = 64, channels: int = 3, batch_norm: bool = True,
                        minibatch_std: bool = False) -> nn.Sequential:
    """The classic DCGAN discriminator for 64x64 images: 4/2/1 convs with LeakyReLU(0.2), one logit out;
    optionally without batch norm (as SNGAN) and with a minibatch standard-deviation map before the last conv."""
    widths = [ndf, ndf * 2, ndf * 4, ndf * 8]
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(w_out) if batch_norm else nn.Identity(), nn.LeakyReLU(0.2, True)]
    if minibatch_std:
        layers.append(MinibatchStd())
    layers += [nn.Conv2d(widths[-1] + minibatch_std, 1, 4, 1, 0, bias=False), nn.Flatten(0)]
    return nn.Sequential(*layers)


def spectrally_normalise(network: nn.Module) -> None:
    """Put every conv's weight under spectral normalisation (Miyato et al. 2018), after its initialisation."""
    for m in network.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.utils.parametrizations.spectral_norm(m)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def calibrate_batch_norm(network: nn.Module, codes: np.ndarray) -> None:
    """Set batch-norm statistics from a batch of codes (n, 100), as training would.

    Untrained statistics (mean 0, var 1) against N(0, 0.02) weights shrink every layer's
    activity, and the images come out a flat grey; calibrated, random weights give
    full-contrast images whose features vary with the code. A moving average of trained
    weights needs the same: its statistics must be those of the averaged weights
    ("standing statistics", Brock et al. 2019), not an average of the live network's.
    """
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    device = next(network.parameters()).device
    with torch.no_grad():
        network.train()(torch.as_tensor(codes, device=device)[:, :, None, None])
    network.eval()


BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "dcgan.safetensors"


def weights_location() -> tuple[str, bool]:
    """Where 'pretrained' reads the weights, and whether they are there."""
    return str(BUNDLED_WEIGHTS), BUNDLED_WEIGHTS.is_file()


class DCGAN(Generator):
    """A DCGAN generator; by default the one trained on the procedural corpus that ships with evolver.

    Args:
        weights: 'pretrained' (the bundled weights, see weights/dcgan.json), 'random' (seeded,
            untrained) or the path of a state dict of `dcgan_network`.
        truncation: if set, `sample` redraws code values beyond +-truncation.
        weights_seed: the seed of the random weights.
        device, precision: see `evolver_common.compute`.
    """

    code_dim = 100
    image_size = 64

    def __init__(self, weights: str | Path = "pretrained", truncation: float | None = None,
                 weights_seed: int = 0, device: str = "auto", precision: str = "auto"):
        if truncation is not None and truncation <= 0:
            raise BadInput(f"DCGAN truncation must be positive (or unset), got {truncation}.")
        self.truncation = truncation
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        with seeded_init(weights_seed):
            self.network = dcgan_network(self.code_dim)
            dcgan_init(self.network)
        if str(weights) == "random":
            self.weights = f"random (seed {weights_seed}, untrained)"
            calibrate_batch_norm(self.network, self.sample(256, np.random.default_rng(weights_seed)))
        else:
            path = BUNDLED_WEIGHTS if str(weights) == "pretrained" else Path(weights)
            if str(weights) == "pretrained" and not path.is_file():
                raise BadInput(f"The bundled DCGAN weights are missing from this installation ({path}); reinstall "
                               "evolver, train your own with `evolver train-gan`, or use --generator-weights random.")
            apply_state_dict(self.network, load_state_file(path), source=str(path))
            self.weights = f"bundled {path.name}" if str(weights) == "pretrained" else str(path.resolve())
        self.network.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        codes = rng.standard_normal((n, self.code_dim))
        if self.truncation is not None:
            outside = np.abs(codes) > self.truncation
            while outside.any():
                codes[outside] = rng.standard_normal(outside.sum())
                outside = np.abs(codes) > self.truncation
        return codes.astype(np.float32)

    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            images = self.network(codes[:, :, None, None])
        return ((images.float() + 1) / 2).clamp(0, 1)
