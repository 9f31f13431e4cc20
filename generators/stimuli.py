"""A procedural stimulus corpus: the classic vocabulary of visual neuroscience, with labels.

Twelve families, each image drawn with random attributes (orientation, spatial frequency,
phase, contrast, size, position, colours): gratings and Gabor patches, bars, colour blobs,
five geometric shapes, checkerboards, 1/f noise and dead-leaves textures. Everything is
computed in batches with torch from a seed: the corpus is generated on the fly, never stored,
and `stimuli(n, seed)` returns the same images on every machine run.

Coordinates: x to the right and y downwards, both in [-1, 1] across the image; orientations
in degrees in [0, 180), 0 = stripes varying along x (vertical stripes); spatial frequency in
cycles per image width.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from evolver_common import BadInput, resolve_device
from generators.base import Choice, Generator

FAMILIES = ("grating", "gabor", "bar", "blob", "circle", "square", "triangle", "star", "cross",
            "checkerboard", "pink_noise", "dead_leaves")
ATTRIBUTES = ("orientation", "frequency", "phase", "contrast", "size", "x", "y")


@dataclass
class StimulusBatch:
    """images (n, 3, S, S) in [0, 1]; family (n,) indices into FAMILIES; attributes: name -> (n,), NaN where n/a."""

    images: torch.Tensor
    family: torch.Tensor
    attributes: dict[str, torch.Tensor]

    def labels(self) -> list[str]:
        return [FAMILIES[i] for i in self.family.tolist()]


class Grid:
    """The pixel grid of S×S images: x to the right, y downwards, both in [-1, 1] (pixel centres)."""

    def __init__(self, size: int, device: torch.device | str = "cpu"):
        axis = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size * 2 - 1
        self.y, self.x = torch.meshgrid(axis, axis, indexing="ij")  # (S, S)
        self.edge = 2.0 / size  # one pixel, for anti-aliased edges

    def frame(self, cx: torch.Tensor, cy: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates (m, S, S) along and across the orientation `theta` (radians), centred at (cx, cy)."""
        dx, dy = self.x - cx[:, None, None], self.y - cy[:, None, None]
        c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        return dx * c + dy * s, -dx * s + dy * c

    def fill(self, distance: torch.Tensor) -> torch.Tensor:
        """Anti-aliased inside-ness (m, S, S) of a signed distance (negative inside)."""
        return torch.sigmoid(-distance / (0.5 * self.edge))


