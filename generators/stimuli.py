"""The `stimuli` generator: the procedural corpus's parametric families (generators.corpus) as a space of
codes, one image a code, with the family chosen by a block of logits (a `Choice`)."""
from __future__ import annotations

import math

import numpy as np
import torch

from evolver_common import BadInput, resolve_device
from generators.base import Choice, Generator
from generators.corpus import PARAMETERS, PARAMETRIC, Frames, Grid, _Draw

# ------------------------------------------------------------------------------------------- generator

SETTINGS = ("orientation", "frequency", "phase", "contrast", "size", "x", "y", "sharpness", "opacity")
FAMILY_GAIN = 4.0  # family weights are softmax(4 × their code values): a code value of 2.5 is 99.96% one family
# Bounded settings: code value z maps to low + (high - low) (1 + sin z) / 2, smooth and without bounds to
# hit (a search that passes a bound comes back, as CMA-ES's mirrored boundaries), exact at both ends; z in
# [-π/2, π/2] covers the range once and the zero code is its middle. Frequency is mapped on a log scale.
RANGES = {"frequency": (math.log(0.5), math.log(16.0)), "contrast": (0.0, 1.0), "size": (0.03, 1.6),
          "x": (-1.0, 1.0), "y": (-1.0, 1.0), "sharpness": (0.0, 1.0), "opacity": (0.0, 1.0), "luma": (0.0, 1.0),
          "chroma": (-0.5, 0.5)}
# Colours are coded as luma and two chroma values (full-range YCbCr, BT.601): a neuron that sees luminance
# (a V1 cell, most of a CNN's early units) is then searched along one code value, not a diagonal of three.
YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])
# The zero code is a dark background, a bright foreground and a high contrast: a stimulus the search can
# improve on from the start, where mid-grey on mid-grey would show nothing. A quarter period shifts these.
SHIFTS = {"bg": -math.pi / 4, "fg": math.pi / 4, "contrast": math.pi / 4}


def _between(z: torch.Tensor, name: str, shift: float = 0.0) -> torch.Tensor:
    low, high = RANGES[name]
    return low + (high - low) * (1 + torch.sin(z + shift)) / 2


def _colour(code: torch.Tensor, shift: float) -> torch.Tensor:
    """RGB (n, 3) in [0, 1] of colour codes (n, 3): luma (shifted by `shift`), then blue and red chroma."""
    ycc = torch.stack([_between(code[:, 0], "luma", shift), _between(code[:, 1], "chroma"),
                       _between(code[:, 2], "chroma")], dim=1)
    return (ycc @ YCBCR_TO_RGB.to(code.device).T).clamp(0, 1)


def _colour_code(rgb: torch.Tensor, shift: float) -> torch.Tensor:
    """The colour code (n, 3) of RGB colours (n, 3) in [0, 1]."""
    ycc = rgb @ torch.linalg.inv(YCBCR_TO_RGB).T
    return torch.stack([_code_of(ycc[:, 0], "luma", shift), _code_of(ycc[:, 1], "chroma"),
                        _code_of(ycc[:, 2], "chroma")], dim=1)


def _code_of(value: torch.Tensor, name: str, shift: float = 0.0) -> torch.Tensor:
    """The code value within a half period of -shift that `_between` maps to `value`."""
    low, high = RANGES[name]
    return torch.arcsin((2 * (value - low) / (high - low) - 1).clamp(-1, 1)) - shift


