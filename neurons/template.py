"""A template neuron: responds with an image's similarity to a target image, so evolving it
reconstructs the target (the "image reconstruction" use of closed-loop tools).

Spec: `template:IMAGE[:MODEL:LAYER]`, e.g. `template:face.png` (pixel space) or
`template:face.png:resnet18:layer3` (the layer's feature space; `--weights` applies to MODEL).
The response is the Pearson correlation, in [-1, 1], between the image's and the target's
representations: RGB pixels at the image's size (the target is resized to it), or the layer's
whole activation map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from evolver_common import BadInput
from evolver_common.images import read_image, resize
from evolver_common.specs import parse_spec
from neurons.base import Neuron
from neurons.cnn import ModelReader

TEMPLATE_HELP = ("A template neuron is written template:IMAGE for pixel similarity or template:IMAGE:MODEL:LAYER "
                 "for similarity in a CNN layer, e.g. template:target.png:resnet18:layer3.")


def correlation(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of `features` (n, d) with `target` (d,): (n,)."""
    a = features - features.mean(dim=1, keepdim=True)
    b = target - target.mean()
    return (a @ b) / (a.norm(dim=1) * b.norm()).clamp_min(1e-12)


class Template(Neuron):
    """Similarity to a target image (see the module docstring); differentiable."""

    def __init__(self, spec: str, weights: str | Path = "pretrained", device: str = "auto", precision: str = "auto"):
        path, model_layer = self.parse(spec)
        self.spec = spec.strip()
        self.target = read_image(path, f"The target image of '{spec}'")
        self.reader = ModelReader(model_layer[0], [model_layer[1]], weights, device, precision) if model_layer else None
        if self.reader:
            self.weights, self.device, self.precision = self.reader.weights, self.reader.device, self.reader.precision
        else:
            self.weights = "pixels (no weights)"
        self._targets: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def parse(spec: str) -> tuple[str, list[str] | None]:
        """(IMAGE path, [MODEL, LAYER] or None) of a template spec."""
        parsed = parse_spec(spec, TEMPLATE_HELP, address_fields=3)
        fields = parsed.address
        if parsed.kind != "template" or not fields or not all(fields) or parsed.options:
            raise BadInput(f"Malformed template spec '{spec}'. {TEMPLATE_HELP}")
        # A path may itself hold ':'; MODEL and LAYER are the last two fields when there are more.
        return (":".join(fields[:-2]), list(fields[-2:])) if len(fields) >= 3 else (parsed.location, None)

    def compile(self) -> None:
        if self.reader is not None:
            self.reader.compile()

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if self.reader is None:
            return images.float().flatten(1)
        (layer,) = self.reader.read(images).values()
        return layer.flatten(1)

    def _target_features(self, size: tuple[int, int]) -> torch.Tensor:
        if size not in self._targets:
            with torch.no_grad():
                self._targets[size] = self._features(resize(self.target, size))[0]
        return self._targets[size]

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        size = tuple(images.shape[-2:])
        features = self._features(images)
        return correlation(features, self._target_features(size).to(features.device))

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()


def reconstruction_quality(images: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """How well `images` (n, 3, H, W) in [0, 1] reproduce `target` (1, 3, H', W') in [0, 1] (resized
    to H, W): per image the pixel correlation and the SSIM (Wang et al. 2004, torchmetrics), each (n,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    images = images.float().cpu()
    target = resize(target.float().cpu(), tuple(images.shape[-2:]))
    pixel = correlation(images.flatten(1), target.flatten())
    structural = ssim(images, target.expand_as(images), data_range=1.0, reduction="none")
    return {"pixel_correlation": pixel.numpy(), "ssim": structural.numpy()}
