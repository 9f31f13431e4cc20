"""BigGAN-deep and DeePSiM load their weights through the public paths (random weights saved here), and
download them from an imitation of the hub on 127.0.0.1."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import generators
from conftest import evolver_cli, evolver_process
from evolver_common import BadInput
from generators.deepsim import HUB_REPO, VARIANTS, deepsim_network
from local_hub import LocalHub

biggan_package = pytest.importorskip("pytorch_pretrained_biggan")


def save_tiny_biggan(folder, channel_width=8, seed=0):
    """A 128-px BigGAN-deep with channel width 8, as config.json + pytorch_model.bin in `folder`.

    Random BigGAN weights render NaN: the unconditional batch norm's scale and shift start
    uninitialised and the spectral-norm vectors are random. Set the first, and let a few
    train-mode passes run the power iterations, before saving.
    """
    torch.manual_seed(seed)
    config = biggan_package.BigGANConfig(output_dim=128, channel_width=channel_width)
    model = biggan_package.BigGAN(config)
    with torch.no_grad():
        model.generator.bn.weight.fill_(1.0)
        model.generator.bn.bias.zero_()
        model.train()
        for _ in range(10):
            model.generator(torch.randn(2, 256), 0.7)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.to_json_string())
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def biggan_folder(tmp_path_factory):
    return save_tiny_biggan(tmp_path_factory.mktemp("biggan"))


def test_biggan_loads_renders_in_range_and_is_deterministic(biggan_folder):
    g = generators.create("biggan-deep-128", weights=biggan_folder)
    assert g.code_dim == 256 and g.image_size == 128
    codes = g.sample(3, np.random.default_rng(0))
    assert codes.shape == (3, 256) and np.abs(codes[:, :128]).max() <= 2 * 0.7
    first, second = g.render(codes), g.render(codes)
    assert first.shape == (3, 3, 128, 128) and torch.isfinite(first).all()
    assert 0 <= first.min() and first.max() <= 1 and first.std() > 0
    assert torch.equal(first, second), "eval mode: rendering does not move the spectral-norm vectors"
    assert not g.network.training


def test_biggan_fixed_class_evolves_only_the_noise(biggan_folder):
    g = generators.create("biggan-deep-128", weights=biggan_folder, class_index=3, truncation=0.5)
    codes = g.sample(2, np.random.default_rng(1))
    assert codes.shape == (2, 128) and np.abs(codes).max() <= 1.0
    full = generators.create("biggan-deep-128", weights=biggan_folder, truncation=0.5)
    with_class = np.concatenate([codes, np.repeat(full.network.embeddings.weight.T[3:4].numpy(), 2, 0)], 1)
    torch.testing.assert_close(g.render(codes), full.render(with_class))
    with pytest.raises(BadInput, match="out of range"):
        generators.create("biggan-deep-128", weights=biggan_folder, class_index=1000)


def test_biggan_wrong_files_fail_clearly(tmp, biggan_folder):
    with pytest.raises(BadInput, match="expected a folder holding config.json and pytorch_model.bin"):
        generators.create("biggan-deep-128", weights=tmp)
    wrong = save_tiny_biggan(tmp / "wide", channel_width=16)
    (wrong / "config.json").write_text((biggan_folder / "config.json").read_text())
    with pytest.raises(BadInput, match=r"do not match .*wrong shape"):
        generators.create("biggan-deep-128", weights=wrong)


@pytest.mark.parametrize("damage", ["config not JSON", "config of wrong types", "config of no network",
                                    "weights not a torch file"])
def test_biggan_damaged_files_are_one_paragraph_errors(tmp, biggan_folder, damage):
    import shutil

    folder = Path(shutil.copytree(biggan_folder, tmp / "biggan"))
    config = json.loads((folder / "config.json").read_text())
    if damage == "config not JSON":
        (folder / "config.json").write_text("{output_dim: 128")
    elif damage == "config of wrong types":
        (folder / "config.json").write_text(json.dumps({**config, "channel_width": "wide", "output_dim": 100}))
    elif damage == "config of no network":
        (folder / "config.json").write_text(json.dumps({**config, "layers": [["x"]]}))
    else:
        (folder / "pytorch_model.bin").write_bytes(b"not a torch file")
    with pytest.raises(BadInput, match="config.json|could not be read"):
        generators.create("biggan-deep-128", weights=folder)


def test_biggan_offline_with_nothing_cached_says_where_to_put_weights(tmp, monkeypatch):
    monkeypatch.setattr(biggan_package.file_utils, "PYTORCH_PRETRAINED_BIGGAN_CACHE", str(tmp))
    with pytest.raises(BadInput, match=r"No pretrained weights for biggan-deep-256 are cached .*--generator-weights DIR"):
        generators.create("biggan-deep-256")


def test_deepsim_fc6_loads_the_shared_state_dict_layout(tmp):
    state = deepsim_network("fc6").state_dict()
    # shared copies name the layers like this, some nested one level deeper
    assert {"defc7.weight", "defc5.bias", "deconv5.weight", "conv5_1.weight", "deconv0.bias"} <= set(state)
    torch.save({k.replace("defc7.", "defc7.1."): v for k, v in state.items()}, tmp / "upconvGAN_fc6.pt")
    g = generators.create("deepsim-fc6", weights=tmp / "upconvGAN_fc6.pt", precision="fp32")
    codes = g.sample(2, np.random.default_rng(0))
    assert codes.shape == (2, 4096) and (codes >= 0).all() and 0.4 < (codes == 0).mean() < 0.6
    images = g.render(codes)
    assert images.shape == (2, 3, 256, 256) and 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(images, g.render(codes))
    # BGR out, the Caffe mean added back: a zero network output is the mean pixel in RGB
    zero = deepsim_network("fc6")
    for p in zero.parameters():
        p.data.zero_()
    torch.save(zero.state_dict(), tmp / "zero.pt")
    grey = generators.create("deepsim-fc6", weights=tmp / "zero.pt").render(codes)
    torch.testing.assert_close(grey[0, :, 0, 0], torch.tensor([123.0, 117.0, 104.0]) / 255)


def small_deepsim_file(variant: str) -> bytes:
    """A state dict of deepsim-<variant> at its full shapes in a small file: each tensor is a strided view
    of a short random vector, and torch.save keeps a view's storage, so 200 MB of weights take 200 kB."""
    with torch.device("meta"):
        shapes = {k: t.shape for k, t in deepsim_network(variant).state_dict().items()}
    rng = torch.Generator().manual_seed(0)
    state = {k: (0.01 * torch.randn(sum(shape) - len(shape) + 1, generator=rng)).as_strided(shape, (1,) * len(shape))
             for k, shape in shapes.items()}
    stream = io.BytesIO()
    torch.save(state, stream)
    return stream.getvalue()