class Stimuli(Generator):
    """The corpus's parametric families as a generator (`--generator stimuli[:layers=L][:families=F+G]`):
    each code is L layers of 25 values, drawn back to front, each over what is below it:

    - 10 family weights, softmaxed: grating, gabor, bar, blob, circle, square, triangle, star, cross,
      checkerboard (a mixture between families is a blend of their patterns);
    - orientation and phase (radians, the code value itself), frequency (0.5–16 cycles per image width,
      log scale), contrast, size (0.03–1.6, image coordinates: Gaussian s.d., bar length, shape radius),
      x and y (−1–1), sharpness (0 sine, 1 square wave) and opacity (layers after the first), each
      mapped from an unbounded code value (see RANGES);
    - background and foreground colours, each as luma and two chroma values (YCbCr, see YCBCR_TO_RGB), the
      first layer's background being the canvas.

    Rendering is torch throughout, differentiable, at any `image_size`. `sample` draws the corpus's
    distribution for the first layer (one family, its parameter ranges and colours); later layers are
    corpus stimuli laid over it at opacities between 0.25 and 0.75. The texture families (pink noise,
    dead leaves) are random fields, not parameters, and are not in this space.
    """

    def __init__(self, layers: int = 1, image_size: int = 64, families: str = "all", weights: str = "none",
                 device: str = "auto", precision: str = "auto"):
        """`families`: 'all', or some of PARAMETRIC joined by '+' (`stimuli:families=grating+gabor`), a smaller
        space with one family weight each (none for one family). `weights` and `precision` are accepted like
        every generator's and unused: the stimuli are formulas, rendered in fp32."""
        if not (isinstance(layers, int) and 1 <= layers <= 8):
            raise BadInput(f"stimuli:layers={layers}: the number of stimuli in one image is an integer from 1 to 8.")
        if not (isinstance(image_size, int) and 8 <= image_size <= 1024):
            raise BadInput(f"--image-size {image_size}: the stimuli generator draws square images of 8 to 1,024 "
                           "pixels a side.")
        if weights not in ("none", "pretrained", "random"):
            raise BadInput(f"The stimuli generator has no weights (it draws formulas); got --generator-weights "
                           f"{weights}.")
        self.families = tuple(PARAMETRIC) if families == "all" else tuple(str(families).split("+"))
        unknown = [f for f in self.families if f not in PARAMETRIC]
        if unknown or len(set(self.families)) != len(self.families):
            raise BadInput(f"stimuli:families={families}: name each family once, joined by '+', from "
                           f"{', '.join(PARAMETRIC)}; or all.")
        self.layers, self.image_size = layers, image_size
        self.per_layer = self.logits + len(SETTINGS) + 6
        self.code_dim = layers * self.per_layer
        self.choice = Choice(0, self.logits) if self.logits else None  # the first (back) layer's family
        self.weights = "analytic (no weights)"
        self.device = resolve_device(device)
        self.grid = Grid(image_size, self.device)

    @property
    def logits(self) -> int:
        """Family weights in a layer's code: none when there is one family."""
        return len(self.families) if len(self.families) > 1 else 0

    def describe(self) -> dict:
        return {**super().describe(), "layers": self.layers, "families": list(self.families)}

    def decode(self, codes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Each layer's settings from codes (n, code_dim): {'weights': (n, 10), setting: (n,), 'bg', 'fg': (n, 3)}
        in the units of PARAMETERS (orientation and phase in radians)."""
        layers = []
        for block in codes.reshape(len(codes), self.layers, self.per_layer).unbind(1):
            logits, settings, colours = block.split([self.logits, len(SETTINGS), 6], dim=1)
            weights = torch.softmax(FAMILY_GAIN * logits, dim=1) if self.logits else torch.ones(len(block), 1)
            layer = {"weights": weights,
                     "bg": _colour(colours[:, :3], SHIFTS["bg"]), "fg": _colour(colours[:, 3:], SHIFTS["fg"])}
            for name, z in zip(SETTINGS, settings.unbind(1)):
                layer[name] = z if name in ("orientation", "phase") else _between(z, name, SHIFTS.get(name, 0.0))
            layer["frequency"] = torch.exp(layer["frequency"])
            layers.append(layer)
        return layers

    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        canvas = None
        for layer in self.decode(codes.float()):
            frames, weights = Frames(self.grid, layer), layer["weights"]
            # a family no image of the batch draws (weight under 1e-6) is not computed: it changes nothing
            mix = sum(weights[:, k, None, None] * PARAMETRIC[family].mix(frames)
                      for k, family in enumerate(self.families) if weights[:, k].max() > 1e-6)
            if canvas is None:
                canvas = layer["bg"][:, :, None, None].expand(-1, -1, self.image_size, self.image_size)
            else:
                mix = mix * layer["opacity"][:, None, None]
            canvas = canvas + (layer["fg"][:, :, None, None] - canvas) * mix[:, None]
        return canvas.clamp(0, 1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        layers = [self._sample_layer(n, gen, rng, opacity=(0.25, 0.75) if k else (0.0, 1.0)) for k in range(self.layers)]
        return torch.cat(layers, dim=1).numpy()

    def _sample_layer(self, n: int, gen: torch.Generator, rng: np.random.Generator,
                      opacity: tuple[float, float]) -> torch.Tensor:
        """One layer's codes (n, 25): a corpus family each, with the corpus's parameters and colours."""
        family = rng.integers(len(self.families), size=n)
        settings = {name: torch.empty(n) for name in PARAMETERS}
        colours = torch.empty(n, 6)
        for k, family_name in enumerate(self.families):
            rows = torch.as_tensor(np.flatnonzero(family == k), dtype=torch.long)
            if len(rows):
                d = _Draw(len(rows), 8, gen)
                drawn = PARAMETRIC[family_name].draw(d)
                bg, fg = d.colours()
                for name in PARAMETERS:
                    settings[name][rows] = drawn[name] if name in drawn else float("nan")
                colours[rows] = torch.cat([bg, fg], dim=1)
        # settings a family does not use are drawn over their whole range (the search may need them)
        unused = {name: torch.isnan(value) for name, value in settings.items()}
        layer = encode(torch.as_tensor(family), settings, colours[:, :3], colours[:, 3:],
                       torch.empty(n).uniform_(*opacity, generator=gen), self.logits)
        free = torch.pi * (torch.rand(n, len(SETTINGS), generator=gen) - 0.5)
        columns = self.logits + torch.arange(len(PARAMETERS))
        for j, name in enumerate(PARAMETERS):
            if name != "sharpness":  # the corpus's waves are sines
                layer[unused[name], columns[j]] = free[unused[name], j]
        return layer


def encode(family: torch.Tensor, settings: dict[str, torch.Tensor], bg: torch.Tensor, fg: torch.Tensor,
           opacity: torch.Tensor, families: int = len(PARAMETRIC)) -> torch.Tensor:
    """The codes (n, families + 15) of one layer that render `family` (n,), indices into the generator's
    families (`families` of them; 0 for one family), with `settings` (n,) in the units of PARAMETERS (NaN: not
    used; sharpness NaN is a sine), colours (n, 3) and opacity (n,)."""
    n = len(family)
    logits = torch.zeros(n, families)
    if families:
        logits[torch.arange(n), family] = 2.5
    coded = []
    for name in SETTINGS:
        value = opacity if name == "opacity" else settings[name]
        if name in ("orientation", "phase"):
            coded.append(torch.nan_to_num(value))
        else:
            low = RANGES[name][0]
            value = torch.where(torch.isnan(value), torch.full_like(value, math.exp(low) if name == "frequency"
                                                                     else low), value)
            coded.append(_code_of(torch.log(value) if name == "frequency" else value, name, SHIFTS.get(name, 0.0)))
    return torch.cat([logits, torch.stack(coded, dim=1), _colour_code(bg, SHIFTS["bg"]),
                      _colour_code(fg, SHIFTS["fg"])], dim=1)
