import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import generators
from conftest import evolver_cli
from evolver_common import BadInput, seeded_init
from generators.dcgan import CLASS_INPUT_NORM, MinibatchStd, dcgan_discriminator, network_input, spectrally_normalise
from generators.corpus import FAMILIES, corpus_batch
from evolver.training.gan import (GANTrainer, GANTrainingConfig, class_weights, draw_inputs, log_inception_score,
                                 mode_seeking_loss, orthogonal_penalty, paired_inputs, train_gan)
from neurons.stimnet import build, normalise

SMALL = dict(batch_size=8, sample_every=2, checkpoint_every=2, precision="fp32")


def test_trains_saves_a_loadable_generator_and_a_card(tmp):
    weights = train_gan(GANTrainingConfig(steps=3, ema=0.9, **SMALL), tmp / "gan", progress=False)
    generator = generators.create("dcgan", weights=weights)
    images = generator.render(generator.sample(2, np.random.default_rng(0)))
    assert images.shape == (2, 3, 64, 64)
    card = json.loads((tmp / "gan" / "card.json").read_text())
    assert card["steps"] == 3 and card["config"]["ema"] == 0.9 and card["saved"].startswith("moving average of G")
    assert card["corpus_seed"] == 0
    assert sorted(p.name for p in (tmp / "gan" / "samples").iterdir()) == ["step_000002.png", "step_000003.png"]


def assert_resumed_equals_uninterrupted(tmp, steps: int, **options) -> Path:
    """Train `steps` at once and in two parts (resumed after 2) with `options`; the saved generators
    must be bit-identical. Returns the resumed training's weights."""
    whole = train_gan(GANTrainingConfig(steps=steps, **options, **SMALL), tmp / "whole", progress=False)
    train_gan(GANTrainingConfig(steps=2, **options, **SMALL), tmp / "parts", progress=False)
    parts = train_gan(GANTrainingConfig(steps=steps, **options, **SMALL), tmp / "parts", resume=True, progress=False)
    a, b = load_file(str(whole)), load_file(str(parts))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    return parts


@pytest.mark.slow  # 9 s: an exactness check over a whole training
def test_resumed_training_equals_uninterrupted_training(tmp):
    assert_resumed_equals_uninterrupted(tmp, 4, ema=0.5)


def test_workers_prepare_the_same_stream_as_one_process(tmp):
    one = train_gan(GANTrainingConfig(steps=3, **SMALL), tmp / "one", progress=False)
    two = train_gan(GANTrainingConfig(steps=3, workers=2, **SMALL), tmp / "two", progress=False)
    a, b = load_file(str(one)), load_file(str(two))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_max_minutes_stops_early_and_saves_the_step_reached(tmp):
    weights = train_gan(GANTrainingConfig(steps=1000, max_minutes=1e-6, **SMALL), tmp / "gan", progress=False)
    card = json.loads((tmp / "gan" / "card.json").read_text())
    assert weights.is_file() and card["steps"] == 1
    assert [p.name for p in (tmp / "gan" / "samples").iterdir()] == ["step_000001.png"]
    resumed = train_gan(GANTrainingConfig(steps=2, **SMALL), tmp / "gan", resume=True, progress=False)
    assert json.loads((tmp / "gan" / "card.json").read_text())["steps"] == 2 and resumed.is_file()


@pytest.mark.parametrize("flags", [dict(loss="hinge", spectral_norm=True), dict(minibatch_std=True)])
def test_discriminator_variants_train_resume_and_are_recorded(tmp, flags):
    train_gan(GANTrainingConfig(steps=2, **flags, **SMALL), tmp / "gan", progress=False)
    weights = train_gan(GANTrainingConfig(steps=3, **flags, **SMALL), tmp / "gan", resume=True, progress=False)
    card = json.loads((tmp / "gan" / "card.json").read_text())
    assert all(card["config"][k] == v for k, v in flags.items()) and card["steps"] == 3
    assert generators.create("dcgan", weights=weights).render(np.zeros((1, 100), np.float32)).isfinite().all()
    with pytest.raises(BadInput, match="spectral_norm|minibatch_std"):
        train_gan(GANTrainingConfig(steps=4, **SMALL), tmp / "gan", resume=True, progress=False)


