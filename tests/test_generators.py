import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import generators
from evolver_common import BadInput
from generators.dcgan import dcgan_network


def test_render_shape_range_and_determinism(dcgan):
    codes = dcgan.sample(5, np.random.default_rng(1))
    assert codes.shape == (5, 100) and codes.dtype == np.float32
    first, second = dcgan.render(codes), dcgan.render(codes)
    assert first.shape == (5, 3, 64, 64)
    assert 0 <= first.min() and first.max() <= 1
    assert first.std() > 0.05, "calibrated random weights give images with contrast"
    assert torch.equal(first, second)
    assert not torch.allclose(first[0], first[1]), "different codes give different images"


def test_random_weights_are_seeded():
    a = generators.create("dcgan", weights="random", weights_seed=3)
    b = generators.create("dcgan", weights="random", weights_seed=3)
    codes = a.sample(2, np.random.default_rng(0))
    assert torch.equal(a.render(codes), b.render(codes))
    assert "random" in a.weights and "untrained" in a.weights


def test_truncated_sampling_stays_within_bounds():
    g = generators.create("dcgan", weights="random", truncation=0.5)
    codes = g.sample(200, np.random.default_rng(0))
    assert np.abs(codes).max() <= 0.5
    assert codes.std() > 0.2


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trip(tmp, dcgan, suffix):
    path = tmp / f"g{suffix}"
    state = {k: v.contiguous() for k, v in dcgan.network.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = generators.create("dcgan", weights=path)
    codes = dcgan.sample(3, np.random.default_rng(2))
    assert torch.equal(loaded.render(codes), dcgan.render(codes))
    assert loaded.weights.startswith(f"{path.resolve()} (weights sha1 ")


def test_mismatched_weights_name_the_keys(tmp):
    state = dcgan_network(ngf=32).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.weight"]
    path = tmp / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(BadInput) as err:
        generators.create("dcgan", weights=path)
    message = str(err.value)
    assert "missing (1): 0.weight" in message
    assert "unexpected (1): extra.weight" in message
    assert "wrong shape" in message and "1.weight (file (256,), model (512,))" in message


def test_missing_and_unreadable_weights_files(tmp):
    with pytest.raises(BadInput, match="does not exist"):
        generators.create("dcgan", weights=tmp / "nope.pth")
    junk = tmp / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="could not be read"):
        generators.create("dcgan", weights=junk)


def test_unknown_generator_lists_the_valid_ones():
    with pytest.raises(BadInput, match=r"closest: dcgan.*Valid generators: .*dcgan"):
        generators.create("dcgam")


def test_bundled_code_length_is_read_from_the_header_and_falls_back_to_100(tmp, monkeypatch):
    from generators import dcgan

    assert dcgan.bundled_code_dim() == generators.create("dcgan").code_dim
    (tmp / "broken.safetensors").write_bytes(b"not safetensors")
    for path in (tmp / "missing.safetensors", tmp / "broken.safetensors"):
        monkeypatch.setattr(dcgan, "BUNDLED_WEIGHTS", path)
        assert dcgan.bundled_code_dim() == 100
