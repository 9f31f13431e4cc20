"""Training the DCGAN (Radford et al. 2016) on an image folder or on the procedural corpus.

The standard recipe: N(0, 0.02) initialisation, BCE on logits, the discriminator updated on a
real then a fake batch, the generator on fakes labelled real, Adam 2e-4 with beta1 0.5. Each
addition sits behind an option and is recorded: several D updates per G step, an exponential
moving average of G's weights (the average is what is saved), orthogonal initialisation and
orthogonal regularisation (Brock et al. 2019); classifier guidance against mode dropping (a
classifier trained on the corpus rewards batches of fakes whose families are confidently named and
evenly spread: the log Inception score, as in the class-balancing GAN of Rangwani et al. 2021);
class conditioning (G takes class weights beside its noise; an auxiliary head on D's last features
learns the classes of real images, and G is trained to have its fakes named as their class weights
say: AC-GAN, Odena et al. 2017), where the guide then names each fake against its class weights;
the mode-seeking regulariser against collapse within a class (MSGAN, Mao et al. 2019); and a warm
start from another training's checkpoint or saved generator.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save as safetensors_bytes
from torch import nn
from tqdm.auto import tqdm

from evolver.training.gan_recipe import (
    CONDITIONINGS,
    LOSSES,
    PROCEDURAL,
    RECIPE,
    GANTrainingConfig,
    data_batches,
    command_line,
    torch_bytes,
    class_names,
    class_weights,
    draw_inputs,
    log_inception_score,
    mode_seeking_loss,
    orthogonal_penalty,
    paired_inputs,
    read_checkpoint,
)
from evolver.training.stimnet import accuracy, train_classifier
from evolver_common import (
    BadInput,
    apply_state_dict,
    autocast,
    load_state_file,
    resolve_device,
    resolve_precision,
    seeded_init,
    write_atomic,
)
from evolver_common.images import png_bytes
from generators.dcgan import (
    NOISE_DIM,
    calibrate_batch_norm,
    dcgan_discriminator,
    dcgan_init,
    dcgan_network,
    spectrally_normalise,
)
from generators.corpus import FAMILIES, stimuli
from neurons.stimnet import build, normalise


class GANTrainer:
    """Holds G, D (and its class head, with --conditional), the guide classifier (with --guidance), their
    optimisers and the EMA copy; `step()` does one G update."""

    def __init__(self, config: GANTrainingConfig):
        if config.loss not in LOSSES:
            raise BadInput(f"--loss {config.loss}: unknown GAN loss. Valid losses: {', '.join(LOSSES)}.")
        if config.conditioning not in CONDITIONINGS:
            raise BadInput(f"--conditioning {config.conditioning}: unknown. Valid: {', '.join(CONDITIONINGS)} "
                           "(it takes effect with --conditional).")
        if not 0 <= config.ema < 1:
            raise BadInput(f"--ema {config.ema}: the decay of G's moving average must be in [0, 1), e.g. 0.999 "
                           "(0 = no average).")
        if config.guide_radius < 0:
            raise BadInput(f"--guide-radius {config.guide_radius}: the L2 radius of the guide's adversarial training "
                           "cannot be negative; give 0 (plain training) or a positive radius in pixel units, e.g. 1.")
        if config.mode_seeking < 0 or (config.mode_seeking and config.batch_size < 2):
            raise BadInput(f"--mode-seeking {config.mode_seeking} with --batch-size {config.batch_size}: the weight "
                           "must be 0 (off) or positive, e.g. 1 as MSGAN, and it pairs the batch's codes, so the "
                           "batch needs at least 2.")
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.class_names = class_names(config)
        self.classes = len(self.class_names)
        with seeded_init(config.seed):
            self.g = dcgan_network(self.classes)
            self.d = dcgan_discriminator(batch_norm=not config.spectral_norm, minibatch_std=config.minibatch_std)
            for net in (self.g, self.d):
                dcgan_init(net)
                if config.ortho_init:
                    for m in net.modules():
                        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                            nn.init.orthogonal_(m.weight)
            if config.spectral_norm:
                spectrally_normalise(self.d)  # the power iteration's start vector is drawn here, seeded
        if config.guidance and config.data != PROCEDURAL:
            raise BadInput(f"--guidance needs family labels, which only --data {PROCEDURAL} has; "
                           f"drop --guidance to train on {config.data}.")
        # trained by train_guide() on a fresh start, loaded from the checkpoint on a resume
        self.guide = build("guidenet", len(FAMILIES)).eval().requires_grad_(False) if config.guidance else None
        self.guide_accuracy = None
        self.g.to(self.device, memory_format=torch.channels_last)
        self.d.to(self.device, memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.g).eval().requires_grad_(False) if config.ema else None
        with seeded_init(config.seed + 4):
            self.d_classes = nn.Linear(self.d[-2].in_channels * 16, self.classes).to(self.device) \
                if self.classes else None
        betas = (config.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=config.lr, betas=betas)
        d_parameters = [*self.d.parameters(), *(self.d_classes.parameters() if self.d_classes is not None else ())]
        self.opt_d = torch.optim.Adam(d_parameters, lr=config.lr, betas=betas)
        self.noise = torch.Generator().manual_seed(config.seed + 1)
        self.done = 0
        self.averaged = 0  # updates the average of G has seen, a warm start's included

    def train_guide(self) -> None:
        """Train the guide: a classifier of the corpus's families with an architecture of its own, so
        the generator is not shaped by stimnet (the ground-truth neuron) or checknet (its judge)."""
        self.guide = train_classifier("guidenet", steps=self.config.guide_steps, seed=self.config.seed + 11,
                                      corpus_seed=self.config.seed + 1000, robust_radius=self.config.guide_radius,
                                      progress=False).requires_grad_(False)
        self.guide.to(self.device, memory_format=torch.channels_last)
        test = stimuli(2000, 999)
        self.guide_accuracy = round(accuracy(lambda x: self.guide(normalise(x.to(self.device))).cpu(),
                                             test.images, test.family), 4)

    def _inputs(self, n: int) -> torch.Tensor:
        return draw_inputs(n, self.classes, self.noise).to(self.device)

    def _discriminate(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits (n,) for images (n, 3, 64, 64) in [-1, 1] of `classes`: indices (n,) or class weights
        (n, classes), unused unconditionally. And AC-GAN's cross-entropy of the class head against
        them; 0 unconditionally or with the projection discriminator, whose logits add the projection
        of D's features on the class weights' embedding (the same head's rows)."""
        if self.d_classes is None:
            return self.d(images), torch.zeros(())
        features = self.d[:-2](images)
        scores, head = self.d[-2:](features), self.d_classes(features.flatten(1)).float()
        if self.config.conditioning == "projection":
            weights = classes if classes.ndim == 2 else F.one_hot(classes, self.classes).float()
            return scores + (head * weights).sum(1), torch.zeros(())
        return scores, F.cross_entropy(head, classes)

    def _guide_loss(self, fake: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The guide's say on fakes (n, 3, 64, 64) in [-1, 1] drawn from network inputs (n, 100 + classes):
        unconditionally minus the batch's log Inception score; conditionally the guide's cross-entropy
        against each fake's class weights, so that every family is drawn as a third network names it."""
        logits = self.guide(normalise((fake + 1) / 2)).float()
        if self.classes:
            return F.cross_entropy(logits, class_weights(inputs))
        return -log_inception_score(logits)

    def _loss_d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def _loss_g(self, fake: torch.Tensor) -> torch.Tensor:
        """The non-saturating loss: G's fakes labelled real (for hinge, minus D's score)."""
        if self.config.loss == "hinge":
            return -fake.mean()
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    def step(self, real_batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
        """One generator update after `d_steps` discriminator updates; returns (loss_d, loss_g)."""
        for _ in range(self.config.d_steps):
            real, labels = next(real_batches)
            real = real.to(self.device).contiguous(memory_format=torch.channels_last) * 2 - 1
            inputs = self._inputs(len(real))
            with autocast(self.precision, self.device):
                logits_real, named_real = self._discriminate(real, labels.to(self.device))
                with torch.no_grad():
                    fake = self.g(inputs[:, :, None, None])
                # AC-GAN's class head learns from real images only, so that G cannot teach it a code of its own
                logits_fake, _ = self._discriminate(fake, class_weights(inputs))
                loss_d = self._loss_d(logits_real.float(), logits_fake.float()) + named_real
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        inputs = self._inputs(self.config.batch_size)
        if self.config.mode_seeking:
            inputs = paired_inputs(inputs)
        with autocast(self.precision, self.device):
            fake = self.g(inputs[:, :, None, None])
            logits_fake, named_fake = self._discriminate(fake, class_weights(inputs))
            loss_g = self._loss_g(logits_fake.float()) + named_fake
            if self.guide is not None:
                loss_g = loss_g + self.config.guidance * self._guide_loss(fake, inputs)
            if self.config.mode_seeking:
                loss_g = loss_g + self.config.mode_seeking * mode_seeking_loss(fake, inputs)
        if self.config.ortho_reg:
            loss_g = loss_g + self.config.ortho_reg * orthogonal_penalty(self.g)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        if self.ema is not None:
            self._update_ema()
        self.done += 1
        return loss_d.item(), loss_g.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up (as TensorFlow's num_updates): early on the average would be mostly the
        # random initialisation, so the decay grows with the step count up to --ema.
        decay = min(self.config.ema, (1 + self.averaged) / (10 + self.averaged))
        self.averaged += 1
        for avg, live in zip(self.ema.state_dict().values(), self.g.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.lerp_(live, 1 - decay)
            else:
                avg.copy_(live)

    def final_generator(self) -> nn.Module:
        """What is saved: the moving average (with its own standing batch-norm statistics) when
        there is one, else G itself."""
        if self.ema is None:
            return self.g
        averaged = copy.deepcopy(self.ema)
        inputs = draw_inputs(512, self.classes, torch.Generator().manual_seed(self.config.seed + 3))
        calibrate_batch_norm(averaged, inputs)
        return averaged

    @torch.no_grad()
    def samples(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, 64, 64) in [0, 1] from the saved generator, in eval mode, for network inputs
        (n, 100 + classes)."""
        g = self.final_generator()
        was_training = g.training
        g.eval()
        images = (g(inputs[:, :, None, None].to(self.device)).float() + 1) / 2
        g.train(was_training)
        return images.clamp(0, 1).cpu()

    def state_dict(self) -> dict:
        state = {"g": self.g.state_dict(), "d": self.d.state_dict(), "opt_g": self.opt_g.state_dict(),
                 "opt_d": self.opt_d.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else {},
                 "noise": self.noise.get_state(), "done": self.done, "averaged": self.averaged}
        if self.guide is not None:
            state |= {"guide": self.guide.state_dict(), "guide_accuracy": self.guide_accuracy}
        if self.d_classes is not None:
            state["d_classes"] = self.d_classes.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.d_classes is not None:
            self.d_classes.load_state_dict(state["d_classes"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.guide is not None:
            self.guide.load_state_dict(state["guide"])
            self.guide.to(self.device, memory_format=torch.channels_last)
            self.guide_accuracy = state["guide_accuracy"]
        self.noise.set_state(state["noise"])
        self.done = state["done"]
        self.averaged = state.get("averaged", self.done)  # older checkpoints: no warm start, one update a step

    def start_from(self, checkpoint: Path) -> None:
        """Take G, D and the average G (G itself where the checkpoint kept none) from another
        training's checkpoint; optimisers, noise and step count start afresh. A conditional training
        may start from an unconditional one: G's class inputs then start at zero, D's class head afresh."""
        if checkpoint.suffix == ".safetensors" and checkpoint.is_file():
            self._start_from_generator(checkpoint)
            return
        saved = read_checkpoint(checkpoint, "--init-from", "checkpoint.pt or generator.safetensors")
        apply_state_dict(self.g, self._with_class_inputs(saved["g"], checkpoint), f"{checkpoint} (G)")
        self._take_discriminator(saved, checkpoint)
        if self.ema is not None:
            averaged = self._with_class_inputs(saved["ema"] or saved["g"], checkpoint)
            apply_state_dict(self.ema, averaged, f"{checkpoint} (average G)")
            self.averaged = saved.get("averaged", saved["done"]) if saved["ema"] else 0

    def start_d_from(self, checkpoint: Path) -> None:
        """Take D (and its class head) from another training's checkpoint, whatever G starts from: a
        fresh D set against a trained G gives it no useful gradient until D has caught up, and
        fine-tunes on 2 cores end before it has. As with `start_from`, a class head this training
        lacks (an unconditional one) is left out, and one the checkpoint lacks starts afresh."""
        self._take_discriminator(read_checkpoint(checkpoint, "--init-d-from"), checkpoint)

    def _take_discriminator(self, saved: dict, checkpoint: Path) -> None:
        apply_state_dict(self.d, saved["d"], f"{checkpoint} (D; its discriminator options must match these)")
        if self.d_classes is not None and "d_classes" in saved:
            apply_state_dict(self.d_classes, saved["d_classes"], f"{checkpoint} (D's class head)")

    def _start_from_generator(self, weights: Path) -> None:
        """G and its average from a saved generator (a train-gan output, the bundled weights); D starts
        afresh. The file is an average already, so the new one takes the full --ema decay at once."""
        g_state = self._with_class_inputs(load_state_file(weights), weights)
        apply_state_dict(self.g, g_state, f"{weights} (G)")
        if self.ema is not None:
            apply_state_dict(self.ema, g_state, f"{weights} (average G)")
            self.averaged = math.ceil((10 * self.config.ema - 1) / (1 - self.config.ema))

    def _with_class_inputs(self, g_state: dict, source: Path) -> dict:
        """An unconditional G's state with zero weights added for this training's class inputs."""
        first = g_state.get("0.weight")  # a foreign file without it: apply_state_dict lists what is missing
        if first is not None and first.shape[0] > NOISE_DIM and not self.classes:
            raise BadInput(f"--init-from {source}: its G is conditional ({first.shape[0] - NOISE_DIM} class inputs); "
                           "add --conditional to train from it, or start from an unconditional training.")
        if first is None or not self.classes or first.shape[0] != NOISE_DIM:
            return g_state
        return {**g_state, "0.weight": torch.cat([first, first.new_zeros(self.classes, *first.shape[1:])])}


def train_gan(config: GANTrainingConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train a DCGAN into the folder `out`: samples/, checkpoint.pt, generator.safetensors, card.json.

    With `resume`, continue from out/checkpoint.pt (whose config must match). Returns the path of
    generator.safetensors.
    """
    out = Path(out)
    checkpoint = out / "checkpoint.pt"
    trainer = GANTrainer(config)
    if resume:
        if not checkpoint.is_file():
            raise BadInput(f"--resume: {checkpoint} does not exist; train without --resume to start.")
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        # A checkpoint from before an option existed was trained with that option's default.
        recorded = {**dataclasses.asdict(GANTrainingConfig()), **json.loads(saved["config"])}
        differs = {k: (v, recorded.get(k)) for k, v in dataclasses.asdict(config).items()
                   if k in RECIPE and recorded.get(k) != v}
        if differs:
            raise BadInput(f"--resume {out}: options differ from the checkpoint's: " + "; ".join(
                f"{k}={new!r} (checkpoint {old!r})" for k, (new, old) in differs.items()) + ".")
        trainer.load_state_dict(saved["trainer"])
    elif checkpoint.exists():
        raise BadInput(f"{out} already holds a training run; add --resume to continue it or choose another --out.")
    else:
        if config.init_from:
            trainer.start_from(Path(config.init_from))
        if config.init_d_from:
            trainer.start_d_from(Path(config.init_d_from))
        if trainer.guide is not None:
            trainer.train_guide()
    (out / "samples").mkdir(parents=True, exist_ok=True)
    # conditional: a row of 8 per class (of the first 16)
    rows = min(trainer.classes, 16) or 8
    fixed_inputs = draw_inputs(8 * rows, trainer.classes, torch.Generator().manual_seed(config.seed + 2),
                               torch.arange(8 * rows) // 8 if trainer.classes else None)
    batches = data_batches(config, trainer.done * config.d_steps)
    started = time.time()
    bar = tqdm(total=config.steps, initial=trainer.done, desc="train-gan", unit="step", disable=not progress)
    deadline = started + 60 * config.max_minutes if config.max_minutes else float("inf")
    while trainer.done < config.steps:
        loss_d, loss_g = trainer.step(batches)
        bar.update(1)
        bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}")
        last = trainer.done == config.steps or time.time() > deadline
        if trainer.done % config.sample_every == 0 or last:
            grid = torchvision.utils.make_grid(trainer.samples(fixed_inputs), nrow=8, padding=1)
            write_atomic(out / "samples" / f"step_{trainer.done:06d}.png", png_bytes(grid))
        if trainer.done % config.checkpoint_every == 0 or last:
            state = {"trainer": trainer.state_dict(), "config": json.dumps(dataclasses.asdict(config))}
            write_atomic(checkpoint, torch_bytes(state))
        if last:
            break
    bar.close()
    weights = out / "generator.safetensors"
    g_state = {k: v.detach().float().contiguous().cpu() for k, v in trainer.final_generator().state_dict().items()}
    write_atomic(weights, safetensors_bytes(g_state))
    card_path = out / "card.json"
    earlier = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card = {
        **earlier,  # keeps figures that evaluations added
        "commands": [*earlier.get("commands", []), command_line()],
        "config": dataclasses.asdict(config), "steps": trainer.done,
        "corpus_seed": config.seed if config.data == PROCEDURAL else None, "precision": trainer.precision,
        "seconds_last_session": round(time.time() - started, 1),
        "saved": "moving average of G, batch-norm statistics recomputed for it" if trainer.ema is not None else "G",
        **({"guide_held_out_accuracy": trainer.guide_accuracy} if trainer.guide is not None else {}),
        **({"classes": list(trainer.class_names)} if trainer.classes else {}),
    }
    write_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode())
    return weights
