"""The GAN training recipe's parts: its configuration, its data streams and its losses (`evolver.training.gan`
puts them together)."""
from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from evolver_common import BadInput
from generators.dcgan import CLASS_INPUT_NORM, NOISE_DIM, class_logits, network_input
from generators.corpus import FAMILIES, corpus_batch

PROCEDURAL = "procedural"
# What a resumed training must share with the checkpoint (steps, logging and device may change).
RECIPE = ("data", "batch_size", "lr", "beta1", "d_steps", "ema", "ortho_init", "ortho_reg", "loss", "spectral_norm",
          "minibatch_std", "guidance", "guide_steps", "guide_radius", "conditional", "conditioning", "mode_seeking",
          "seed")
LOSSES = ("bce", "hinge")
# How D takes the classes: AC-GAN's class head (Odena et al. 2017), or the projection discriminator
# (Miyato & Koyama 2018), which matches each class's distribution and so keeps the variety within a class
CONDITIONINGS = ("acgan", "projection")


@dataclass
class GANTrainingConfig:
    """data: 'procedural' (the stimulus corpus) or an image folder (torchvision ImageFolder layout)."""

    data: str = PROCEDURAL
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    d_steps: int = 1
    ema: float = 0.0  # decay of the moving average of G's weights; 0 = off
    ortho_init: bool = False
    ortho_reg: float = 0.0  # weight of the orthogonal regulariser on G; 0 = off
    loss: str = "bce"  # or "hinge" (Lim & Ye 2017; SNGAN, BigGAN)
    spectral_norm: bool = False  # D's convs spectrally normalised, its batch norm removed
    minibatch_std: bool = False  # D sees a minibatch standard-deviation map
    guidance: float = 0.0  # weight of the guide classifier's term in G's loss (GANTrainer._guide_loss); 0 = off
    guide_steps: int = 800  # training steps of the guide classifier
    guide_radius: float = 0.0  # L2 radius (pixel units) of the guide's adversarial training; 0 = plain training
    conditional: bool = False  # G takes class weights (the corpus's families, the folder's classes); so does D
    conditioning: str = "acgan"  # or "projection": how D takes the classes (CONDITIONINGS)
    mode_seeking: float = 0.0  # weight of the mode-seeking term in G's loss (mode_seeking_loss); 0 = off
    init_from: str = ""  # another training's checkpoint.pt (G, D, average G) or saved generator (G) to start from
    init_d_from: str = ""  # another training's checkpoint.pt to take D (and its class head) from
    seed: int = 0
    sample_every: int = 250
    checkpoint_every: int = 250
    precision: str = "auto"
    device: str = "auto"
    workers: int = 0  # processes preparing batches; the stream is the same for any number
    max_minutes: float = 0.0  # stop (and save) after the step that passes this wall time; 0 = no limit


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def command_line() -> str:
    program = Path(sys.argv[0]).name
    return " ".join(["evolver" if program == "__main__.py" else program, *sys.argv[1:]])


def _image_folder_dataset(folder: str) -> torchvision.datasets.ImageFolder:
    path = Path(folder)
    if not path.is_dir():
        raise BadInput(f"--data {folder}: no such folder. Give '{PROCEDURAL}' or a folder of class subfolders of "
                       "images (torchvision ImageFolder layout).")
    transform = torchvision.transforms.Compose([
        torchvision.transforms.Resize(64), torchvision.transforms.CenterCrop(64), torchvision.transforms.ToTensor()])
    try:
        return torchvision.datasets.ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise BadInput(f"--data {folder} is not an image folder: {err}") from None


def class_names(config: GANTrainingConfig) -> tuple[str, ...]:
    """The classes a conditional generator is trained on (none for an unconditional one)."""
    if not config.conditional:
        return ()
    return FAMILIES if config.data == PROCEDURAL else tuple(_image_folder_dataset(config.data).classes)


def _image_folder(folder: str, batch_size: int, seed: int, start: int,
                  workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    dataset = _image_folder_dataset(folder)
    epoch = start
    while True:  # a resumed run starts a fresh shuffle, seeded by where it resumed
        shuffle = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                             num_workers=workers, generator=shuffle)
        yield from loader
        epoch += 1


