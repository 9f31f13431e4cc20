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