@pytest.fixture
def hub(tmp, monkeypatch):
    """A local hub serving the fc6 weights, with this process's huggingface_hub pointed at it and an
    empty TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp / "torch"))
    with LocalHub() as local:
        local.patch(monkeypatch, tmp / "hub-cache")
        yield local


def go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_deepsim_pretrained_downloads_once_then_runs_offline_from_the_cache(hub, monkeypatch):
    content = small_deepsim_file("fc6")
    hub.add(HUB_REPO, "upconvGAN_fc6.pt", content)
    first = generators.create("deepsim-fc6", precision="fp32")
    assert hub.downloads() == 1 and "hub-cache" in first.weights
    served = torch.load(io.BytesIO(content), weights_only=True)
    torch.testing.assert_close(first.network.defc7.weight, served["defc7.weight"])
    go_offline(monkeypatch)
    second = generators.create("deepsim-fc6", precision="fp32")
    assert hub.downloads() == 1 and second.weights == first.weights
    codes = first.sample(2, np.random.default_rng(0))
    torch.testing.assert_close(second.render(codes), first.render(codes))


def test_a_corrupted_download_is_refused_and_removed_from_the_cache(hub):
    content = small_deepsim_file("fc6")
    corrupted = bytearray(content)
    corrupted[len(content) // 2:len(content) // 2 + 64] = bytes(64)  # same size: only the sha256 tells
    hub.add(HUB_REPO, "upconvGAN_fc6.pt", content, served=bytes(corrupted))
    with pytest.raises(BadInput, match=r"upconvGAN_fc6.pt is corrupt: its sha256 is .* the hub lists "
                                       r".*removed from the cache; run again"):
        generators.create("deepsim-fc6")
    assert generators.deepsim.hub_file("fc6").cached() is None
    hub.add(HUB_REPO, "upconvGAN_fc6.pt", content, served=content[:-1000])  # cut off: the size check
    with pytest.raises(BadInput, match=r"Downloading the weights of deepsim-fc6 from .*127.0.0.1.* failed"):
        generators.create("deepsim-fc6")
    hub.add(HUB_REPO, "upconvGAN_fc6.pt", content)
    assert "hub-cache" in generators.create("deepsim-fc6").weights


def test_deepsim_offline_with_nothing_cached_names_where_it_looked(hub, tmp, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(BadInput) as error:
        generators.create("deepsim-fc6")
    message = str(error.value)
    assert message.startswith("No pretrained weights for deepsim-fc6 are cached and they cannot be downloaded "
                              "(the machine is declared offline")
    assert f"{tmp}/torch/checkpoints/upconvGAN_fc6.pt" in message
    assert f"{tmp}/hub-cache/models--binxu--DeePSim_DosovitskiyBrox2016/snapshots/*/upconvGAN_fc6.pt" in message
    assert "--generator-weights PATH" in message and hub.requests == [], "offline: the hub is not asked"


def test_biggan_pretrained_downloads_from_the_hub(hub, tmp, monkeypatch, biggan_folder):
    monkeypatch.setattr(biggan_package.file_utils, "PYTORCH_PRETRAINED_BIGGAN_CACHE", str(tmp / "package-cache"))
    for name in ("config.json", "pytorch_model.bin"):
        hub.add("huggingface/biggan-deep-128", name, (biggan_folder / name).read_bytes())
    g = generators.create("biggan-deep-128")
    assert hub.downloads() == 2 and g.image_size == 128 and "hub-cache" in g.weights
    local = generators.create("biggan-deep-128", weights=biggan_folder)
    codes = g.sample(2, np.random.default_rng(0))
    torch.testing.assert_close(g.render(codes), local.render(codes))


def test_deepsim_pretrained_reads_torch_home(tmp, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp))
    with pytest.raises(BadInput, match=r"Looked for .*upconvGAN_fc8.pt"):
        generators.create("deepsim-fc8")
    (tmp / "checkpoints").mkdir()
    torch.save(deepsim_network("fc8").state_dict(), tmp / "checkpoints" / "upconvGAN_fc8.pt")
    g = generators.create("deepsim-fc8")
    assert g.code_dim == 1000 and str(tmp) in g.weights
    assert g.sample(3, np.random.default_rng(0)).min() < 0, "fc8 codes take both signs"


@pytest.mark.parametrize("variant, dim", [("fc7", 4096), ("pool5", 9216)])
def test_deepsim_variants_render_256px(variant, dim):
    g = generators.create(f"deepsim-{variant}", weights="random")
    assert g.code_dim == dim
    images = g.render(g.sample(4, np.random.default_rng(0)))
    assert images.shape == (4, 3, 256, 256)
    assert images.std(dim=0).mean() > 0.03, "calibrated random weights: images change with the code"


def test_deepsim_wrong_file_names_the_keys(tmp):
    torch.save(deepsim_network("fc8").state_dict(), tmp / "fc8.pt")
    with pytest.raises(BadInput, match=r"wrong shape \(1\): defc7.weight"):
        generators.create("deepsim-fc6", weights=tmp / "fc8.pt")
    assert set(VARIANTS) == {"fc6", "fc7", "fc8", "pool5"}


def test_generators_listing_says_where_weights_are_looked_for(tmp):
    listing = evolver_cli("generators", check=True, env={"TORCH_HOME": str(tmp)}).stdout
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert {"dcgan", "deepsim-fc6", "deepsim-pool5", "biggan-deep-128", "biggan-deep-512"} <= set(lines)
    assert f"not here: {tmp}/checkpoints/upconvGAN_fc6.pt, else downloads on first use from hf-hub:{HUB_REPO}" \
        in lines["deepsim-fc6"]
    assert "4096" in lines["deepsim-fc6"] and "256×256" in lines["deepsim-fc6"]


def test_biggan_offline_cli_fails_with_where_to_put_weights(tmp, monkeypatch):
    monkeypatch.setattr(biggan_package.file_utils, "PYTORCH_PRETRAINED_BIGGAN_CACHE", str(tmp))
    result = evolver_cli("run", "--generator", "biggan-deep-256", "--neuron", "resnet18:layer3:0", "--weights",
                         "random")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--generator-weights DIR" in result.stderr and str(tmp) in result.stderr


def test_a_256px_generator_feeds_a_224px_network_and_a_64px_one(tmp, images):
    import neurons

    neuron = neurons.create("resnet18:layer2:unit3", weights="random")
    large = generators.create("deepsim-fc8", weights="random")
    assert neuron(large.render(large.sample(3, np.random.default_rng(0)))).shape == (3,)
    assert neuron(images).shape == (12,)  # the 64x64 DCGAN images of conftest


def test_an_evolution_through_a_large_generator_from_the_cli(tmp):
    evolver_cli("run", "--generator", "deepsim-fc8", "--generator-weights", "random", "--neuron",
                "resnet18:layer2:unit3", "--weights", "random", "--generations", 2, "--population", 4,
                "--out", tmp / "run", "--quiet", check=True)
    config = json.loads((tmp / "run" / "config.json").read_text())
    assert config["resolved"]["generator"]["code_dim"] == 1000
    # the default uh-cmaes shows 2 of the generation's 4 codes twice until the neuron proves noise-free
    assert np.load(tmp / "run" / "codes" / "gen_0001.npy").shape == (6, 1000)


@pytest.mark.slow
def test_the_cli_downloads_deepsim_through_hf_endpoint_then_runs_offline(tmp):
    """As a user sees it, in fresh processes: HF_ENDPOINT points huggingface_hub at the local hub."""
    env = {"TORCH_HOME": str(tmp / "torch"), "HF_HUB_CACHE": str(tmp / "hub-cache"), "HF_HUB_OFFLINE": ""}
    run = ["run", "--generator", "deepsim-fc6", "--neuron", "resnet18:layer2:unit3", "--weights", "random",
           "--generations", 2, "--population", 4, "--quiet"]
    with LocalHub() as hub:
        hub.add(HUB_REPO, "upconvGAN_fc6.pt", small_deepsim_file("fc6"))
        evolver_process(*run, "--out", tmp / "first", env={**env, "HF_ENDPOINT": hub.url}, check=True)
        assert hub.downloads() == 1
    listing = evolver_process("generators", env={**env, "HF_HUB_OFFLINE": "1"}, check=True).stdout
    assert "deepsim-fc6 " in listing and f"found: {tmp}/hub-cache/models--binxu--" in listing
    evolver_process(*run, "--out", tmp / "second", env={**env, "HF_HUB_OFFLINE": "1"}, check=True)
    first, second = (json.loads((tmp / r / "config.json").read_text()) for r in ("first", "second"))
    assert first["resolved"]["generator"]["weights"] == second["resolved"]["generator"]["weights"]
    offline = evolver_process(*run, "--out", tmp / "third",
                              env={**env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "empty")})
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert "No pretrained weights for deepsim-fc6 are cached and they cannot be downloaded" in offline.stderr
