"""The Generator contract (DESIGN.md): codes in, images out."""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Choice:
    """A block of code values that chooses among kinds of image (a stimulus family, a conditional GAN's
    class): `options` logits from `start`, the largest naming the kind an image mostly is."""

    start: int
    options: int

    def picked(self, codes: np.ndarray) -> np.ndarray:
        """The option each of `codes` (n, code_dim) mostly renders: (n,) ints in [0, options)."""
        return np.asarray(codes)[:, self.start:self.start + self.options].argmax(axis=1)

    def columns(self) -> np.ndarray:
        """The code columns of the block."""
        return np.arange(self.start, self.start + self.options)


class Generator(abc.ABC):
    """Turns latent codes into images.

    Attributes:
        code_dim: length of one latent code.
        image_size: side of the square images `render` returns, in pixels.
        weights: a short description of where the weights came from (recorded in runs).
        choice: the code's choice among kinds of image, where it has one (searches may race the kinds:
            `racing-cmaes`), else None.
    """

    code_dim: int
    image_size: int
    weights: str
    choice: Choice | None = None

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw `n` codes from the generator's initial distribution: (n, code_dim) float32."""

    device: torch.device

    @abc.abstractmethod
    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        """`render` with autograd: codes (n, code_dim) float32 on the generator's device -> images."""

    def describe(self) -> dict:
        """What a run's record says of this generator (config.json)."""
        return {"weights": str(self.weights), "code_dim": self.code_dim, "image_size": self.image_size}

    def render(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Images for `codes` (n, code_dim): (n, 3, H, W) float RGB in [0, 1] on the generator's device."""
        with torch.no_grad():
            return self.differentiable(torch.as_tensor(codes, dtype=torch.float32, device=self.device))