def test_a_checkpoint_older_than_an_option_resumes_with_its_default(tmp):
    """The bundled generator's checkpoint was written before --loss, --spectral-norm and
    --minibatch-std existed; it was trained with their defaults and must resume."""
    train_gan(GANTrainingConfig(steps=2, **SMALL), tmp / "gan", progress=False)
    checkpoint = tmp / "gan" / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=True)
    recorded = json.loads(saved["config"])
    for option in ("loss", "spectral_norm", "minibatch_std"):
        del recorded[option]
    torch.save({**saved, "config": json.dumps(recorded)}, checkpoint)
    train_gan(GANTrainingConfig(steps=3, **SMALL), tmp / "gan", resume=True, progress=False)
    assert json.loads((tmp / "gan" / "card.json").read_text())["steps"] == 3
    with pytest.raises(BadInput, match="loss='hinge' \\(checkpoint 'bce'\\)"):
        train_gan(GANTrainingConfig(steps=4, loss="hinge", **SMALL), tmp / "gan", resume=True, progress=False)


def test_log_inception_score_rewards_confident_and_evenly_spread_families():
    confident = torch.eye(4) * 50  # four images, each surely another family
    assert log_inception_score(confident).item() == pytest.approx(np.log(4), abs=1e-4)
    assert log_inception_score(confident[[0, 0, 0, 0]]).item() == pytest.approx(0, abs=1e-4)  # one family only
    assert log_inception_score(torch.zeros(4, 4)).item() == pytest.approx(0, abs=1e-6)  # no family named


@pytest.mark.slow
def test_guidance_raises_the_guides_score_of_the_fakes():
    """Three G steps with the guidance term dominant must move G up the guide's log Inception score."""
    trainer = GANTrainer(GANTrainingConfig(guidance=1000, guide_steps=30, lr=1e-3, batch_size=32, precision="fp32"))
    trainer.train_guide()
    codes = torch.randn(64, 100, 1, 1, generator=torch.Generator().manual_seed(5))

    def score() -> float:
        with torch.no_grad():
            return log_inception_score(trainer.guide(normalise(trainer.g(codes) * 0.5 + 0.5))).item()

    before = score()
    real = ((b.images, b.family) for b in (corpus_batch(0, 32, k) for k in range(10)))
    for _ in range(3):
        trainer.step(real)
    assert score() > before + 0.05


@pytest.mark.slow
def test_conditional_guidance_makes_the_guide_name_each_fake_as_asked():
    """Conditionally the guide's term is its cross-entropy against each fake's class weights: six G
    steps with it dominant must lower that cross-entropy on fresh codes. Any guide will do: an
    untrained one keeps the test fast, its logits magnified so that they differ between images."""
    trainer = GANTrainer(GANTrainingConfig(guidance=1000, conditional=True, lr=3e-4, batch_size=32, precision="fp32"))
    with seeded_init(3):
        trainer.guide = build("guidenet", len(FAMILIES)).eval().requires_grad_(False)
    trainer.guide.classifier.weight.mul_(100)
    inputs = draw_inputs(64, len(FAMILIES), torch.Generator().manual_seed(5))

    def cross_entropy() -> float:
        with torch.no_grad():
            logits = trainer.guide(normalise(trainer.g(inputs[:, :, None, None]) * 0.5 + 0.5))
        return torch.nn.functional.cross_entropy(logits, class_weights(inputs)).item()

    before = cross_entropy()
    real = ((b.images, b.family) for b in (corpus_batch(0, 32, k) for k in range(6)))
    for _ in range(6):
        trainer.step(real)
    assert cross_entropy() < before - 0.3


def test_mode_seeking_pairs_codes_of_one_class_and_punishes_pairs_drawn_alike():
    inputs = draw_inputs(6, len(FAMILIES), torch.Generator().manual_seed(0))
    paired = paired_inputs(inputs)
    assert torch.equal(paired[:3], inputs[:3]) and torch.equal(paired[3:, 100:], inputs[:3, 100:])
    assert torch.equal(paired[3:, :100], inputs[3:, :100])
    fake = torch.rand(6, 3, 8, 8)
    by_hand = (fake[3:] - fake[:3]).abs().mean() / (paired[3:, :100] - paired[:3, :100]).abs().mean()
    assert mode_seeking_loss(fake, paired).item() == pytest.approx(1 / by_hand.item(), rel=1e-4)
    assert mode_seeking_loss(fake[[0, 1, 2, 0, 1, 2]], paired).item() == pytest.approx(1e5)
    odd = draw_inputs(7, len(FAMILIES), torch.Generator().manual_seed(1))
    assert torch.equal(paired_inputs(odd)[6], odd[6]) and torch.equal(paired_inputs(odd)[3:6, 100:], odd[:3, 100:])


