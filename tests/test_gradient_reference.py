"""The white-box gradient reference's transforms and regularisers (feature visualisation's, Lucent's preset)."""
import json

import numpy as np
import pytest
import torch

import generators
import neurons
from evolver import optimizers
from evolver.optimizers.gradient import PRESETS
from evolver_common import BadInput


def centre_brightness(images: torch.Tensor) -> torch.Tensor:
    """A neuron that likes a bright square in the middle of the image and a dark surround."""
    h = images.shape[-1]
    inner = images[:, :, h // 4:3 * h // 4, h // 4:3 * h // 4].mean((1, 2, 3))
    return inner - images.mean((1, 2, 3))


def ascend(space, respond, steps=60, seed=0, **params):
    opt = optimizers.create("gradient", code_dim=space.code_dim, sample=space.sample, rng=np.random.default_rng(seed),
                            render=space.differentiable, respond=respond, **params)
    for _ in range(steps):
        codes = opt.ask()
        with torch.no_grad():
            scores = respond(space.differentiable(torch.as_tensor(codes))).numpy()
        opt.tell(codes, scores)
    return opt


def test_the_lucent_preset_sets_lucents_transforms_and_keeps_what_is_given():
    described = optimizers.create("gradient", 4, lambda n, rng: rng.standard_normal((n, 4)), np.random.default_rng(0),
                                  render=lambda c: c, respond=lambda x: x.sum(1), preset="lucent",
                                  rotate=5.0).describe()
    assert described["params"] == {"population": 10, "lr": 0.2, "preset": "lucent", "jitter": 10 / 224, "scale": 0.1,
                                   "rotate": 5.0, "tv": 0.0, "blur": 0.0}
    assert PRESETS["lucent"]["jitter"] == pytest.approx(0.0446, abs=1e-4)
    with pytest.raises(BadInput, match=r"preset=lucid \(valid: none, lucent\)"):
        optimizers.get("gradient").parse_params({"preset": "lucid"})
    with pytest.raises(BadInput, match="jitter and scale in"):
        optimizers.get("gradient").parse_params({"jitter": "1.5"})


def test_transforms_shift_zoom_and_turn_each_image_and_are_none_by_default():
    space = generators.create("pixel:resolution=16", image_size=32)
    images = space.render(space.sample(4, np.random.default_rng(0)))
    plain = ascend(space, centre_brightness, steps=0)
    assert torch.equal(plain._transform(images), images)
    moved = ascend(space, centre_brightness, steps=0, jitter=0.25)
    shifted = moved._transform(images)
    assert shifted.shape == images.shape and not torch.allclose(shifted, images)
    assert (shifted == 0.5).any(), "the revealed border is grey"
    same = images[:1].expand(4, -1, -1, -1)
    turned = ascend(space, centre_brightness, steps=0, rotate=90.0)._transform(same)
    assert not torch.allclose(turned[0], turned[1]), "each image draws its own transform"


def test_a_run_with_transforms_resumes_to_the_same_codes():
    space = generators.create("pixel:resolution=8", image_size=16)
    opt = ascend(space, centre_brightness, steps=5, preset="lucent", tv=0.1, blur=0.1)
    saved, later = opt.state_dict(), []
    for _ in range(3):
        codes = opt.ask()
        opt.tell(codes, np.zeros(len(codes)))
        later.append(codes)
    fresh = ascend(space, centre_brightness, steps=0, seed=9, preset="lucent", tv=0.1, blur=0.1)
    fresh.load_state_dict(saved)
    for expected in later:
        np.testing.assert_array_equal(fresh.ask(), expected)
        fresh.tell(expected, np.zeros(len(expected)))


def total_variation(images):
    return ((images[:, :, 1:] - images[:, :, :-1]).abs().mean() + (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean())


def test_total_variation_and_blur_make_smoother_images():
    space = generators.create("pixel:resolution=16", image_size=16)

    def noisy_taste(images):  # a neuron with a taste for a fixed noise pattern: it pulls towards roughness
        pattern = torch.as_tensor(np.random.default_rng(3).standard_normal((3, 16, 16)), dtype=images.dtype)
        return (images * pattern).mean((1, 2, 3))

    rough = [total_variation(space.render(ascend(space, noisy_taste, **w).ask()))
             for w in ({}, {"tv": 0.2}, {"blur": 2.0})]
    assert rough[1] < 0.8 * rough[0] and rough[2] < 0.8 * rough[0]


@pytest.mark.slow  # an evolution's outcome
def test_lucents_transforms_find_images_that_survive_being_shifted():
    """Gradient ascent through random shifts, zooms and turns finds images the unit still answers when they
    are shifted by a few pixels; without them the image's response falls further."""
    neuron = neurons.create("stimnet:relu3:unit5", precision="fp32")
    space = generators.create("pixel:resolution=32")
    kept = {}
    for preset in ("none", "lucent"):
        opt = ascend(space, neuron.differentiable, steps=150, preset=preset)
        with torch.no_grad():
            images = space.render(opt.ask())
            best = images[neuron.respond(images).argmax()][None]
            shifted = torch.cat([best.roll((dy, dx), (2, 3)) for dy in (-3, 0, 3) for dx in (-3, 0, 3) if dy or dx])
            kept[preset] = float(neuron.respond(shifted).mean() / neuron.respond(best)[0])
    assert kept["lucent"] > kept["none"] + 0.1, kept  # measured: 0.28 against 0.05 (fp32)


def test_a_runs_config_records_the_resolved_transforms(tmp):
    import evolver

    evolver.run(neuron="stimnet:relu3:unit5", generator="pixel:resolution=8", optimizer="gradient",
                params={"preset": "lucent", "tv": 0.1}, generations=2, out=tmp / "run", progress=False)
    recorded = json.loads((tmp / "run" / "config.json").read_text())["resolved"]["optimizer"]
    assert recorded == {"name": "gradient", "params": {"population": 10, "lr": 0.2, "preset": "lucent",
                                                       "jitter": 10 / 224, "scale": 0.1, "rotate": 10.0, "tv": 0.1,
                                                       "blur": 0.0}}
