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


class _Draw:
    """Random draws for m images of one family, and the pixel grid they are drawn on."""

    def __init__(self, m: int, size: int, gen: torch.Generator):
        self.m, self.gen = m, gen
        axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        self.y, self.x = torch.meshgrid(axis, axis, indexing="ij")  # (S, S)
        self.edge = 2.0 / size  # one pixel, for anti-aliased edges

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(self.m, generator=self.gen)

    def colours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A background and a foreground colour (m, 3, 1, 1) that differ visibly."""
        bg = 0.15 + 0.7 * torch.rand(self.m, 3, generator=self.gen)
        fg = torch.rand(self.m, 3, generator=self.gen)
        close = (fg - bg).norm(dim=1) < 0.45
        fg[close] = (1 - bg[close]).round()  # the opposite corner of the colour cube
        return bg[:, :, None, None], fg[:, :, None, None]

    def frame(self, cx: torch.Tensor, cy: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates (m, S, S) along and across the orientation `theta` (radians), centred at (cx, cy)."""
        dx, dy = self.x - cx[:, None, None], self.y - cy[:, None, None]
        c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        return dx * c + dy * s, -dx * s + dy * c

    def fill(self, distance: torch.Tensor) -> torch.Tensor:
        """Anti-aliased inside-ness (m, 1, S, S) of a signed distance (negative inside)."""
        return torch.sigmoid(-distance / (0.5 * self.edge))[:, None]


def _blend(bg: torch.Tensor, fg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return bg + (fg - bg) * alpha


def _grating(d: _Draw) -> tuple[torch.Tensor, dict]:
    theta, freq, phase, contrast = d.uniform(0, math.pi), d.uniform(1.5, 8), d.uniform(0, 2 * math.pi), d.uniform(0.5, 1)
    u, _ = d.frame(torch.zeros(d.m), torch.zeros(d.m), theta)
    wave = torch.sin(math.pi * freq[:, None, None] * u + phase[:, None, None])  # 2 units across = 1 image width
    bg, fg = d.colours()
    mean = (bg + fg) / 2
    images = mean + (fg - mean) * contrast[:, None, None, None] * wave[:, None]
    return images, dict(orientation=torch.rad2deg(theta), frequency=freq, phase=phase, contrast=contrast)


def _gabor(d: _Draw) -> tuple[torch.Tensor, dict]:
    theta, freq, phase, contrast = d.uniform(0, math.pi), d.uniform(2, 8), d.uniform(0, 2 * math.pi), d.uniform(0.6, 1)
    sigma, cx, cy = d.uniform(0.2, 0.4), d.uniform(-0.3, 0.3), d.uniform(-0.3, 0.3)
    u, v = d.frame(cx, cy, theta)
    envelope = torch.exp(-(u**2 + v**2) / (2 * sigma[:, None, None] ** 2))
    wave = torch.sin(math.pi * freq[:, None, None] * u + phase[:, None, None])
    bg, fg = d.colours()
    images = bg + (fg - bg) * (contrast[:, None, None] * envelope * wave)[:, None]
    return images, dict(orientation=torch.rad2deg(theta), frequency=freq, phase=phase, contrast=contrast,
                        size=sigma, x=cx, y=cy)


def _bar(d: _Draw) -> tuple[torch.Tensor, dict]:
    theta, length, width = d.uniform(0, math.pi), d.uniform(0.8, 1.6), d.uniform(0.08, 0.22)
    cx, cy = d.uniform(-0.3, 0.3), d.uniform(-0.3, 0.3)
    # the bar's long axis runs across `theta`, so its orientation matches a grating's stripes
    u, v = d.frame(cx, cy, theta)
    distance = torch.maximum(u.abs() - width[:, None, None] / 2, v.abs() - length[:, None, None] / 2)
    bg, fg = d.colours()
    return _blend(bg, fg, d.fill(distance)), dict(orientation=torch.rad2deg(theta), size=length, x=cx, y=cy)


def _blob(d: _Draw) -> tuple[torch.Tensor, dict]:
    sigma, cx, cy = d.uniform(0.12, 0.4), d.uniform(-0.4, 0.4), d.uniform(-0.4, 0.4)
    u, v = d.frame(cx, cy, torch.zeros(d.m))
    bg, fg = d.colours()
    alpha = torch.exp(-(u**2 + v**2) / (2 * sigma[:, None, None] ** 2))[:, None]
    return _blend(bg, fg, alpha), dict(size=sigma, x=cx, y=cy)


def _shape(distance: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], symmetry: float):
    """A filled shape family from its signed distance in the shape's own frame (size R)."""
    def draw(d: _Draw) -> tuple[torch.Tensor, dict]:
        radius, theta = d.uniform(0.3, 0.62), d.uniform(0, symmetry)
        cx, cy = d.uniform(-0.3, 0.3), d.uniform(-0.3, 0.3)
        u, v = d.frame(cx, cy, theta)
        bg, fg = d.colours()
        return _blend(bg, fg, d.fill(distance(u, v, radius[:, None, None]))), dict(
            orientation=torch.rad2deg(theta), size=radius, x=cx, y=cy)
    return draw