@pytest.mark.slow
def test_mode_seeking_draws_the_codes_of_one_class_further_apart():
    """With the mode-seeking term dominant, a few G steps must spread the images of codes that ask for
    the same class (a fresh G draws them alike: its weights are small next to its batch norm)."""
    trainer = GANTrainer(GANTrainingConfig(mode_seeking=100, conditional=True, conditioning="projection", lr=1e-3,
                                           batch_size=32, precision="fp32"))
    paired = paired_inputs(draw_inputs(64, len(FAMILIES), torch.Generator().manual_seed(5)))

    def pair_distance() -> float:
        with torch.no_grad():
            fake = trainer.g(paired[:, :, None, None])
        return (fake[:32] - fake[32:]).abs().mean().item()

    before = pair_distance()
    real = ((b.images, b.family) for b in (corpus_batch(0, 32, k) for k in range(4)))
    for _ in range(4):
        trainer.step(real)
    assert pair_distance() > 1.2 * before


def test_mode_seeking_training_resumes_exactly_and_is_recorded(tmp):
    assert_resumed_equals_uninterrupted(tmp, 3, conditional=True, conditioning="projection", mode_seeking=1.0)
    card = json.loads((tmp / "parts" / "card.json").read_text())
    assert card["config"]["mode_seeking"] == 1.0
    with pytest.raises(BadInput, match="mode_seeking=0.0 \\(checkpoint 1.0\\)"):
        train_gan(GANTrainingConfig(steps=4, conditional=True, conditioning="projection", **SMALL), tmp / "parts",
                  resume=True, progress=False)


def test_the_command_line_refuses_a_negative_mode_seeking_weight_and_trains_nothing(tmp):
    result = evolver_cli("train-gan", "--out", tmp / "gan", "--steps", 1, "--mode-seeking", -1)
    assert result.returncode == 2 and "--mode-seeking -1.0 with --batch-size 128" in result.stderr, result.stderr
    assert not (tmp / "gan").exists()


@pytest.mark.slow
def test_guided_training_resumes_exactly_and_records_its_guide(tmp):
    assert_resumed_equals_uninterrupted(tmp, 3, guidance=0.5, guide_steps=3, guide_radius=0.5)
    card = json.loads((tmp / "parts" / "card.json").read_text())
    assert card["config"]["guidance"] == 0.5 and card["config"]["guide_radius"] == 0.5
    assert 0 <= card["guide_held_out_accuracy"] <= 1
    with pytest.raises(BadInput, match="guidance=0.0 \\(checkpoint 0.5\\)"):
        train_gan(GANTrainingConfig(steps=4, **SMALL), tmp / "parts", resume=True, progress=False)
    with pytest.raises(BadInput, match="--guidance needs family labels"):
        train_gan(GANTrainingConfig(data=str(tmp), steps=1, guidance=1, **SMALL), tmp / "folder", progress=False)