class _CorpusStream(torch.utils.data.IterableDataset):
    """Batch k of the corpus goes to worker k mod W; the DataLoader takes one batch from each worker
    in turn, so W workers yield the same stream as one process."""

    def __init__(self, config: GANTrainingConfig, start: int):
        self.config, self.start = config, start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # the workers, not threads inside each, share the cores
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for k in itertools.count(self.start + worker, workers):
            batch = corpus_batch(self.config.seed, self.config.batch_size, k)
            yield batch.images, batch.family


def data_batches(config: GANTrainingConfig, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training images in [0, 1], (batch, 3, 64, 64), and their class indices (batch,), from batch
    `start` on, prepared by `config.workers` processes (0: by this one)."""
    if config.data != PROCEDURAL:
        return _image_folder(config.data, config.batch_size, config.seed, start, config.workers)
    stream = _CorpusStream(config, start)
    if config.workers == 0:
        return iter(stream)
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.workers, prefetch_factor=4))


def draw_inputs(n: int, classes: int, noise: torch.Generator, family: torch.Tensor | None = None) -> torch.Tensor:
    """Inputs (n, 100 + classes) of the network for codes drawn as `DCGAN.sample` draws them, from
    `noise`; the classes are `family` (n,) if given, else drawn uniformly."""
    codes = torch.randn(n, NOISE_DIM, generator=noise)
    if not classes:
        return codes
    if family is None:
        family = torch.randint(classes, (n,), generator=noise)
    logits = class_logits(family, torch.randn(n, classes, generator=noise))
    return network_input(torch.cat([codes, logits], 1), classes)


def class_weights(inputs: torch.Tensor) -> torch.Tensor:
    """The class weights (n, classes), summing to 1, in network inputs (n, 100 + classes)."""
    return inputs[:, NOISE_DIM:].float() / CLASS_INPUT_NORM


def orthogonal_penalty(network: nn.Module) -> torch.Tensor:
    """BigGAN's orthogonal regulariser: sum over weights of ||W W^T * (1 - I)||_F^2."""
    total = 0.0
    for m in network.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = m.weight.flatten(1)
            gram = w @ w.T
            total = total + (gram * (1 - torch.eye(len(w), device=w.device))).pow(2).sum()
    return total


def log_inception_score(logits: torch.Tensor) -> torch.Tensor:
    """H(mean prediction) - mean H(prediction) over a batch of class logits (n, k), in nats: high
    when each image is confidently one class and the batch covers the classes evenly (at most log k)."""
    log_p = logits.float().log_softmax(1)
    p = log_p.exp()
    mean = p.mean(0)
    return -(mean * mean.clamp_min(1e-12).log()).sum() + (p * log_p).sum(1).mean()


def paired_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """Network inputs (n, 100 + classes) whose second half takes the first half's class weights (its
    noise stays its own): pairs of codes asking for the same thing, for mode_seeking_loss. With n odd
    the last code stays as it is."""
    half = len(inputs) // 2
    paired = inputs.clone()
    paired[half:2 * half, NOISE_DIM:] = inputs[:half, NOISE_DIM:]
    return paired


def mode_seeking_loss(fake: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019) for fakes (n, 3, H, W) of paired_inputs (n, 100 + classes): the
    inverse of how far apart the images of a pair are for how far apart their noise is (mean absolute
    differences). It grows without bound as G draws the same image whatever the noise, which a
    conditional GAN tends to, most with a projection discriminator."""
    half = len(fake) // 2
    images = (fake[:half].float() - fake[half:2 * half].float()).abs().mean()
    noise = (inputs[:half, :NOISE_DIM].float() - inputs[half:2 * half, :NOISE_DIM].float()).abs().mean()
    return 1 / (images / noise + 1e-5)


def read_checkpoint(checkpoint: Path, option: str, accepted: str = "checkpoint.pt") -> dict:
    """The trainer state of another `evolver train-gan` run's checkpoint.pt, given to `option`;
    `accepted` names, for the error, the files that option takes."""
    if not checkpoint.is_file():
        raise BadInput(f"{option} {checkpoint}: no such file. Give the {accepted} of an earlier `evolver train-gan` "
                       "run.")
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["trainer"]
    except Exception as err:  # any unreadable or foreign file is the user's to replace
        raise BadInput(f"{option} {checkpoint} is not a train-gan checkpoint ({type(err).__name__}: {err}); "
                       "give the checkpoint.pt of an earlier `evolver train-gan` run.") from None
