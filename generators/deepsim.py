"""DeePSiM generators (Dosovitskiy & Brox 2016): images from CaffeNet features, 256x256.

The fc6 variant is the generator of Ponce et al. 2019, XDream and Wang & Ponce 2022. The
layout below matches the PyTorch state dicts the field shares (`upconvGAN_fc6.pt`: keys
`defc7.weight`, `deconv5.weight`, …), which load strictly. 'pretrained' takes them from
`$TORCH_HOME/checkpoints/upconvGAN_<variant>.pt` where the Ponce lab's tools save them, else from
the hub repository those tools download from (`binxu/DeePSim_DosovitskiyBrox2016`) through
huggingface_hub's cache, downloading on first use.

Initial codes: fc6 (and fc7) activations of natural images are rectified and sparse, so
`sample` draws max(0, N(0, code_scale^2)) per unit: half the units exactly zero, the others
half-normal. fc8 activations are pre-softmax class scores, which take both signs: plain
N(0, code_scale^2). pool5 codes are rectified like fc6.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evolver_common import (apply_state_dict, autocast, load_state_file, resolve_device,
                            resolve_precision, seeded_init)
from evolver_common.hub import HubFile, fetch
from evolver_common.state_files import file_weights
from generators.base import Generator

# CaffeNet's mean pixel, added back to the generator's BGR output (0-255 scale).
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
# The pixel standard deviation (0-255 scale) random weights are calibrated to, about a photograph's.
RANDOM_OUTPUT_STD = 60.0
# variant: (code shape, rectified codes?, head layers before the shared upsampling trunk)
VARIANTS = {
    "fc6": ((4096,), True, "fc"),
    "fc7": ((4096,), True, "fc"),
    "fc8": ((1000,), False, "fc"),
    "pool5": ((256, 6, 6), True, "conv"),
}


class _View(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, *self.shape)


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.3)


def deepsim_network(variant: str) -> nn.Sequential:
    """The generator of one DeePSiM variant, with the shared state-dict key names."""
    code_shape, _, head = VARIANTS[variant]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if head == "fc":
        layers["defc7"], layers["relu_defc7"] = nn.Linear(code_shape[0], 4096), _lrelu()
        layers["defc6"], layers["relu_defc6"] = nn.Linear(4096, 4096), _lrelu()
        layers["defc5"], layers["relu_defc5"] = nn.Linear(4096, 4096), _lrelu()
        layers["reshape"] = _View(256, 4, 4)
        trunk_in = 256
    else:
        layers["Rconv6"], layers["Rrelu6"] = nn.Conv2d(256, 512, 3, 1, 1), _lrelu()
        layers["Rconv7"], layers["Rrelu7"] = nn.Conv2d(512, 512, 3, 1, 1), _lrelu()
        layers["Rconv8"], layers["Rrelu8"] = nn.Conv2d(512, 512, 3, 1, 0), _lrelu()
        trunk_in = 512
    trunk = [("deconv5", trunk_in, 256, 4, 2), ("conv5_1", 256, 512, 3, 1), ("deconv4", 512, 256, 4, 2),
             ("conv4_1", 256, 256, 3, 1), ("deconv3", 256, 128, 4, 2), ("conv3_1", 128, 128, 3, 1),
             ("deconv2", 128, 64, 4, 2), ("deconv1", 64, 32, 4, 2), ("deconv0", 32, 3, 4, 2)]
    for name, c_in, c_out, kernel, stride in trunk:
        layers[name] = nn.ConvTranspose2d(c_in, c_out, kernel, stride, 1)
        if name != "deconv0":
            layers[f"relu_{name}"] = _lrelu()
    return nn.Sequential(layers)


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Some shared copies were saved from a Sequential nested one level deeper ("defc7.1.weight").
    return {k.replace(".1.", "."): v for k, v in state.items()}


def code_dim(variant: str) -> int:
    return int(np.prod(VARIANTS[variant][0]))


HUB_REPO = "binxu/DeePSim_DosovitskiyBrox2016"


def hub_file(variant: str) -> HubFile:
    return HubFile(HUB_REPO, f"upconvGAN_{variant}.pt")


def torch_home_weights(variant: str) -> Path:
    """$TORCH_HOME/checkpoints/upconvGAN_<variant>.pt, where the Ponce lab's tools save the weights."""
    return Path(torch.hub.get_dir()).parent / "checkpoints" / f"upconvGAN_{variant}.pt"