@pytest.mark.slow  # 6 s: two trainings
def test_init_from_starts_from_another_trainings_generator(tmp):
    source = train_gan(GANTrainingConfig(steps=2, ema=0.9, **SMALL), tmp / "source", progress=False)
    checkpoint = tmp / "source" / "checkpoint.pt"
    started = train_gan(GANTrainingConfig(steps=0, ema=0.9, init_from=str(checkpoint), **SMALL),
                        tmp / "started", progress=False)
    a, b = load_file(str(source)), load_file(str(started))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with pytest.raises(BadInput, match="do not match"):
        train_gan(GANTrainingConfig(steps=1, spectral_norm=True, init_from=str(checkpoint), **SMALL), tmp / "sn",
                  progress=False)
    # from a saved generator: G and its average as saved (a full average: the decay at once), D afresh
    from_file = GANTrainer(GANTrainingConfig(ema=0.9, **SMALL))
    fresh_d = {k: v.clone() for k, v in from_file.d.state_dict().items()}
    from_file.start_from(source)
    for key, value in load_file(str(source)).items():  # saved as floats, batch-norm step counts included
        torch.testing.assert_close(from_file.g.state_dict()[key], value, rtol=0, atol=0, check_dtype=False)
        torch.testing.assert_close(from_file.ema.state_dict()[key], value, rtol=0, atol=0, check_dtype=False)
    for key, value in from_file.d.state_dict().items():
        torch.testing.assert_close(value, fresh_d[key], rtol=0, atol=0)
    assert (1 + from_file.averaged) / (10 + from_file.averaged) >= 0.9
    conditional = train_gan(GANTrainingConfig(steps=1, conditional=True, **SMALL), tmp / "conditional", progress=False)
    with pytest.raises(BadInput, match="--init-from .*is conditional \\(12 class inputs\\); add --conditional"):
        from_file.start_from(conditional)
    with pytest.raises(BadInput, match="--init-from .*no such file"):
        train_gan(GANTrainingConfig(steps=1, init_from=str(tmp / "nope.pt"), **SMALL), tmp / "nope", progress=False)
    (tmp / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="--init-from .*is not a train-gan checkpoint"):
        train_gan(GANTrainingConfig(steps=1, init_from=str(tmp / "weights.pt"), **SMALL), tmp / "bad", progress=False)



@pytest.mark.slow  # 6 s: two trainings
def test_init_d_from_takes_only_the_discriminator_of_another_training(tmp):
    options = dict(conditional=True, conditioning="projection", ema=0.9, **SMALL)
    train_gan(GANTrainingConfig(steps=2, **options), tmp / "source", progress=False)
    saved = torch.load(tmp / "source" / "checkpoint.pt", weights_only=True)["trainer"]
    trainer = GANTrainer(GANTrainingConfig(**options))
    fresh_g = {k: v.clone() for k, v in trainer.g.state_dict().items()}
    trainer.start_d_from(tmp / "source" / "checkpoint.pt")
    for network, key in ((trainer.d, "d"), (trainer.d_classes, "d_classes")):
        for name, value in network.state_dict().items():
            torch.testing.assert_close(value, saved[key][name], rtol=0, atol=0)
    for name, value in trainer.g.state_dict().items():
        torch.testing.assert_close(value, fresh_g[name], rtol=0, atol=0)
    started = train_gan(GANTrainingConfig(steps=1, init_d_from=str(tmp / "source" / "checkpoint.pt"), **options),
                        tmp / "started", progress=False)
    assert json.loads((started.parent / "card.json").read_text())["config"]["init_d_from"].endswith("checkpoint.pt")
    unconditional = GANTrainer(GANTrainingConfig(ema=0.9, **SMALL))  # takes D's trunk, leaves its class head out
    unconditional.start_d_from(tmp / "source" / "checkpoint.pt")
    for name, value in unconditional.d.state_dict().items():
        torch.testing.assert_close(value, saved["d"][name], rtol=0, atol=0)
    with pytest.raises(BadInput, match="--init-d-from .*no such file"):
        trainer.start_d_from(tmp / "nope.pt")
    with pytest.raises(BadInput, match="checkpoint.pt \\(D; its discriminator options must match these\\) do not"):
        GANTrainer(GANTrainingConfig(spectral_norm=True, **options)).start_d_from(tmp / "source" / "checkpoint.pt")

def test_minibatch_std_map_is_zero_for_identical_images_and_not_for_varied_ones():
    same = MinibatchStd()(torch.ones(8, 2, 3, 3))
    assert same.shape == (8, 3, 3, 3) and same[:, 2].abs().max() == 0
    assert MinibatchStd()(torch.randn(8, 2, 3, 3))[:, 2].min() > 0


def test_spectral_norm_bounds_each_conv_by_one():
    d = dcgan_discriminator(batch_norm=False)
    spectrally_normalise(d)
    d.train()
    for _ in range(30):  # power iterations
        d(torch.randn(2, 3, 64, 64))
    d.eval()
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item() == pytest.approx(1, abs=0.05)


def test_unknown_loss_is_refused(tmp):
    with pytest.raises(BadInput, match="hinge"):
        train_gan(GANTrainingConfig(steps=1, loss="wasserstein", **SMALL), tmp / "gan", progress=False)


