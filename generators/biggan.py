"""BigGAN-deep (Brock et al. 2019) through pytorch-pretrained-biggan (`pip install evolver[biggan]`).

The evolved code is the field's 256-d vector: 128 noise values and the 128-d class embedding,
rendered as `generator(cat(z, embedding), truncation)` (NeuroGen; Wang & Ponce 2022). With
`class_index` set, the embedding is that class's and only the 128 noise values evolve.
'pretrained' weights come from the package's own cache ($PYTORCH_PRETRAINED_BIGGAN_CACHE,
~/.pytorch_pretrained_biggan) when an earlier download left them there, else from the hub
repositories `huggingface/biggan-deep-<size>` through huggingface_hub's cache, downloading on first
use (the package's own S3 addresses predate the hub). A folder holding config.json and
pytorch_model.bin can be given instead.
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch

from evolver_common import (BadInput, apply_state_dict, autocast, load_state_file, resolve_device, resolve_precision,
                            seeded_init)
from evolver_common.hub import HubFile, fetch
from evolver_common.state_files import file_weights
from generators.base import Generator

SIZES = (128, 256, 512)
NOISE_DIM = 128
# Channel multiples at each resolution stage of the published configs, for random weights
# (pretrained weights bring their own config.json).
_STAGES = {128: (16, 16, 8, 4, 2, 1), 256: (16, 16, 8, 8, 4, 2, 1), 512: (16, 16, 8, 8, 4, 2, 1, 1)}


def random_config(size: int):
    """The BigGAN-deep config of `size` px: two blocks per stage, the second upsampling."""
    stages = _STAGES[size]
    layers = [block for c_in, c_out in zip(stages, stages[1:]) for block in ((False, c_in, c_in), (True, c_in, c_out))]
    return _package().BigGANConfig(output_dim=size, layers=layers, attention_layer_position=8)


@torch.no_grad()
def _settle_random(network, truncation: float, steps: int = 10) -> None:
    """Make random weights render: the package leaves the last batch norm's scale and shift
    uninitialised, and random spectral-norm vectors need power iterations (train-mode passes)."""
    network.generator.bn.weight.fill_(1.0)
    network.generator.bn.bias.zero_()
    network.train()
    for _ in range(steps):
        network.generator(torch.randn(2, 2 * NOISE_DIM), truncation)
    network.eval()


def _package():
    try:
        import pytorch_pretrained_biggan
    except ImportError:
        raise BadInput("BigGAN needs the optional package pytorch-pretrained-biggan: pip install 'evolver[biggan]'.") \
            from None
    return pytorch_pretrained_biggan


def hub_files(size: int) -> tuple[HubFile, HubFile]:
    """(config.json, pytorch_model.bin) of BigGAN-deep at `size` px on the hub."""
    return tuple(HubFile(f"huggingface/biggan-deep-{size}", name) for name in ("config.json", "pytorch_model.bin"))


def _package_cached(size: int) -> tuple[str, str] | None:
    """The package cache's (config, weights) of `size`, found without asking the network, or None."""
    package = _package()
    name = f"biggan-deep-{size}"
    found = []
    for url in (package.model.PRETRAINED_CONFIG_ARCHIVE_MAP[name], package.model.PRETRAINED_MODEL_ARCHIVE_MAP[name]):
        prefix = Path(package.file_utils.PYTORCH_PRETRAINED_BIGGAN_CACHE) / package.file_utils.url_to_filename(url)
        found += [p for p in glob.glob(f"{prefix}*") if not p.endswith(".json")][:1]
    return (found[0], found[1]) if len(found) == 2 else None


def weights_location(size: int) -> tuple[str, bool]:
    """Where 'pretrained' finds the weights, and whether they are there (else they download on first use)."""
    try:
        package_copy = _package_cached(size)
    except BadInput:
        return "needs pip install 'evolver[biggan]'", False
    hub_copy = [f.cached() for f in hub_files(size)]
    if package_copy or all(hub_copy):
        return str(Path(package_copy[1] if package_copy else hub_copy[1]).parent), True
    return f"downloads on first use from {hub_files(size)[1]}", False


def _locate(size: int, weights: str) -> tuple[str, str]:
    """(config.json, pytorch_model.bin) for `weights`: 'pretrained' or a folder."""
    package = _package()
    name = f"biggan-deep-{size}"
    if weights != "pretrained":
        folder = Path(weights)
        files = folder / package.model.CONFIG_NAME, folder / package.model.WEIGHTS_NAME
        if not all(f.is_file() for f in files):
            raise BadInput(f"--generator-weights {weights}: expected a folder holding {files[0].name} and "
                           f"{files[1].name} (the files of {name}), or 'pretrained' or 'random'.")
        return str(files[0]), str(files[1])
    package_copy = _package_cached(size)
    if package_copy:
        return package_copy
    instead = (f"Put config.json and pytorch_model.bin of {name} in a folder and pass it as "
               "--generator-weights DIR, or use --generator-weights random.")
    also = [f"{package.file_utils.PYTORCH_PRETRAINED_BIGGAN_CACHE} (the package's cache)"]
    config, weights_file = hub_files(size)
    weights_path = fetch(weights_file, name, instead, also_looked=also)  # first: the offline error names it
    return str(fetch(config, name, instead, also_looked=also)), str(weights_path)



