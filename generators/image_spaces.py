"""Image spaces without a network: the code is the image itself, in pixels (`pixel`), in Lucid's decorrelated
Fourier basis (`fourier`), or as the phase of a fixed natural magnitude spectrum (`maco`).

XDream (Xiao & Kreiman 2020, Fig. 5) searched raw pixels beside DeePSiM; feature visualisation (Olah et al.
2017's Lucid, Lucent in torch) optimises a spectrum scaled by 1/f in a decorrelated colour space, and MACO
(Fel et al. 2023) keeps a natural image's magnitude spectrum fixed and optimises only its phase. Each space
draws a square image of `resolution` pixels a side, upsampled (bilinear) to `image_size`; its codes are
standard normal under `sample`, and every space ends in a sigmoid, so any code is a valid image.
"""
from __future__ import annotations

import abc
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from evolver_common import BadInput, resolve_device
from generators.base import Generator

# Lucid's colour correlation (the square root of ImageNet's colour covariance, by SVD), its columns scaled
# to a largest norm of 1: decorrelated colour values times its transpose are RGB (lucid/optvis/param/color.py)
COLOUR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_CORRELATION = COLOUR_CORRELATION / COLOUR_CORRELATION.norm(dim=0).max()
# recorrelation shrinks independent unit-variance channels to this standard deviation (its rows' RMS norm)
COLOUR_SHRINK = float(COLOUR_CORRELATION.pow(2).sum(dim=1).mean().sqrt())
DEFAULT_RESOLUTION = 16
# corpus images the MACO magnitude spectrum is the mean of (the procedural corpus's seed 0)
MAGNITUDE_IMAGES = 512


