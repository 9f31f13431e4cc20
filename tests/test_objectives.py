"""Objectives beyond one unit: model V1 cells, templates, composite expressions, population targets."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.utils import save_image

import neurons
from conftest import UNIT, evolver_cli
from evolver import RunConfig, run
from evolver_common import BadInput
from evolver_common.images import read_image
from generators.corpus import stimuli
from neurons.objective import describe, parse
from neurons.template import reconstruction_quality
from neurons.v1 import Tuning, V1Cell, gabor


def grating(ori: float, sf: float = 6, phase: float = 0, size: int = 64) -> torch.Tensor:
    """A full-field sinusoidal grating (1, 3, size, size) in [0, 1] in V1Cell's conventions."""
    kernel = gabor(Tuning(ori=ori, sf=sf, size=100, phase=phase), size, size)
    return (0.5 + 0.5 * kernel / kernel.abs().max())[None, None].expand(1, 3, size, size).clone()


# ------------------------------------------------------------------------------------------- V1 cells

def test_v1_cells_are_tuned_to_orientation_frequency_and_phase():
    cell = V1Cell("v1:complex:ori=30:sf=6")
    responses = {ori: cell(grating(ori))[0] for ori in range(0, 180, 15)}
    assert max(responses, key=responses.get) == 30
    assert cell(grating(30, sf=6)) > 3 * cell(grating(30, sf=2))
    phases = [cell(grating(30, phase=p))[0] for p in (0, 45, 90, 180)]
    assert np.ptp(phases) < 0.02 * np.mean(phases)  # the energy model ignores phase
    simple = V1Cell("v1:simple:ori=30:sf=6")
    assert simple(grating(30))[0] > 0 > simple(grating(30, phase=180))[0]  # signed drive: inhibition is seen
    assert abs(simple(torch.full((1, 3, 64, 64), 0.7))[0]) < 1e-6  # a uniform field drives nothing


@pytest.mark.parametrize("spec", ["v1:edge", "v1:simple:ori", "v1:simple:tilt=4", "v1:simple:size=0",
                                  "v1:simple:x=2", "v1:complex:ori=30:ori=40"])
def test_malformed_v1_specs_name_the_parameters(spec):
    with pytest.raises(BadInput, match="v1:simple|complex"):
        neurons.create(spec)


# ------------------------------------------------------------------------------------------- templates

def test_template_recognises_its_target(tmp):
    target = stimuli(1, 11).images  # (1, 3, 64, 64)
    save_image(target[0], tmp / "target.png")
    pixels = neurons.create(f"template:{tmp / 'target.png'}")
    assert pixels(target)[0] > 0.99 and (pixels(stimuli(8, 12).images) < 0.9).all()


@pytest.mark.slow
def test_template_evolution_moves_towards_its_target(tmp, bundled_dcgan, record_property):
    target = stimuli(1, 11).images  # (1, 3, 64, 64)
    save_image(target[0], tmp / "target.png")
    result = run(RunConfig(neuron=f"template:{tmp / 'target.png'}", optimizer="cmaes", generations=40), out=tmp / "t",
                 progress=False)
    quality = reconstruction_quality(read_image(result.path / "best.png"), target)
    assert quality["pixel_correlation"][0] == pytest.approx(result.best, abs=0.02)  # the PNG is the best image
    first = reconstruction_quality(bundled_dcgan.render(np.load(result.path / "codes" / "gen_0000.npy")), target)
    # moving towards the target is the objective's pixel correlation rising; SSIM is not asserted, as it
    # may fall meanwhile (scripts/check_objectives.py: 0.67 -> 0.52 over 100 generations; the match is
    # in layout and colour, not in fine structure)
    record_property("margin", round(result.best - first["pixel_correlation"].max() - 0.03, 3))
    assert result.best > first["pixel_correlation"].max() + 0.03


def test_template_in_a_cnn_layer(tmp, images):
    path = tmp / "target.png"
    save_image(images[0], path)
    features = neurons.create(f"template:{path}:resnet18:layer2", weights="random")
    responses = features(images)
    assert responses[0] > 0.99 and responses[0] == responses.max()


def test_missing_template_image_is_a_clear_error(tmp):
    with pytest.raises(BadInput, match="target image .* does not exist"):
        neurons.create(f"template:{tmp / 'nothing.png'}")


# ------------------------------------------------------------------------------------------- grammar

@pytest.mark.parametrize("text, canonical", [
    ("resnet18:layer2:unit3 - 0.5*resnet18:layer2:4", "resnet18:layer2:unit3 - 0.5*resnet18:layer2:unit4"),
    ("2 * (a:b:1 + a:b:2) - 3", "2*(a:b:unit1 + a:b:unit2) - 3"),
    ("-(v1:simple:ori=90)", "-v1:simple:ori=90"),
    ("mean(a:b:unit0-63)", "mean(a:b:unit0-63)"),
    ("onehot(a:b:unit[1,5,9-12], 9, max)", "onehot(a:b:unit[1,5,9-12], 9, max)"),
    ("a:b:1@2,3 + max(a:b:0-3@mean)*0.5", "a:b:unit1@2,3 + 0.5*max(a:b:unit0-3@mean)"),
])
def test_expressions_parse_to_a_canonical_form(text, canonical):
    assert describe(parse(text)) == canonical
    assert describe(parse(canonical)) == canonical


