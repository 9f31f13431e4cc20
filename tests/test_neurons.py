import numpy as np
import pytest
import timm
import torch
import torchvision
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

import neurons
from conftest import UNIT
from evolver_common import BadInput


def test_responses_are_one_float_per_image(unit_neuron, images):
    scores = unit_neuron(images)
    assert scores.shape == (12,) and scores.dtype == np.float64
    assert np.isfinite(scores).all() and scores.std() > 0


def test_centre_position_mean_and_explicit_position(images):
    centre = neurons.create(UNIT, weights="random")
    layer = centre.activations(images)[:, 3]  # (n, 28, 28)
    _, h, w = layer.shape
    np.testing.assert_allclose(centre(images), layer[:, h // 2, w // 2].numpy())
    np.testing.assert_allclose(neurons.create(UNIT + "@mean", weights="random")(images),
                               layer.mean(dim=(1, 2)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(neurons.create(UNIT + "@2,5", weights="random")(images), layer[:, 5, 2].numpy())


def test_the_network_is_cut_after_the_layer(unit_neuron):
    modules = dict(unit_neuron.network[1].named_modules())
    assert "layer2" in modules and "layer3" not in modules and "fc" not in modules


def test_torchvision_model_that_timm_lacks(images):
    neuron = neurons.create("alexnet:classifier.6:3", weights="random")
    assert neuron.layer_shape == (1000,)
    assert neuron(images).shape == (12,)
    assert neuron.input_config.mean == tuple(torchvision.models.AlexNet_Weights.DEFAULT.transforms().mean)


def test_activations_are_read_before_in_place_relu(images):
    # alexnet's features.1 is ReLU(inplace=True): the conv output must keep its negative values.
    conv = neurons.create("alexnet:features.0:0", weights="random", precision="fp32")
    assert (conv.activations(images) < 0).any()


def test_input_config_comes_from_the_model():
    neuron = neurons.create("test_resnet:layer1:0", weights="random")
    assert neuron.input_config.size == (160, 160)  # test_resnet's own config, not a hard-coded 224
    assert neuron.input_config.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("spec, message", [
    ("resnt18:layer3:1", r"Unknown model 'resnt18' \(closest: resnet18"),
    ("resnet18:layer9:1", r"no layer 'layer9' \(closest: layer4.*evolver layers resnet18"),
    ("resnet18:layer3:256", r"Unit 256 is out of range: .* has 256 units \(0–255\)"),
    ("resnet18:layer3:1@14,0", r"Position @14,0 is outside .* 14×14"),
    ("resnet18:fc:1@mean", "not spatial"),
    ("resnet18:layer3", "Malformed neuron spec"),
])
def test_bad_specs(spec, message):
    with pytest.raises(BadInput, match=message):
        neurons.create(spec, weights="random")


def test_weights_file_from_a_random_resnet18_loads(tmp, images):
    network = timm.create_model("resnet18")
    path = tmp / "resnet18.pth"
    torch.save(network.state_dict(), path)
    from_file = neurons.create("resnet18:layer4:unit7", weights=path, precision="fp32")
    network.eval()
    expected = network.forward_features(from_file.network[0](images))[:, 7, 3, 3]
    np.testing.assert_allclose(from_file(images), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert from_file.weights.startswith(f"{path.resolve()} (weights sha1 ")


def test_wrong_weights_file_names_the_keys(tmp):
    path = tmp / "resnet34.safetensors"
    save_file(timm.create_model("resnet34").state_dict(), str(path))
    with pytest.raises(BadInput, match=r"unexpected \(\d+\): layer1\.2\..*Use weights saved from the same"):
        neurons.create("resnet18:layer4:0", weights=path)


def _hub_cache(root, repo: str, filename: str, state: dict) -> None:
    """A Hugging Face hub cache holding one file, laid out as huggingface_hub lays it out."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    save_file(state, str(repo_dir / "snapshots" / commit / filename))


def test_pretrained_reads_the_local_hub_cache_offline(tmp, monkeypatch, images):
    reference = timm.create_model("test_resnet")
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    _hub_cache(tmp, "timm/test_resnet.r160_in1k", "model.safetensors", reference.state_dict())
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp))
    neuron = neurons.create("test_resnet:fc:5", weights="pretrained", precision="fp32")
    assert neuron.weights.startswith(str(tmp))
    expected = reference.eval()(neuron.network[0](images))[:, 5]
    np.testing.assert_allclose(neuron(images), expected.detach().numpy(), rtol=1e-4, atol=1e-4)


def test_pretrained_offline_without_cache_fails_with_both_ways_out(tmp, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp))
    with pytest.raises(BadInput) as err:
        neurons.create("test_resnet:fc:5", weights="pretrained")
    message = str(err.value)
    assert "models--timm--test_resnet.r160_in1k" in message and "model.safetensors" in message
    assert "--weights PATH" in message and "--weights random" in message


def test_torchvision_pretrained_reads_torch_home(tmp, images):
    weights = torchvision.models.SqueezeNet1_1_Weights.DEFAULT
    reference = torchvision.models.squeezenet1_1()
    (tmp / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp / "checkpoints" / weights.url.rsplit("/", 1)[1])
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp))
    try:
        neuron = neurons.create("squeezenet1_1:classifier.1:9", weights="pretrained", precision="fp32")
        # the reference at the same point: conv classifier output at the centre of its grid
        expected = reference.eval().classifier[1](reference.features(neuron.network[0](images)))
        np.testing.assert_allclose(neuron(images), expected[:, 9, 6, 6].detach().numpy(), rtol=1e-4, atol=1e-4)
        torch.hub.set_dir(str(tmp / "empty"))
        with pytest.raises(BadInput, match=r"squeezenet1_1-.*\.pth"):
            neurons.create("squeezenet1_1:classifier.1:9", weights="pretrained")
    finally:
        torch.hub.set_dir(previous)


def test_layers_lists_units_and_spatial_sizes():
    layers = {layer.name: layer for layer in neurons.list_layers("resnet18")}
    assert layers["layer4.1.act2"].units == 512 and layers["layer4.1.act2"].layout.grid == (7, 7)
    assert layers["layer3.0.conv1"].layout.grid == (14, 14)
    assert layers["fc"].units == 1000 and layers["fc"].layout.grid is None
