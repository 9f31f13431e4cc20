"""White-box gradient ascent: Adam on the codes through a differentiable generator and neuron.

Not a black-box optimizer (a recorded neuron has no gradient) but the reference for what is
reachable: `evolver bench` divides by it. Each generation is one Adam step of every restart,
so it is charged the same images per generation as a black-box search of that population.

Feature visualisation (Lucid, Lucent) climbs the gradient of a randomly transformed image, so that what
it finds survives small shifts, zooms and turns, and may penalise what is not image-like (total variation,
distance to a blurred copy); a pixel or Fourier space needs these where a GAN's does not. They are
parameters here, off by default, and `preset=lucent` sets Lucent's `standard_transforms` (at 224 pixels:
jitter of 8 then 4 pixels on a 12-pixel grey pad, scales 0.9 to 1.1, rotations of up to 10°), as
fractions of the image. The transforms are drawn from the optimizer's own random stream, so a resumed run
draws the same ones; the responses it records are the untransformed images'.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from evolver.optimizers.base import Optimizer, Sampler
from evolver_common import BadInput


@dataclass
class GradientParams:
    """population: independent restarts. lr: Adam's step size, in code units. preset: 'none', or 'lucent'
    (Lucent's transforms, for the ones not given). jitter: the largest shift, a fraction of the image side on
    each axis; scale: the largest zoom in or out, a fraction; rotate: the largest turn, in degrees (each
    drawn uniformly for every image and step; revealed borders are grey, as Lucent's pad). tv: the weight of
    the image's total variation (mean |difference| of neighbouring pixels, in [0, 1] units) taken from the
    response; blur: the weight of its mean squared distance to its 3×3 box-blurred copy (Lucid's
    blur_input_each_step, as a mean)."""

    population: int = 10
    lr: float = 0.2
    preset: str = "none"
    jitter: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0
    tv: float = 0.0
    blur: float = 0.0


# Lucent's standard_transforms at its 224-pixel images: 7 + 3 pixels of jitter, scales 0.9-1.1, up to 10°
PRESETS = {"none": {}, "lucent": {"jitter": 10 / 224, "scale": 0.1, "rotate": 10.0}}


class GradientAscent(Optimizer):
    name = "gradient"
    Params = GradientParams
    needs_gradient: ClassVar[bool] = True
    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, code_dim: int, sample: Sampler, rng: np.random.Generator,
                 render: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 respond: Callable[[torch.Tensor], torch.Tensor] | None = None, **params: Any):
        super().__init__(code_dim, sample, rng, **params)
        if render is None or respond is None:
            raise BadInput("The gradient optimizer needs a differentiable generator and neuron (a model neuron).")
        self.render, self.respond = render, respond
        self.codes = np.asarray(sample(self.params.population, rng), dtype=np.float64)
        self.moments = {"m": np.zeros_like(self.codes), "v": np.zeros_like(self.codes), "step": 0}

    @classmethod
    def parse_params(cls, params: dict[str, Any]):
        preset = str(params.get("preset", "none"))
        if preset not in PRESETS:
            raise BadInput(f"Invalid parameters for optimizer 'gradient': preset={preset} (valid: "
                           f"{', '.join(PRESETS)}).")
        return super().parse_params({**PRESETS[preset], **params})

    @classmethod
    def check_params(cls, p: GradientParams) -> None:
        if p.population < 1 or not p.lr > 0 or not 0 <= p.jitter < 1 or not 0 <= p.scale < 1 \
                or not 0 <= p.rotate <= 180 or p.tv < 0 or p.blur < 0:
            raise BadInput("Invalid parameters for optimizer 'gradient': need population >= 1, lr > 0, jitter and "
                           f"scale in [0, 1), rotate in [0, 180] degrees, tv and blur >= 0; got {p}.")

    def _transform(self, images: torch.Tensor) -> torch.Tensor:
        """Each image (n, 3, H, W) shifted, zoomed and turned at random (none where all are 0), grey outside."""
        p = self.params
        if not (p.jitter or p.scale or p.rotate):
            return images
        n = len(images)
        shift = self.rng.uniform(-p.jitter, p.jitter, (n, 2)) * 2  # normalised coordinates span 2
        zoom = self.rng.uniform(1 - p.scale, 1 + p.scale, n)
        turn = np.deg2rad(self.rng.uniform(-p.rotate, p.rotate, n))
        cos, sin = np.cos(turn) / zoom, np.sin(turn) / zoom  # the output samples the input at A x + t
        theta = np.stack([np.stack([cos, -sin, -shift[:, 0]], 1), np.stack([sin, cos, -shift[:, 1]], 1)], 1)
        grid = F.affine_grid(torch.as_tensor(theta, dtype=images.dtype, device=images.device), list(images.shape),
                             align_corners=False)
        return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5

    def _penalty(self, images: torch.Tensor) -> torch.Tensor | float:
        """The regularisers of each image (n,), 0 where their weights are."""
        p, penalty = self.params, 0.0
        if p.tv:
            dy = (images[:, :, 1:] - images[:, :, :-1]).abs().mean((1, 2, 3))
            dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean((1, 2, 3))
            penalty = penalty + p.tv * (dx + dy)
        if p.blur:
            blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            penalty = penalty + p.blur * (images - blurred.detach()).pow(2).mean((1, 2, 3))
        return penalty

    def ask(self) -> np.ndarray:
        return self.codes.astype(np.float32)

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        x = torch.tensor(codes, dtype=torch.float32, requires_grad=True)
        images = self.render(x)
        (self.respond(self._transform(images)) - self._penalty(images)).sum().backward()
        grad = x.grad.double().cpu().numpy()
        m, b1, b2 = self.moments, *self.BETAS
        m["step"] += 1
        m["m"] = b1 * m["m"] + (1 - b1) * grad
        m["v"] = b2 * m["v"] + (1 - b2) * grad**2
        m_hat, v_hat = m["m"] / (1 - b1 ** m["step"]), m["v"] / (1 - b2 ** m["step"])
        self.codes = codes.astype(np.float64) + self.params.lr * m_hat / (np.sqrt(v_hat) + self.EPS)

    def state_dict(self) -> dict[str, Any]:
        return {"codes": self.codes.copy(), "moments": {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                          for k, v in self.moments.items()},
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.codes = np.asarray(state["codes"], dtype=np.float64)
        self.moments = dict(state["moments"])
        self.rng.bit_generator.state = state["rng"]