def test_options_behind_flags_run_and_are_recorded(tmp):
    config = GANTrainingConfig(steps=2, d_steps=2, ortho_init=True, ortho_reg=1e-4, **SMALL)
    train_gan(config, tmp / "gan", progress=False)
    card = json.loads((tmp / "gan" / "card.json").read_text())
    assert card["config"]["d_steps"] == 2 and card["config"]["ortho_init"] and card["config"]["ortho_reg"] == 1e-4
    assert card["saved"] == "G"


def test_image_folder_is_resized_and_cropped(tmp):
    rng = np.random.default_rng(0)
    (tmp / "images" / "any").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(tmp / "images" / "any" / f"{i}.png")
    config = GANTrainingConfig(data=str(tmp / "images"), steps=2, **{**SMALL, "batch_size": 4})
    train_gan(config, tmp / "gan", progress=False)
    assert json.loads((tmp / "gan" / "card.json").read_text())["corpus_seed"] is None


def test_orthogonal_penalty_is_zero_for_orthogonal_weights():
    conv = nn.Conv2d(16, 8, 3)
    nn.init.orthogonal_(conv.weight)
    assert orthogonal_penalty(conv).item() == pytest.approx(0, abs=1e-8)
    nn.init.normal_(conv.weight)
    assert orthogonal_penalty(conv).item() > 1


def test_bad_training_input(tmp):
    with pytest.raises(BadInput, match="no such folder"):
        train_gan(GANTrainingConfig(data=str(tmp / "nope"), steps=1, **SMALL), tmp / "a", progress=False)
    with pytest.raises(BadInput, match="does not exist; train without --resume"):
        train_gan(GANTrainingConfig(steps=1, **SMALL), tmp / "b", resume=True, progress=False)
    train_gan(GANTrainingConfig(steps=1, **SMALL), tmp / "c", progress=False)
    with pytest.raises(BadInput, match=r"lr=0.001 \(checkpoint 0.0002\)"):
        train_gan(GANTrainingConfig(steps=2, lr=1e-3, **SMALL), tmp / "c", resume=True, progress=False)
    with pytest.raises(BadInput, match="already holds a training run"):
        train_gan(GANTrainingConfig(steps=2, **SMALL), tmp / "c", progress=False)
    with pytest.raises(BadInput, match="--ema 1.0: .* must be in \\[0, 1\\)"):
        GANTrainer(GANTrainingConfig(ema=1.0, **SMALL))
    with pytest.raises(BadInput, match="--guide-radius -1.0: .* cannot be negative"):
        GANTrainer(GANTrainingConfig(guidance=1, guide_radius=-1.0, **SMALL))
    with pytest.raises(BadInput, match="--mode-seeking -1.0 with --batch-size 8: .* 0 \\(off\\) or positive"):
        GANTrainer(GANTrainingConfig(mode_seeking=-1.0, **SMALL))


@pytest.mark.slow  # a training: 9 s
def test_conditional_training_resumes_exactly_and_saves_a_generator_with_class_logits(tmp):
    parts = assert_resumed_equals_uninterrupted(tmp, 3, conditional=True, ema=0.5)
    card = json.loads((tmp / "parts" / "card.json").read_text())
    assert card["config"]["conditional"] and card["classes"] == list(FAMILIES)
    with Image.open(tmp / "parts" / "samples" / "step_000003.png") as grid:  # a row of 8 per class
        assert grid.size == (1 + 8 * 65, 1 + len(FAMILIES) * 65)
    generator = generators.create("dcgan", weights=parts)
    assert generator.classes == len(FAMILIES) and generator.code_dim == 100 + len(FAMILIES)
    codes = generator.sample(400, np.random.default_rng(0))
    assert codes.shape == (400, 112)
    weights = torch.as_tensor(codes[:, 100:]).softmax(1)  # the drawn class's logit is 4 above N(0, 1) noise
    assert 0.6 < weights.max(1).values.mean() < 0.85 and np.abs(codes[:, :100].std() - 1) < 0.05
    assert np.bincount(codes[:, 100:].argmax(1), minlength=12).min() > 15  # each class about 1 / 12 of codes
    extreme = np.concatenate([codes[:2, :100], np.full((2, 12), 1e4, np.float32) * np.eye(2, 12)], 1)
    assert generator.render(extreme).isfinite().all()
    with pytest.raises(BadInput, match="conditional=False \\(checkpoint True\\)"):
        train_gan(GANTrainingConfig(steps=4, ema=0.5, **SMALL), tmp / "parts", resume=True, progress=False)