@pytest.mark.parametrize("text, position, reason", [
    ("a:b:1 +", 8, "found the end"),
    ("a:b:1 * a:b:2", 1, "only one factor"),
    ("(a:b:1", 7, "expected '\\)'"),
    ("a:b:1 + foo(a:b:1)", 9, "unknown function 'foo'"),
    ("a:b:0-3 + a:b:1", 1, "different numbers of responses"),
    ("3 * 2", 1, "names no neuron"),
    ("a:b:1 + a-b", 9, "needs spaces around it"),
    ("onehot(a:b:0-3, 9)", 17, "unit 9 is not in the set"),
    ("onehot(a:b:1, 1)", 8, "first argument is a set"),
    ("a:b:1 )", 7, "found '\\)'"),
    ("1e999 * a:b:1", 1, "out of range"),
])
def test_malformed_expressions_point_at_the_error(text, position, reason):
    with pytest.raises(BadInput, match=f"at character {position}: .*{reason}") as error:
        parse(text)
    assert error.value.args[0].splitlines()[2].index("^") == position + 1  # the caret sits under it


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:1234567890-+*(),.@[] mexonhtuv")), max_size=40))
def test_the_grammar_never_raises_anything_but_bad_input(text):
    try:
        tree = parse(text)
    except BadInput:
        return
    assert describe(parse(describe(tree))) == describe(tree)


# ------------------------------------------------------------------------------------------- composites

def test_composite_equals_its_parts_and_shares_one_forward_pass(images):
    a, b = UNIT, "resnet18:layer3:unit7@mean"
    composite = neurons.create(f"{a} - 0.5*{b} + 1", weights="random")
    expected = neurons.create(a, weights="random")(images) - 0.5 * neurons.create(b, weights="random")(images) + 1
    np.testing.assert_allclose(composite(images), expected, rtol=1e-4, atol=1e-4)
    assert list(composite.readers) == ["resnet18"]  # two layers, one network, one forward pass
    calls = []
    composite.readers["resnet18"].network.register_forward_hook(lambda *_: calls.append(1))
    composite(images)
    assert len(calls) == 1


def test_unit_sets_reductions_and_one_hot(images):
    layer = neurons.create("resnet18:layer2:unit0-7", weights="random")
    responses = layer(images)
    assert responses.shape == (12, 8) and layer.outputs == 8
    np.testing.assert_allclose(neurons.create("mean(resnet18:layer2:unit0-7)", weights="random")(images),
                               responses.mean(1), rtol=1e-5)
    onehot = neurons.create("onehot(resnet18:layer2:unit0-7, 3, max)", weights="random")(images)
    np.testing.assert_allclose(onehot, responses[:, 3] - np.delete(responses, 3, axis=1).max(1), rtol=1e-5)


def test_an_expression_of_a_set_is_not_an_objective(tmp):
    """A plain unit set is one evolution a unit (evolver.run); an expression of one gives a response a unit
    and must be reduced to one."""
    with pytest.raises(BadInput, match="8 responses per image .* mean\\(\\.\\.\\.\\)"):
        run(RunConfig(neuron="2*resnet18:layer2:unit0-7", weights="random", generations=2), out=tmp / "r",
            progress=False)


@pytest.mark.slow
def test_one_hot_population_run_raises_the_target_above_the_rest(tmp, bundled_dcgan, record_property):
    # The bundled world, as scripts/check_objectives.py measures it. In bf16 the other units' mean also
    # fell below the first generation's; in fp32 (a CPU without bf16) it stayed level (0.94 against 0.92),
    # so what is asserted is what both show: the target above every first image, and the image selective.
    population = "stimnet:relu4:unit0-15"
    result = run(RunConfig(neuron=f"onehot({population}, 6)", generations=100), out=tmp / "p", progress=False)
    units = neurons.create(population)
    first = units(bundled_dcgan.render(np.load(result.path / "codes" / "gen_0000.npy")))
    best = units(bundled_dcgan.render(np.load(result.path / "best_code.npy")[None]))[0]
    share = best[6] / best.sum()  # the target's part of the population's summed response
    first_share = (first[:, 6] / first.sum(1)).mean()
    record_property("margin", {"target_over_first_max": round(float(best[6] / first[:, 6].max()), 2),
                               "share_over_first_share": round(float(share / first_share), 2)})
    assert best[6] > first[:, 6].max()
    assert share > 2 * first_share


@pytest.mark.slow  # an outcome check
def test_minimize_finds_a_stimulus_below_every_first_generation_image(tmp):
    result = evolver_cli("run", "--neuron", UNIT, "--weights", "random", "--generator-weights", "random",
                         "--minimize", "--generations", 15, "--out", tmp / "m", "--quiet", check=True)
    assert "Best response" in result.stdout
    config = json.loads((tmp / "m" / "config.json").read_text())
    assert config["run"]["minimize"] and config["resolved"]["neuron"]["spec"] == f"-{UNIT}"
    table = pd.read_csv(tmp / "m" / "generations.csv")
    assert table["best_so_far"].iloc[-1] > table["best"].iloc[0]  # the objective -response rose: the response fell


def test_the_command_line_refuses_a_malformed_expression_with_its_position():
    result = evolver_cli("run", "--neuron", f"{UNIT} * {UNIT}", "--weights", "random", "--generations", 1)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "at character 1: a product may have only one factor that is not a number" in result.stderr