def recorrelate(image: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour images (n, 3, H, W) -> RGB logits, of standard deviation 1 where the decorrelated
    channels are independent with standard deviation 1 (Lucid's matrix, divided by COLOUR_SHRINK)."""
    return torch.einsum("nchw,dc->ndhw", image, COLOUR_CORRELATION.to(image)) / COLOUR_SHRINK


def _frequencies(resolution: int) -> torch.Tensor:
    """|f| (cycles per pixel) of each coefficient of a real 2-D FFT: (resolution, resolution // 2 + 1)."""
    fy = torch.fft.fftfreq(resolution)[:, None]
    fx = torch.fft.rfftfreq(resolution)[None, :]
    return torch.sqrt(fx**2 + fy**2)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image (its first axis) to mean 0 and standard deviation 1 over the rest."""
    dims = tuple(range(1, x.dim()))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-4)


class ImageSpace(Generator):
    """A code of `shape` per image drawn at `resolution` pixels, upsampled to `image_size`.

    `weights` and `precision` are accepted like every generator's and unused: these spaces have no network
    and render in fp32."""

    weights = "none (an image parameterisation)"
    kind: str
    formula: str  # the code's size in R, the resolution (what `evolver generators` shows)

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, image_size: int = 64, weights: str = "none",
                 device: str = "auto", precision: str = "auto"):
        if not (isinstance(resolution, int) and 4 <= resolution <= 256):
            raise BadInput(f"{self.kind}:resolution={resolution}: the side of the image the code draws is a whole "
                           "number of pixels from 4 to 256 (it is upsampled to the image size).")
        if not (isinstance(image_size, int) and resolution <= image_size <= 1024):
            raise BadInput(f"--image-size {image_size}: the {self.kind} generator draws square images from its "
                           f"resolution ({resolution}) to 1,024 pixels a side.")
        if weights not in ("none", "pretrained", "random"):
            raise BadInput(f"The {self.kind} generator has no weights (its code is the image); got "
                           f"--generator-weights {weights}.")
        self.resolution, self.image_size = resolution, image_size
        self.device = resolve_device(device)
        self.code_dim = math.prod(self.shape)

    @staticmethod
    @abc.abstractmethod
    def shape_at(resolution: int) -> tuple[int, ...]:
        """The shape of one code at `resolution`."""

    @property
    def shape(self) -> tuple[int, ...]:
        return self.shape_at(self.resolution)

    def describe(self) -> dict:
        return {**super().describe(), "resolution": self.resolution}

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.code_dim)).astype(np.float32)

    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        logits = self._logits(codes.float().reshape(len(codes), *self.shape))
        images = torch.sigmoid(logits)
        if self.resolution == self.image_size:
            return images
        return F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    @abc.abstractmethod
    def _logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (n, *shape) -> images before the sigmoid (n, 3, resolution, resolution)."""


class Pixel(ImageSpace):
    """`pixel[:resolution=R]`: the code is each pixel's RGB logit, 3·R² values (XDream's raw-pixel space, made
    unbounded by the sigmoid as Lucid's pixel parameterisation is)."""

    kind, formula = "pixel", "3·R²"

    @staticmethod
    def shape_at(resolution: int) -> tuple[int, ...]:
        return (3, resolution, resolution)

    def _logits(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


class Fourier(ImageSpace):
    """`fourier[:resolution=R][:decay=1]`: Lucid's `fft_image` with decorrelated colour: the code is the real and
    imaginary part of each coefficient of a real 2-D FFT per decorrelated colour channel, 3·R·(R//2+1)·2
    values, scaled by 1/max(|f|, 1/R)^decay, inverse-transformed (orthonormal), recorrelated and passed
    through a sigmoid. Lucid divides by a "magic" 4; here the scale is set so that standard-normal codes
    give logits of standard deviation 1, as the pixel space's do (measured on 64 codes of a fixed seed)."""

    kind, formula = "fourier", "3·R·(R/2+1)·2"

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, image_size: int = 64, decay: float = 1.0,
                 weights: str = "none", device: str = "auto", precision: str = "auto"):
        if not 0 <= decay <= 4:
            raise BadInput(f"fourier:decay={decay}: the spectrum's power-law decay is a number from 0 (white) to 4.")
        self.decay = float(decay)
        super().__init__(resolution, image_size, weights, device, precision)
        self.scale = 1.0 / _frequencies(resolution).clamp_min(1.0 / resolution) ** self.decay
        calibration = torch.randn(64, *self.shape, generator=torch.Generator().manual_seed(0))
        self.scale = (self.scale / self._logits(calibration).std()).to(self.device)

    @staticmethod
    def shape_at(resolution: int) -> tuple[int, ...]:
        return (3, resolution, resolution // 2 + 1, 2)

    def describe(self) -> dict:
        return {**super().describe(), "decay": self.decay}

    def _logits(self, codes: torch.Tensor) -> torch.Tensor:
        spectrum = torch.view_as_complex(codes.contiguous()) * self.scale.to(codes.device)
        image = torch.fft.irfft2(spectrum, s=(self.resolution, self.resolution), norm="ortho")
        return recorrelate(image)


class Maco(ImageSpace):
    """`maco[:resolution=R]`: MACO (Fel et al. 2023, as in the authors' Horama): the code is the phase of each
    coefficient of a real 2-D FFT per decorrelated colour channel, 3·R·(R//2+1) values; the magnitude is fixed,
    the mean magnitude spectrum of the procedural corpus (generators.corpus, 512 images of seed 0, in
    decorrelated colour, less the corpus's mean colour: `corpus_magnitude`). The phase is standardised, the spectrum inverse-transformed, standardised,
    recorrelated, scaled as the Fourier space's logits are (to a standard deviation of 1 for standard-normal
    codes, a constant) and passed through a sigmoid."""

    kind, formula = "maco", "3·R·(R/2+1)"

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, image_size: int = 64, weights: str = "none",
                 device: str = "auto", precision: str = "auto"):
        super().__init__(resolution, image_size, weights, device, precision)
        self.magnitude, self.gain = corpus_magnitude(resolution), 1.0
        calibration = torch.randn(64, *self.shape, generator=torch.Generator().manual_seed(0))
        self.gain = 1.0 / float(self._logits(calibration).std())
        self.magnitude = self.magnitude.to(self.device)

    @staticmethod
    def shape_at(resolution: int) -> tuple[int, ...]:
        return (3, resolution, resolution // 2 + 1)

    def _logits(self, codes: torch.Tensor) -> torch.Tensor:
        phase = _standardise(codes)
        spectrum = torch.polar(self.magnitude.to(codes.device).expand_as(phase), phase)
        image = torch.fft.irfft2(spectrum, s=(self.resolution, self.resolution), norm="ortho")
        return self.gain * recorrelate(_standardise(image))


@functools.cache
def corpus_magnitude(resolution: int) -> torch.Tensor:
    """The mean |FFT| (3, resolution, resolution // 2 + 1) of the procedural corpus in decorrelated colour, less
    the corpus's mean colour: the zero frequency's magnitude is the spread of the images' mean colours, not
    their mean, which with a random phase (a sign) would swing every image between two colour casts."""
    from generators.corpus import stimuli

    images = stimuli(MAGNITUDE_IMAGES, seed=0, size=max(64, resolution)).images
    images = F.interpolate(images, size=(resolution, resolution), mode="area")
    decorrelated = torch.einsum("nchw,dc->ndhw", images, torch.linalg.inv(COLOUR_CORRELATION))
    return torch.fft.rfft2(decorrelated - decorrelated.mean(dim=(0, 2, 3), keepdim=True), norm="ortho").abs().mean(0)
