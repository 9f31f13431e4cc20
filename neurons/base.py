"""The Neuron contract (DESIGN.md): images in, responses out."""
from __future__ import annotations

import abc

import numpy as np
import torch

from evolver_common import BadInput


class Neuron(abc.ABC):
    """Turns images into responses.

    Attributes:
        spec: the spec string the neuron was created from.
        weights: a short description of where its weights came from (recorded in runs).
        outputs: responses per image: 1, or k for a set of units read at once ((n, k) responses).
        device, precision: where and how it computes ('cpu' and 'fp32' for analytic model neurons).
        noisy: whether its responses vary from one presentation of an image to the next (a recorded
            neuron): a run then names its best image by re-showing a shortlist (evolver.retest).
    """

    spec: str
    weights: str
    outputs: int = 1
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    noisy: bool = False

    @classmethod
    def outputs_of(cls, spec: str) -> int:
        """Responses per image of the neuron `spec` would build, from its syntax alone (which it checks)."""
        cls.parse(spec)
        return 1

    @classmethod
    def parse(cls, spec: str):
        """The parsed spec; BadInput if malformed."""
        raise NotImplementedError

    @abc.abstractmethod
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Responses to `images` (n, 3, H, W) RGB in [0, 1], any H and W: (n,) or (n, outputs) float64,
        NaN where missing."""

    def respond(self, images: torch.Tensor, ids: list[str] | None = None) -> np.ndarray:
        """As `__call__`, with the run's id of each image, for neurons that pass them on (a rig)."""
        return self(images)

    def compile(self) -> None:
        """Compile the networks behind the neuron (torch.compile) for the rest of its life; a no-op for
        neurons without one. Called by runs asked for `--compile`."""

    def describe(self) -> dict:
        """What a run's record says of this neuron (config.json)."""
        return {"spec": self.spec, "weights": str(self.weights), "outputs": self.outputs}

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        """Responses (n,) as a tensor with autograd, for white-box references; not every neuron has one."""
        raise BadInput(f"The neuron {self.spec} is not differentiable: gradient ascent needs a model neuron.")
