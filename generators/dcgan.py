"""The classic DCGAN generator (Radford et al. 2016): 100-d code to 64x64 RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.nn import functional as F

from evolver_common import (BadInput, apply_state_dict, autocast, load_state_file, resolve_device,
                            resolve_precision, seeded_init)
from evolver_common.state_files import file_weights
from generators.base import Choice, Generator


NOISE_DIM = 100
# A conditional DCGAN's class inputs are drawn as this much on the chosen class's logit plus N(0, 1)
# on every logit, then softmaxed: mostly one class (p ~ 0.8), with the mixtures evolution will visit.
CLASS_LOGIT = 4.0
# The class weights (summing to 1) enter the network scaled to the noise's norm, sqrt(100): at a
# tenth of it, class inputs learnt from zero (a warm start) stayed too faint to shape the images.
CLASS_INPUT_NORM = 10.0


def dcgan_network(classes: int = 0, ngf: int = 64, channels: int = 3) -> nn.Sequential:
    """ConvTranspose2d 4/1/0 from 1x1 to 4x4, then 4/2/1 four times up to 64x64; Tanh out. Its input
    is 100 noise values and, for a conditional DCGAN (Mirza & Osindero 2014), `classes` class weights."""
    widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(NOISE_DIM + classes, widths[0], 4, 1, 0, bias=False),
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


def class_logits(family: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The class part of conditional codes: `noise` (n, classes) drawn N(0, 1), plus CLASS_LOGIT on
    each code's class `family` (n,)."""
    return noise + CLASS_LOGIT * F.one_hot(family, noise.shape[1]).to(noise.dtype)


def network_input(codes: torch.Tensor, classes: int) -> torch.Tensor:
    """What the network takes for codes (n, 100 + classes): the noise values as they are and the class
    logits softmaxed (times CLASS_INPUT_NORM), so that no code can ask for class weights the network
    never saw in training."""
    if not classes:
        return codes
    weights = CLASS_INPUT_NORM * codes[:, NOISE_DIM:].float().softmax(1)
    return torch.cat([codes[:, :NOISE_DIM], weights.to(codes.dtype)], 1)


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


def calibrate_batch_norm(network: nn.Module, inputs: np.ndarray | torch.Tensor) -> None:
    """Set batch-norm statistics from a batch of network inputs (n, 100 + classes), as training would.

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
        network.train()(torch.as_tensor(inputs, device=device)[:, :, None, None])
    network.eval()


BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "dcgan.safetensors"


def weights_location() -> tuple[str, bool]:
    """Where 'pretrained' reads the weights, and whether they are there."""
    return str(BUNDLED_WEIGHTS), BUNDLED_WEIGHTS.is_file()


def bundled_code_dim() -> int:
    """The code length of the bundled weights (100, plus one per class of a conditional DCGAN), read
    from the file's header without loading the weights; 100 when they are missing or unreadable
    (loading them then says what is wrong)."""
    try:
        with safe_open(str(BUNDLED_WEIGHTS), "pt") as weights:
            return weights.get_slice("0.weight").get_shape()[0]
    except (OSError, SafetensorError):
        return NOISE_DIM


class DCGAN(Generator):
    """A DCGAN generator; by default the one trained on the procedural corpus that ships with evolver.

    A code is 100 noise values, N(0, 1), then for a conditional DCGAN (one whose first layer takes
    more than 100 inputs) one logit per class, softmaxed into the class weights the network sees.

    Args:
        weights: 'pretrained' (the bundled weights, see weights/dcgan.json), 'random' (seeded,
            untrained, unconditional) or the path of a state dict of `dcgan_network`.
        truncation: if set, `sample` redraws noise values beyond +-truncation.
        weights_seed: the seed of the random weights.
        device, precision: see `evolver_common.compute`.
    """

    image_size = 64

    def __init__(self, weights: str | Path = "pretrained", truncation: float | None = None,
                 weights_seed: int = 0, device: str = "auto", precision: str = "auto"):
        if truncation is not None and truncation <= 0:
            raise BadInput(f"DCGAN truncation must be positive (or unset), got {truncation}.")
        self.truncation = truncation
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        state = None if str(weights) == "random" else load_state_file(self._path(weights))
        # a first layer narrower than 100 inputs is not a DCGAN's: apply_state_dict says so below
        self.classes = max(0, state["0.weight"].shape[0] - NOISE_DIM) if state and "0.weight" in state else 0
        self.code_dim = NOISE_DIM + self.classes
        self.choice = Choice(NOISE_DIM, self.classes) if self.classes else None
        with seeded_init(weights_seed):
            self.network = dcgan_network(self.classes)
            dcgan_init(self.network)
        if state is None:
            self.weights = f"random (seed {weights_seed}, untrained)"
            calibrate_batch_norm(self.network, self.sample(256, np.random.default_rng(weights_seed)))
        else:
            path = self._path(weights)
            apply_state_dict(self.network, state, source=str(path))
            self.weights = f"bundled {path.name}" if str(weights) == "pretrained" else file_weights(path, self.network)
        self.network.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    @staticmethod
    def _path(weights: str | Path) -> Path:
        if str(weights) != "pretrained":
            return Path(weights)
        if not BUNDLED_WEIGHTS.is_file():
            raise BadInput(f"The bundled DCGAN weights are missing from this installation ({BUNDLED_WEIGHTS}); "
                           "reinstall evolver, train your own with `evolver train-gan`, or use "
                           "--generator-weights random.")
        return BUNDLED_WEIGHTS

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Noise values N(0, 1) (redrawn beyond the truncation), then class logits: CLASS_LOGIT on a
        class drawn uniformly, plus N(0, 1)."""
        codes = rng.standard_normal((n, NOISE_DIM))
        if self.truncation is not None:
            outside = np.abs(codes) > self.truncation
            while outside.any():
                codes[outside] = rng.standard_normal(outside.sum())
                outside = np.abs(codes) > self.truncation
        if self.classes:
            family = torch.as_tensor(rng.integers(self.classes, size=n))
            logits = class_logits(family, torch.as_tensor(rng.standard_normal((n, self.classes))))
            codes = np.concatenate([codes, logits.numpy()], 1)
        return codes.astype(np.float32)

    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            images = self.network(network_input(codes, self.classes)[:, :, None, None])
        return ((images.float() + 1) / 2).clamp(0, 1)