class _Draw:
    """Random draws for m images of one family, and the pixel grid they are drawn on."""

    def __init__(self, m: int, size: int, gen: torch.Generator):
        self.m, self.gen, self.grid = m, gen, Grid(size)

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(self.m, generator=self.gen)

    def colours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A background and a foreground colour (m, 3) that differ visibly."""
        bg = 0.15 + 0.7 * torch.rand(self.m, 3, generator=self.gen)
        fg = torch.rand(self.m, 3, generator=self.gen)
        close = (fg - bg).norm(dim=1) < 0.45
        fg[close] = (1 - bg[close]).round()  # the opposite corner of the colour cube
        return bg, fg


def _blend(bg: torch.Tensor, fg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return bg + (fg - bg) * alpha


# ---------------------------------------------------------------------------------- parametric families
# Each parametric family is a corpus draw (its parameters from the corpus's ranges, in a fixed order of
# random draws) and a `mix`: how far each pixel goes from the background colour towards the foreground's,
# (m, S, S), from parameters in the units below; `stimuli` and the `stimuli` generator share the mixes.
#
#   orientation radians; frequency cycles per image width; phase radians; contrast, sharpness in [0, 1];
#   size (the family's extent: Gaussian s.d., bar length, shape radius) and x, y in image coordinates.
PARAMETERS = ("orientation", "frequency", "phase", "contrast", "size", "x", "y", "sharpness")
SQUARE_WAVE_GAIN = 8.0  # tanh(8 sin) is a square wave with soft edges


@dataclass(frozen=True)
class Family:
    draw: Callable[[_Draw], dict[str, torch.Tensor]]  # the corpus's parameters (m,) of each name it uses
    mix: Callable[[Frames], torch.Tensor]
    reported: tuple[str, ...]  # the attributes the corpus reports
    # the corpus's own arithmetic, where it is not bg + (fg - bg) mix: its images stay the same to the bit
    paint: Callable[[torch.Tensor, torch.Tensor, Frames], torch.Tensor] | None = None


class Frames:
    """One set of parameters (m,) on a grid, with the coordinate frames its families share, each computed once."""

    def __init__(self, grid: Grid, p: dict[str, torch.Tensor]):
        self.grid, self.p = grid, p

    def __getitem__(self, name: str) -> torch.Tensor:
        """A parameter as a column (m, 1, 1), to broadcast over the pixels."""
        return self.p[name][:, None, None]

    @functools.cached_property
    def centred(self) -> tuple[torch.Tensor, torch.Tensor]:
        zero = torch.zeros_like(self.p["orientation"])
        return self.grid.frame(zero, zero, self.p["orientation"])

    @functools.cached_property
    def placed(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grid.frame(self.p["x"], self.p["y"], self.p["orientation"])

    @functools.cached_property
    def radius2(self) -> torch.Tensor:
        u, v = self.placed
        return u**2 + v**2

    def wave(self, u: torch.Tensor) -> torch.Tensor:
        """The carrier (m, S, S) along `u`, in [-1, 1]: sine to square as sharpness goes 0 to 1."""
        sine = torch.sin(math.pi * self["frequency"] * u + self["phase"])  # 2 units = 1 image width
        if "sharpness" not in self.p:
            return sine
        square = torch.tanh(SQUARE_WAVE_GAIN * sine) / math.tanh(SQUARE_WAVE_GAIN)
        return sine + self["sharpness"] * (square - sine)


def _grating_mix(f: Frames) -> torch.Tensor:
    return 0.5 + 0.5 * f["contrast"] * f.wave(f.centred[0])


def _grating_paint(bg: torch.Tensor, fg: torch.Tensor, f: Frames) -> torch.Tensor:
    mean = (bg + fg) / 2
    return mean + (fg - mean) * f["contrast"][:, None] * f.wave(f.centred[0])[:, None]


def _gabor_mix(f: Frames) -> torch.Tensor:
    return f["contrast"] * torch.exp(-f.radius2 / (2 * f["size"] ** 2)) * f.wave(f.placed[0])


def _bar_mix(f: Frames) -> torch.Tensor:
    # the bar's long axis runs across `orientation`, so its orientation matches a grating's stripes; its
    # width is half a period of `frequency`
    u, v = f.placed
    half_width = f["width"] / 2 if "width" in f.p else 0.5 / f["frequency"]  # the corpus draws the width
    return f["contrast"] * f.grid.fill(torch.maximum(u.abs() - half_width, v.abs() - f["size"] / 2))


def _blob_mix(f: Frames) -> torch.Tensor:
    return f["contrast"] * torch.exp(-f.radius2 / (2 * f["size"] ** 2))  # round: its frame's rotation is moot


def _shape_mix(distance: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]):
    """A filled shape from its signed distance in the shape's own frame (radius `size`)."""
    def mix(f: Frames) -> torch.Tensor:
        return f["contrast"] * f.grid.fill(distance(*f.placed, f["size"]))
    return mix


def _checkerboard_mix(f: Frames) -> torch.Tensor:
    u, v = f.centred
    product = torch.sin(math.pi * f["frequency"] * u + f["phase"]) * torch.sin(math.pi * f["frequency"] * v)
    return f["contrast"] * torch.sigmoid(product / 0.08)


def _circle(u, v, r):
    return torch.sqrt(u**2 + v**2 + 1e-12) - r  # 1e-12: a finite gradient at the centre


def _square(u, v, r):
    return torch.maximum(u.abs(), v.abs()) - 0.75 * r


def _triangle(u, v, r):
    normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    return torch.stack([u * nx + v * ny for nx, ny in normals]).amax(0) - 0.5 * r


def _star(u, v, r):
    angle = torch.atan2(v, u)
    boundary = r * (0.42 + 0.58 * ((1 + torch.cos(5 * angle)) / 2) ** 2)
    return torch.sqrt(u**2 + v**2 + 1e-12) - boundary