def weights_location(variant: str) -> tuple[str, bool]:
    """Where 'pretrained' finds the weights, and whether they are there (else they download on first use)."""
    for path in (torch_home_weights(variant), hub_file(variant).cached()):
        if path is not None and path.is_file():
            return str(path), True
    return f"{torch_home_weights(variant)}, else downloads on first use from {hub_file(variant)}", False


def pretrained_weights(variant: str) -> Path:
    """The weights file of 'pretrained': $TORCH_HOME's copy, else the hub's (downloaded if need be)."""
    local = torch_home_weights(variant)
    if local.is_file():
        return local
    return fetch(hub_file(variant), f"deepsim-{variant}", also_looked=[str(local)],
                 instead="Pass --generator-weights PATH (the upconvGAN_{variant}.pt state dict), or use "
                         "--generator-weights random.".format(variant=variant))


class DeePSiM(Generator):
    """A DeePSiM generator: `variant` fc6 | fc7 | fc8 | pool5.

    Args:
        weights: 'pretrained' ($TORCH_HOME/checkpoints/upconvGAN_<variant>.pt, else the hub's file,
            downloaded on first use), 'random' or a PATH.
        code_scale: the scale of `sample`'s initial codes (see the module docstring).
    """

    image_size = 256

    def __init__(self, variant: str = "fc6", weights: str | Path = "pretrained", code_scale: float = 1.0,
                 weights_seed: int = 0, device: str = "auto", precision: str = "auto"):
        self.variant = variant
        self.code_shape, self.rectified, _ = VARIANTS[variant]
        self.code_dim = code_dim(variant)
        self.code_scale = code_scale
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        with seeded_init(weights_seed):
            self.network = deepsim_network(variant)
        if str(weights) == "random":
            self.weights = f"random (seed {weights_seed}, untrained)"
            self._calibrate_random(self.sample(64, np.random.default_rng(weights_seed)))
        else:
            path = pretrained_weights(variant) if str(weights) == "pretrained" else Path(weights)
            apply_state_dict(self.network, _normalise_keys(load_state_file(path)), source=str(path))
            self.weights = file_weights(path, self.network)
        self.network.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        self.mean = torch.tensor(CAFFE_MEAN_BGR, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def _calibrate_random(self, codes: np.ndarray) -> None:
        """Rescale random weights layer by layer (LSUV, Mishkin & Matas 2016) so images vary with the code.

        PyTorch's default initialisation shrinks activity through the 12 layers and the biases
        take over: every code would render the same flat mean pixel. With zero biases and each
        layer scaled to unit output variance (the last to a photograph's pixel spread), random
        weights give images that change with the code.
        """
        x = torch.as_tensor(codes).view(-1, *self.code_shape)
        layers = [m for m in self.network if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
        for module in self.network:
            if module in layers:
                module.bias.zero_()
                target = RANDOM_OUTPUT_STD if module is layers[-1] else 1.0
                module.weight.mul_(target / module(x).std().clamp_min(1e-12))
            x = module(x)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        codes = rng.normal(0.0, self.code_scale, (n, self.code_dim))
        return (np.maximum(codes, 0) if self.rectified else codes).astype(np.float32)

    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            bgr = self.network(codes.view(-1, *self.code_shape)).float()
        return ((bgr + self.mean).flip(1) / 255.0).clamp(0, 1)