def _circle(u, v, r):
    return torch.sqrt(u**2 + v**2) - r


def _square(u, v, r):
    return torch.maximum(u.abs(), v.abs()) - 0.75 * r


def _triangle(u, v, r):
    normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    return torch.stack([u * nx + v * ny for nx, ny in normals]).amax(0) - 0.5 * r


def _star(u, v, r):
    angle = torch.atan2(v, u)
    boundary = r * (0.42 + 0.58 * ((1 + torch.cos(5 * angle)) / 2) ** 2)
    return torch.sqrt(u**2 + v**2) - boundary


def _cross(u, v, r):
    arm = 0.28 * r
    return torch.minimum(torch.maximum(u.abs() - r, v.abs() - arm), torch.maximum(u.abs() - arm, v.abs() - r))


def _checkerboard(d: _Draw) -> tuple[torch.Tensor, dict]:
    theta, freq, phase = d.uniform(0, math.pi / 2), d.uniform(2, 8), d.uniform(0, 2 * math.pi)
    u, v = d.frame(torch.zeros(d.m), torch.zeros(d.m), theta)
    f = math.pi * freq[:, None, None]
    product = torch.sin(f * u + phase[:, None, None]) * torch.sin(f * v)
    alpha = torch.sigmoid(product / 0.08)[:, None]
    bg, fg = d.colours()
    return _blend(bg, fg, alpha), dict(orientation=torch.rad2deg(theta), frequency=freq, phase=phase)


def _pink_noise(d: _Draw) -> tuple[torch.Tensor, dict]:
    size = d.x.shape[0]
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
    return _blend(bg, fg, alpha), dict(frequency=exponent)


def _dead_leaves(d: _Draw, leaves: int = 40) -> tuple[torch.Tensor, dict]:
    bg, _ = d.colours()
    images = bg.expand(-1, -1, *d.x.shape).clone()
    for _ in range(leaves):
        # radii from a power law, as in the dead-leaves model of natural images
        radius = 0.06 * (1 - d.uniform(0, 0.97)) ** -0.7
        cx, cy = d.uniform(-1.1, 1.1), d.uniform(-1.1, 1.1)
        u, v = d.frame(cx, cy, torch.zeros(d.m))
        colour = torch.rand(d.m, 3, 1, 1, generator=d.gen)
        images = _blend(images, colour, d.fill(torch.sqrt(u**2 + v**2) - radius[:, None, None]))
    return images, {}


_RENDERERS: dict[str, Callable[[_Draw], tuple[torch.Tensor, dict]]] = {
    "grating": _grating, "gabor": _gabor, "bar": _bar, "blob": _blob,
    "circle": _shape(_circle, 2 * math.pi), "square": _shape(_square, math.pi / 2),
    "triangle": _shape(_triangle, 2 * math.pi / 3), "star": _shape(_star, 2 * math.pi / 5),
    "cross": _shape(_cross, math.pi / 2), "checkerboard": _checkerboard,
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