def _cross(u, v, r):
    arm = 0.28 * r
    return torch.minimum(torch.maximum(u.abs() - r, v.abs() - arm), torch.maximum(u.abs() - arm, v.abs() - r))


def _full(d: _Draw) -> torch.Tensor:
    return torch.ones(d.m)


def _draw_grating(d: _Draw) -> dict:
    theta, freq, phase, contrast = d.uniform(0, math.pi), d.uniform(1.5, 8), d.uniform(0, 2 * math.pi), d.uniform(0.5, 1)
    return dict(orientation=theta, frequency=freq, phase=phase, contrast=contrast)


def _draw_gabor(d: _Draw) -> dict:
    theta, freq, phase, contrast = d.uniform(0, math.pi), d.uniform(2, 8), d.uniform(0, 2 * math.pi), d.uniform(0.6, 1)
    sigma, cx, cy = d.uniform(0.2, 0.4), d.uniform(-0.3, 0.3), d.uniform(-0.3, 0.3)
    return dict(orientation=theta, frequency=freq, phase=phase, contrast=contrast, size=sigma, x=cx, y=cy)


def _draw_bar(d: _Draw) -> dict:
    theta, length, width = d.uniform(0, math.pi), d.uniform(0.8, 1.6), d.uniform(0.08, 0.22)
    cx, cy = d.uniform(-0.3, 0.3), d.uniform(-0.3, 0.3)
    return dict(orientation=theta, size=length, frequency=1 / width, width=width, x=cx, y=cy, contrast=_full(d))


def _draw_blob(d: _Draw) -> dict:
    sigma, cx, cy = d.uniform(0.12, 0.4), d.uniform(-0.4, 0.4), d.uniform(-0.4, 0.4)
    return dict(size=sigma, x=cx, y=cy, contrast=_full(d), orientation=torch.zeros(d.m))


def _draw_shape(symmetry: float):
    def draw(d: _Draw) -> dict:
        radius, theta = d.uniform(0.3, 0.62), d.uniform(0, symmetry)
        cx, cy = d.uniform(-0.3, 0.3), d.uniform(-0.3, 0.3)
        return dict(size=radius, orientation=theta, x=cx, y=cy, contrast=_full(d))
    return draw


def _draw_checkerboard(d: _Draw) -> dict:
    theta, freq, phase = d.uniform(0, math.pi / 2), d.uniform(2, 8), d.uniform(0, 2 * math.pi)
    return dict(orientation=theta, frequency=freq, phase=phase, contrast=_full(d))


_SHAPE_REPORT = ("orientation", "size", "x", "y")
PARAMETRIC: dict[str, Family] = {
    "grating": Family(_draw_grating, _grating_mix, ("orientation", "frequency", "phase", "contrast"), _grating_paint),
    "gabor": Family(_draw_gabor, _gabor_mix, ("orientation", "frequency", "phase", "contrast", "size", "x", "y")),
    "bar": Family(_draw_bar, _bar_mix, _SHAPE_REPORT),
    "blob": Family(_draw_blob, _blob_mix, ("size", "x", "y")),
    "circle": Family(_draw_shape(2 * math.pi), _shape_mix(_circle), _SHAPE_REPORT),
    "square": Family(_draw_shape(math.pi / 2), _shape_mix(_square), _SHAPE_REPORT),
    "triangle": Family(_draw_shape(2 * math.pi / 3), _shape_mix(_triangle), _SHAPE_REPORT),
    "star": Family(_draw_shape(2 * math.pi / 5), _shape_mix(_star), _SHAPE_REPORT),
    "cross": Family(_draw_shape(math.pi / 2), _shape_mix(_cross), _SHAPE_REPORT),
    "checkerboard": Family(_draw_checkerboard, _checkerboard_mix, ("orientation", "frequency", "phase")),
}