def test_network_input_softmaxes_only_the_class_logits():
    codes = torch.cat([torch.randn(5, 100), torch.randn(5, 3) * 100], 1)
    inputs = network_input(codes, 3)
    assert torch.equal(inputs[:, :100], codes[:, :100])
    torch.testing.assert_close(inputs[:, 100:].sum(1), torch.full((5,), CLASS_INPUT_NORM))
    assert torch.equal(network_input(codes[:, :100], 0), codes[:, :100])


@pytest.mark.slow  # 5 s: two trainings
def test_conditional_training_starts_from_an_unconditional_one_as_it_was(tmp):
    """G's class inputs start at zero: the warm-started G draws the unconditional G's images whatever the
    class, D scores them as before; then the class inputs learn."""
    train_gan(GANTrainingConfig(steps=2, ema=0.9, **SMALL), tmp / "source", progress=False)
    checkpoint = tmp / "source" / "checkpoint.pt"
    source = GANTrainer(GANTrainingConfig(ema=0.9, **SMALL))
    source.start_from(checkpoint)
    started = GANTrainer(GANTrainingConfig(ema=0.9, conditional=True, **SMALL))
    started.start_from(checkpoint)
    noise = torch.randn(4, 100)
    inputs = torch.cat([noise, torch.eye(12)[[0, 3, 7, 11]]], 1)
    torch.testing.assert_close(started.samples(inputs), source.samples(noise), rtol=0, atol=1e-6)
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    logits, named = started._discriminate(images, torch.tensor([0, 3, 7, 11]))
    torch.testing.assert_close(logits, source.d(images), rtol=0, atol=1e-6)
    assert named.item() > 0
    started.step((b.images, b.family) for b in (corpus_batch(0, 8, k) for k in range(2)))
    assert started.g[0].weight[100:].abs().max() > 0


def test_conditional_training_on_a_folder_takes_its_classes(tmp):
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs", "owls"):
        (tmp / "images" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp / "images" / name / f"{i}.png")
    config = GANTrainingConfig(data=str(tmp / "images"), steps=2, conditional=True, **{**SMALL, "batch_size": 4})
    weights = train_gan(config, tmp / "gan", progress=False)
    assert json.loads((tmp / "gan" / "card.json").read_text())["classes"] == ["cats", "dogs", "owls"]
    assert generators.create("dcgan", weights=weights).code_dim == 103


def test_projection_discriminator_scores_image_and_class_together():
    """Its logit is the unconditional score plus the projection of D's features on the class's embedding
    (the head's rows): class weights give the weighted mix of the one-hot scores; no cross-entropy term."""
    trainer = GANTrainer(GANTrainingConfig(conditional=True, conditioning="projection", **SMALL))
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        unconditional = trainer.d(images)
        one_hot = torch.stack([trainer._discriminate(images, torch.full((3,), c))[0] for c in range(12)], 1)
        weights = torch.rand(3, 12).softmax(1)
        mixed, named = trainer._discriminate(images, weights)
    assert named.item() == 0
    head = trainer.d_classes(trainer.d[:-2](images).flatten(1))
    torch.testing.assert_close(one_hot, unconditional[:, None] + head)
    torch.testing.assert_close(mixed, (one_hot * weights).sum(1))
    assert one_hot.std(1).min() > 0  # the class changes the score


@pytest.mark.slow
def test_projection_conditional_training_resumes_exactly_and_is_recorded(tmp):
    assert_resumed_equals_uninterrupted(tmp, 3, conditional=True, conditioning="projection", ema=0.5)
    assert json.loads((tmp / "parts" / "card.json").read_text())["config"]["conditioning"] == "projection"
    with pytest.raises(BadInput, match="conditioning='acgan' \\(checkpoint 'projection'\\)"):
        train_gan(GANTrainingConfig(steps=4, conditional=True, ema=0.5, **SMALL), tmp / "parts", resume=True,
                  progress=False)
    with pytest.raises(BadInput, match="--conditioning auxiliary: unknown. Valid: acgan, projection"):
        GANTrainer(GANTrainingConfig(conditional=True, conditioning="auxiliary", **SMALL))
