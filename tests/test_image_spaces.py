"""The image spaces without a network (pixel, fourier, maco): the Generator contract, and what each space is."""
import numpy as np
import pytest
import torch

import generators
from evolver_common import BadInput
from generators.image_spaces import COLOUR_CORRELATION, corpus_magnitude, recorrelate

SPACES = {"pixel": 3 * 16 * 16, "fourier": 3 * 16 * 9 * 2, "maco": 3 * 16 * 9}


@pytest.mark.parametrize("name", SPACES)
def test_codes_render_images_in_range_the_same_for_a_seed(name):
    space = generators.create(name)
    assert space.code_dim == SPACES[name] and space.image_size == 64
    codes = space.sample(6, np.random.default_rng(2))
    assert codes.shape == (6, SPACES[name]) and codes.dtype == np.float32
    np.testing.assert_array_equal(codes, space.sample(6, np.random.default_rng(2)))
    images = space.render(codes)
    assert images.shape == (6, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, generators.create(name).render(codes)), "a code is one image, in any process"
    assert images.std(dim=(1, 2, 3)).min() > 0.03, "prior codes draw images with contrast"
    assert not torch.allclose(images[0], images[1])


@pytest.mark.parametrize("name", SPACES)
def test_every_code_value_has_a_gradient(name):
    space = generators.create(name)
    codes = torch.tensor(space.sample(2, np.random.default_rng(0)), requires_grad=True)
    space.differentiable(codes).mean().backward()
    assert torch.isfinite(codes.grad).all()
    assert (codes.grad[0] != 0).float().mean() > 0.95, "the image depends on (almost) every code value"


@pytest.mark.parametrize("name", SPACES)
def test_the_prior_draws_logits_of_unit_spread(name):
    """Each space is scaled so that standard-normal codes give sigmoid inputs of standard deviation ~1: the
    optimisers' steps, in code units, mean the same in each."""
    space = generators.create(name)
    codes = torch.as_tensor(space.sample(64, np.random.default_rng(5)))
    spread = space._logits(codes.reshape(64, *space.shape)).std()
    assert 0.7 < spread < 1.3


def test_resolution_sets_the_code_and_the_image_is_upsampled():
    pixel = generators.create("pixel:resolution=8", image_size=32)
    assert pixel.code_dim == 3 * 8 * 8
    code = np.zeros((1, pixel.code_dim), np.float32)
    code[0, 0] = 6.0  # the red logit of the top-left pixel
    image = pixel.render(code)[0]
    assert image.shape == (3, 32, 32)
    assert image[0, 0, 0] > 0.95 and abs(image[0, -1, -1] - 0.5) < 1e-6 and abs(image[1, 0, 0] - 0.5) < 1e-6
    assert generators.create("fourier:resolution=32").code_dim == 3 * 32 * 17 * 2
    assert generators.create("maco:resolution=32").code_dim == 3 * 32 * 17


def test_fourier_codes_are_scaled_by_one_over_frequency():
    """A unit coefficient at a high frequency draws a fainter image than one at a low frequency (1/f), and
    decay=0 draws them alike (white)."""
    for decay, ratio in ((1.0, (2, 8)), (0.0, (1, 1))):
        space = generators.create(f"fourier:decay={decay}")
        amplitudes = []
        for row in (1, 4):  # |f| of 1/16 and 4/16 cycles a pixel
            code = torch.zeros(1, *space.shape)
            code[0, 0, row, 0, 0] = 1.0
            amplitudes.append(float(space._logits(code).std()))
        assert ratio[0] * 0.9 < amplitudes[0] / amplitudes[1] < ratio[1] * 1.1 if decay else \
            amplitudes[0] == pytest.approx(amplitudes[1], rel=1e-4)


def test_maco_keeps_the_corpus_magnitude_and_searches_only_the_phase():
    maco = generators.create("maco")
    codes = torch.as_tensor(maco.sample(3, np.random.default_rng(1)))
    logits = maco._logits(codes.reshape(3, *maco.shape))
    decorrelated = torch.einsum("ndhw,cd->nchw", logits, torch.linalg.inv(COLOUR_CORRELATION))
    spectra = torch.fft.rfft2(decorrelated, norm="ortho").abs()
    # every image's spectrum is the corpus magnitude up to one gain (the standardisations), away from the
    # frequencies whose phase a real image cannot take freely (the zero and Nyquist columns)
    magnitude = corpus_magnitude(16)
    for spectrum in spectra:
        ratio = (spectrum / magnitude)[:, :, 1:-1]
        assert ratio.std() / ratio.mean() < 1e-3
    assert torch.allclose(recorrelate(torch.ones(1, 3, 1, 1)).flatten(),
                          (COLOUR_CORRELATION.sum(1) / COLOUR_CORRELATION.pow(2).sum(1).mean().sqrt()))


@pytest.mark.parametrize("spec, message", [
    ("pixel:resolution=2", "pixel:resolution=2: the side of the image the code draws is a whole number of pixels "
                           "from 4 to 256"),
    ("fourier:decay=9", "fourier:decay=9.0: the spectrum's power-law decay is a number from 0"),
    ("maco:colour=1", "does not take these options"),
])
def test_bad_options_are_refused_by_name(spec, message):
    with pytest.raises(BadInput, match=message):
        generators.create(spec)
    with pytest.raises(BadInput, match="has no weights"):
        generators.create("pixel", weights="/some/file.pt")