def _parametric(family: Family):
    """The corpus renderer of a parametric family: its draw, then colours, then its mix."""
    def draw(d: _Draw) -> tuple[torch.Tensor, dict]:
        p = family.draw(d)
        bg, fg = d.colours()
        bg, fg, frames = bg[:, :, None, None], fg[:, :, None, None], Frames(d.grid, p)
        images = family.paint(bg, fg, frames) if family.paint else _blend(bg, fg, family.mix(frames)[:, None])
        reported = {name: torch.rad2deg(p[name]) if name == "orientation" else p[name] for name in family.reported}
        return images, reported
    return draw


# ------------------------------------------------------------------------------------------------ textures

def _pink_noise(d: _Draw) -> tuple[torch.Tensor, dict]:
    size = d.grid.x.shape[0]
    exponent = d.uniform(1.0, 2.0)
    noise = torch.randn(d.m, size, size, generator=d.gen)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    radius = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)
    spectrum = torch.fft.rfft2(noise) / radius[None] ** exponent[:, None, None]
    field = torch.fft.irfft2(spectrum, s=(size, size))
    field = (field - field.mean(dim=(1, 2), keepdim=True)) / field.std(dim=(1, 2), keepdim=True)
    alpha = torch.sigmoid(1.5 * field)[:, None]
    bg, fg = d.colours()
    return _blend(bg[:, :, None, None], fg[:, :, None, None], alpha), dict(frequency=exponent)


def _dead_leaves(d: _Draw, leaves: int = 40) -> tuple[torch.Tensor, dict]:
    bg, _ = d.colours()
    images = bg[:, :, None, None].expand(-1, -1, *d.grid.x.shape).clone()
    for _ in range(leaves):
        # radii from a power law, as in the dead-leaves model of natural images
        radius = 0.06 * (1 - d.uniform(0, 0.97)) ** -0.7
        cx, cy = d.uniform(-1.1, 1.1), d.uniform(-1.1, 1.1)
        u, v = d.grid.frame(cx, cy, torch.zeros(d.m))
        colour = torch.rand(d.m, 3, 1, 1, generator=d.gen)
        images = _blend(images, colour, d.grid.fill(torch.sqrt(u**2 + v**2) - radius[:, None, None])[:, None])
    return images, {}


_RENDERERS: dict[str, Callable[[_Draw], tuple[torch.Tensor, dict]]] = {
    **{name: _parametric(family) for name, family in PARAMETRIC.items()},
    "pink_noise": _pink_noise, "dead_leaves": _dead_leaves,
}


def _torch_generator(*seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> 1))


def stimuli(n: int, seed: int, size: int = 64, families: tuple[str, ...] = FAMILIES) -> StimulusBatch:
    """`n` stimuli from the families, in equal shares and shuffled, deterministic in `seed`."""
    gen = _torch_generator(seed)
    family = torch.tensor([FAMILIES.index(f) for f in families])[torch.randperm(n, generator=gen) % len(families)]
    images = torch.empty(n, 3, size, size)
    attributes = {name: torch.full((n,), float("nan")) for name in ATTRIBUTES}
    for index in family.unique().tolist():
        rows = torch.nonzero(family == index).squeeze(1)
        drawn, values = _RENDERERS[FAMILIES[index]](_Draw(len(rows), size, gen))
        images[rows] = drawn.clamp(0, 1)
        for name, value in values.items():
            attributes[name][rows] = value.float()
    return StimulusBatch(images, family, attributes)


def corpus(seed: int, batch_size: int, size: int = 64, families: tuple[str, ...] = FAMILIES,
           start: int = 0) -> Iterator[StimulusBatch]:
    """An endless stream of batches from batch `start` on; batch k is `stimuli(batch_size, (seed, k))`,
    so any batch can be redrawn and a resumed training starts where it stopped without replaying."""
    for k in itertools.count(start):
        yield corpus_batch(seed, batch_size, k, size, families)


def corpus_batch(seed: int, batch_size: int, k: int, size: int = 64,
                 families: tuple[str, ...] = FAMILIES) -> StimulusBatch:
    """Batch `k` of `corpus(seed, batch_size)`, drawn on its own."""
    return stimuli(batch_size, int(np.random.SeedSequence((seed, k)).generate_state(1)[0]), size, families)


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