# what a BigGAN-deep config.json must give, and how (pytorch-pretrained-biggan's BigGANConfig)
CONFIG_FIELDS = {"output_dim": int, "z_dim": int, "class_embed_dim": int, "channel_width": int, "num_classes": int,
                 "layers": list, "attention_layer_position": int, "eps": float, "n_stats": int}


def _network(package, path: str):
    """(config, network) from a config.json, or BadInput naming what is wrong with the file."""
    try:
        config = package.BigGANConfig.from_json_file(path)
        wrong = [f"{k} ({getattr(config, k, None)!r})" for k, kind in CONFIG_FIELDS.items()
                 if not isinstance(getattr(config, k, None), kind) or isinstance(getattr(config, k), bool)
                 or kind is int and getattr(config, k) < 0]
        if config.output_dim not in (128, 256, 512):
            wrong.append(f"output_dim ({config.output_dim!r}: 128, 256 or 512)")
        network = None if wrong else package.BigGAN(config)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError, OSError, RuntimeError) \
            as err:  # a config that builds no network fails in the package's code, in any of these ways
        wrong = [f"{type(err).__name__}: {str(err)[:200]}"]
    if wrong:
        raise BadInput(f"The BigGAN config {path} is not a BigGAN-deep config.json: {', '.join(wrong)}. It is the "
                       "config.json of huggingface/biggan-deep-128, -256 or -512, beside its pytorch_model.bin.")
    return config, network

class BigGAN(Generator):
    """BigGAN-deep at 128, 256 or 512 pixels.

    Args:
        size: 128, 256 or 512.
        weights: 'pretrained', 'random' (seeded) or a folder with config.json and pytorch_model.bin.
        truncation: in (0, 1]; bounds the sampled noise and selects the batch-norm statistics.
        class_index: an ImageNet class to fix (only the noise evolves), or None to evolve both halves.
    """

    def __init__(self, size: int = 256, weights: str | Path = "pretrained", truncation: float = 0.7,
                 class_index: int | None = None, weights_seed: int = 0, device: str = "auto",
                 precision: str = "auto"):
        if not 0 < truncation <= 1:
            raise BadInput(f"BigGAN truncation must be in (0, 1], got {truncation}.")
        package = _package()
        name = f"biggan-deep-{size}"
        self.truncation = truncation
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if str(weights) == "random":
            config = random_config(size)
            with seeded_init(weights_seed):
                self.network = package.BigGAN(config)
                _settle_random(self.network, truncation)
            self.weights = f"random (seed {weights_seed}, untrained)"
        else:
            config_file, weights_file = _locate(size, str(weights))
            config, self.network = _network(package, config_file)
            state = load_state_file(weights_file)
            # the package itself loads with strict=False, which would hide a wrong file
            apply_state_dict(self.network, state, source=weights_file)
            self.weights = file_weights(weights_file, self.network)
        self.image_size = config.output_dim
        self.classes = config.num_classes
        if class_index is not None and not 0 <= class_index < self.classes:
            raise BadInput(f"--class {class_index} is out of range: {name} has classes 0–{self.classes - 1}.")
        self.class_index = class_index
        # eval() always: in train mode every forward moves the spectral-norm vectors
        self.network.eval().requires_grad_(False).to(self.device)
        self.code_dim = NOISE_DIM if class_index is not None else NOISE_DIM + config.class_embed_dim

    def _embedding(self, classes: torch.Tensor) -> torch.Tensor:
        return self.network.embeddings.weight.T[classes]  # Linear(num_classes -> 128) on a one-hot

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal((n, NOISE_DIM))
        outside = np.abs(noise) > 2
        while outside.any():  # the truncated normal of the BigGAN paper, on [-2, 2]
            noise[outside] = rng.standard_normal(outside.sum())
            outside = np.abs(noise) > 2
        noise = self.truncation * noise
        if self.class_index is not None:
            return noise.astype(np.float32)
        classes = torch.as_tensor(rng.integers(0, self.classes, n), device=self.device)
        embedding = self._embedding(classes).float().cpu().numpy()
        return np.concatenate([noise, embedding], axis=1).astype(np.float32)

    def differentiable(self, codes: torch.Tensor) -> torch.Tensor:
        if self.class_index is not None:
            fixed = self._embedding(torch.tensor([self.class_index], device=self.device))
            codes = torch.cat([codes, fixed.expand(len(codes), -1)], dim=1)
        with autocast(self.precision, self.device):
            images = self.network.generator(codes, self.truncation).float()
        return ((images + 1) / 2).clamp(0, 1)
