"""Units of the models labs bring besides CNNs: transformers' tokens (class, distillation and register
tokens, patch grids), channels-last stages (Swin), and torchvision's ViT and Swin; random weights."""
import re

import numpy as np
import pytest
import torch

import neurons
from conftest import evolver_cli
from evolver_common import BadInput

# model: (layer, kind, units, grid (H, W), prefix tokens, class token, channels-last)
FAMILIES = {
    "resnet18": ("layer4", "grid", 512, (7, 7), 0, False, False),
    "convnext_atto": ("stages.3", "grid", 320, (7, 7), 0, False, False),
    "swin_tiny_patch4_window7_224": ("layers.3", "grid", 768, (7, 7), 0, False, True),
    "vit_tiny_patch16_224": ("blocks.11", "tokens", 192, (14, 14), 1, True, False),
    "vit_wee_patch16_reg1_gap_256": ("blocks.5", "tokens", 256, (16, 16), 1, False, False),
    "deit_tiny_distilled_patch16_224": ("blocks.11", "tokens", 192, (14, 14), 2, True, False),
    "coatnet_pico_rw_224": ("stages.3", "grid", 512, (7, 7), 0, False, False),
    "mixer_s16_224": ("blocks.7", "tokens", 512, (14, 14), 0, False, False),
    "vit_b_16": ("encoder.layers.encoder_layer_11", "tokens", 768, (14, 14), 1, True, False),
    "swin_t": ("features.7", "grid", 768, (7, 7), 0, False, True),
}
IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model", list(FAMILIES))
def test_a_unit_of_each_family_is_read(model):
    layer, kind, units, grid, prefix, class_token, channels_last = FAMILIES[model]
    centre = neurons.create(f"{model}:{layer}:unit3", weights="random", precision="fp32")
    layout = centre.layout
    assert (layout.kind, layout.units, layout.grid, layout.prefix, layout.class_token, layout.channels_last) == \
        (kind, units, grid, prefix, class_token, channels_last)
    activations = centre.reader.read(IMAGES)[layer]
    assert activations.shape[1:] == ((units, *grid) if kind == "grid" else (prefix + grid[0] * grid[1], units))
    responses = centre(IMAGES)
    assert responses.shape == (2,) and np.isfinite(responses).all()
    h, w = grid
    expected = activations[:, 3, h // 2, w // 2] if kind == "grid" else \
        activations[:, 0 if class_token else prefix + (h // 2) * w + w // 2, 3]
    np.testing.assert_allclose(responses, expected.double().numpy(), rtol=1e-6)
    corner = neurons.create(f"{model}:{layer}:unit3@1,0", weights="random", precision="fp32", )
    expected = activations[:, 3, 0, 1] if kind == "grid" else activations[:, prefix + 1, 3]
    np.testing.assert_allclose(corner(IMAGES), expected.double().numpy(), rtol=1e-6)


def test_token_positions_and_their_errors():
    model = "vit_wee_patch16_reg1_gap_256:blocks.5"
    mean = neurons.create(f"{model}:unit[0,4]@mean", weights="random", precision="fp32")
    tokens = mean.reader.read(IMAGES)["blocks.5"]
    np.testing.assert_allclose(mean(IMAGES), tokens[:, 1:, [0, 4]].mean(1).double().numpy(), rtol=1e-6)
    with pytest.raises(BadInput, match="has no class token"):
        neurons.create(f"{model}:unit0@cls", weights="random", precision="fp32")
    with pytest.raises(BadInput, match=r"outside .* grid is 16×16"):
        neurons.create(f"{model}:unit0@16,0", weights="random", precision="fp32")
    with pytest.raises(BadInput, match="attention windows fold the grid into the batch"):
        neurons.create("swin_tiny_patch4_window7_224:layers.0.blocks.0.view_1:unit0", weights="random", precision="fp32")
    with pytest.raises(BadInput, match="a grid, not tokens"):
        neurons.create("resnet18:layer4:unit0@cls", weights="random", precision="fp32")
    cls = neurons.create("vit_tiny_patch16_224:blocks.11:unit5@cls", weights="random", precision="fp32")
    default = neurons.create("vit_tiny_patch16_224:blocks.11:unit5", weights="random", precision="fp32")
    np.testing.assert_array_equal(cls(IMAGES), default(IMAGES))
    assert str(cls.unit) == "vit_tiny_patch16_224:blocks.11:unit5@cls"


def test_layers_shows_true_unit_counts_and_token_grids():
    swin = evolver_cli("layers", "swin_tiny_patch4_window7_224", check=True).stdout
    line = next(row for row in swin.splitlines() if row.startswith("layers.3.blocks.1.reshape_1 "))
    assert line.split()[1:] == ["768", "7×7", "(channels-last)"]  # the last stage's output: 768 units, not 7
    vit = evolver_cli("layers", "vit_tiny_patch16_224", check=True).stdout
    line = next(row for row in vit.splitlines() if row.startswith("blocks.11.add_1 "))
    assert "192" in line and "14×14 patches + class token" in line
    assert "no unit can be read here" not in vit + swin  # hidden, and counted: --all lists them
    hidden = int(re.search(r"\((\d+) more where no unit can be read: --all lists them\)", vit)[1])
    every = evolver_cli("layers", "vit_tiny_patch16_224", "--all", check=True).stdout
    assert every.count("no unit can be read here") == hidden > 0
