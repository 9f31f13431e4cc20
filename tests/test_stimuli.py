import math

import numpy as np
import pytest
import torch

from generators.quality import frechet_distance
from generators.corpus import ATTRIBUTES, FAMILIES, corpus, stimuli


def test_deterministic_in_the_seed_and_different_across_seeds():
    a, b, c = stimuli(48, 3), stimuli(48, 3), stimuli(48, 4)
    assert torch.equal(a.images, b.images) and torch.equal(a.family, b.family)
    assert not torch.equal(a.images, c.images)


def test_every_family_in_equal_shares_with_labels():
    batch = stimuli(120, 0)
    assert batch.images.shape == (120, 3, 64, 64) and batch.images.dtype == torch.float32
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    assert torch.bincount(batch.family, minlength=len(FAMILIES)).tolist() == [10] * len(FAMILIES)
    assert set(batch.attributes) == set(ATTRIBUTES)
    assert batch.labels()[0] in FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_draws_varied_images_with_contrast(family):
    batch = stimuli(16, 1, families=(family,))
    assert (batch.family == FAMILIES.index(family)).all()
    assert batch.images.std(dim=(1, 2, 3)).min() > 0.02, "no blank images"
    assert (batch.images[0] - batch.images[1]).abs().mean() > 0.01, "images differ"


def test_grating_orientation_is_its_dominant_fourier_orientation():
    batch = stimuli(48, 5, families=("grating",))
    # above 4 cycles per image the FFT's grid resolves orientation to a few degrees
    fine = batch.attributes["frequency"] >= 4
    assert fine.sum() >= 10
    for image, orientation in zip(batch.images[fine], batch.attributes["orientation"][fine]):
        gray = image.mean(0) - image.mean()
        power = torch.fft.fftshift(torch.fft.fft2(gray).abs())
        y, x = np.unravel_index(power.argmax().item(), power.shape)
        # stripes varying along (cos t, sin t) put the power peak in that direction (y downwards)
        measured = math.degrees(math.atan2(y - 32, x - 32)) % 180
        error = abs(measured - orientation.item()) % 180
        assert min(error, 180 - error) < 8


def test_attributes_are_nan_where_they_do_not_apply():
    batch = stimuli(24, 2, families=("blob", "grating"))
    blobs = batch.family == FAMILIES.index("blob")
    assert torch.isnan(batch.attributes["orientation"][blobs]).all()
    assert not torch.isnan(batch.attributes["frequency"][~blobs]).any()


def test_corpus_stream_batches_are_reproducible():
    first = [next(s).images for s in (corpus(9, 8), corpus(9, 8))]
    assert torch.equal(*first)
    stream = corpus(9, 8)
    assert not torch.equal(next(stream).images, next(stream).images)


def test_frechet_distance():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 8, generator=rng), torch.randn(4000, 8, generator=rng)
    assert frechet_distance(a, b) < 0.05
    assert frechet_distance(a, b + 2) == pytest.approx(8 * 4, rel=0.05)  # mean shift of 2 in 8 dims
    assert frechet_distance(a, 3 * b) == pytest.approx(8 * (3 - 1) ** 2, rel=0.1)
