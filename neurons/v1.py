"""Model V1 cells whose preferred stimulus is known analytically: a check on any evolution.

Spec: `v1:simple|complex[:NAME=VALUE...]`, e.g. `v1:complex:ori=45:sf=6`, with

| name  | meaning                                                                 | default |
|-------|-------------------------------------------------------------------------|---------|
| ori   | preferred orientation in degrees: the direction in which the preferred grating's luminance varies (its Fourier orientation), image axes (x right, y down); 0 = vertical stripes, 90 = horizontal stripes | 0 |
| sf    | preferred spatial frequency, cycles per image width                    | 6       |
| x, y  | receptive-field centre, fractions of the image's width and height      | 0.5     |
| size  | s.d. of the Gaussian envelope, fraction of the image width             | 0.15    |
| phase | simple cells: phase of the carrier in degrees (0 = bright centre)      | 0       |

A simple cell is a Gabor filter on the luminance contrast (luminance minus its mean); its
response is the linear drive, signed (negative = the stimulus suppresses it), before any
output nonlinearity, so that minimising finds the anti-preferred stimulus too. A complex cell
is the energy model (Adelson & Bergen 1985): the length of the responses of a quadrature pair
(phases 0 and 90°), invariant to the grating's phase and never negative. Filters are
normalised to unit L1 norm, so responses are weighted luminance contrasts in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evolver_common import BadInput, resolve_device
from evolver_common.specs import annotations, parse_spec, typed_options
from neurons.base import Neuron

KINDS = ("simple", "complex")
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601
V1_HELP = ("A model V1 cell is written v1:simple|complex[:NAME=VALUE...], e.g. v1:complex:ori=45:sf=6, with "
           "NAME one of ori (degrees, 0 = vertical stripes), sf (cycles per image width), x and y "
           "(receptive-field centre, 0–1), size (envelope s.d., fraction of the width, > 0) and phase (degrees).")


@dataclass(frozen=True)
class Tuning:
    """A V1 cell's preferences; units as in the module docstring."""

    ori: float = 0.0
    sf: float = 6.0
    x: float = 0.5
    y: float = 0.5
    size: float = 0.15
    phase: float = 0.0


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Luminance (n, H, W) of RGB `images` (n, 3, H, W) in [0, 1]."""
    return torch.einsum("nchw,c->nhw", images.float(), torch.tensor(LUMINANCE, device=images.device))


def gabor(tuning: Tuning, height: int, width: int, phase: float | None = None) -> torch.Tensor:
    """The Gabor filter (H, W) of `tuning` on an image of that size, unit L1 norm; `phase` in degrees
    overrides the tuning's."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    dx, dy = xs / width - tuning.x, (ys / height - tuning.y) * height / width  # in image widths
    theta = math.radians(tuning.ori)
    along = dx * math.cos(theta) + dy * math.sin(theta)
    envelope = torch.exp(-(dx**2 + dy**2) / (2 * tuning.size**2))
    carrier = torch.cos(2 * math.pi * tuning.sf * along + math.radians(tuning.phase if phase is None else phase))
    kernel = envelope * carrier
    return kernel / kernel.abs().sum()


class V1Cell(Neuron):
    """A model simple or complex cell (see the module docstring); differentiable."""

    def __init__(self, spec: str, weights: str | Path = "pretrained", device: str = "auto", precision: str = "auto"):
        """`weights` and `precision` are accepted like every neuron's and unused: the cell is a formula in fp32."""
        self.kind, self.tuning = self.parse(spec)
        self.spec = spec.strip()
        self.weights = "analytic (no weights)"
        self.device = resolve_device(device)
        self._filters: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def parse(spec: str) -> tuple[str, Tuning]:
        parsed = parse_spec(spec, V1_HELP)
        if parsed.kind != "v1" or len(parsed.address) != 1 or parsed.address[0] not in KINDS:
            raise BadInput(f"Malformed V1 cell spec '{spec}'. {V1_HELP}")
        tuning = Tuning(**typed_options(parsed.options, annotations(Tuning), f"V1 cell spec '{spec}'", V1_HELP))
        if not (tuning.size > 0 and tuning.sf >= 0 and 0 <= tuning.x <= 1 and 0 <= tuning.y <= 1):
            raise BadInput(f"V1 cell spec '{spec}' is out of range. {V1_HELP}")
        return parsed.address[0], tuning

    def _pair(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """The cell's filters (k, H, W): the Gabor for a simple cell, the quadrature pair for a complex one."""
        if (height, width) not in self._filters:
            phases = [None] if self.kind == "simple" else [0.0, 90.0]
            self._filters[height, width] = torch.stack([gabor(self.tuning, height, width, p) for p in phases])
        return self._filters[height, width].to(device)

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        lum = luminance(images)
        contrast = lum - lum.mean(dim=(1, 2), keepdim=True)
        drive = torch.einsum("nhw,khw->nk", contrast, self._pair(*lum.shape[1:], lum.device))
        return drive[:, 0] if self.kind == "simple" else drive.norm(dim=1)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()
