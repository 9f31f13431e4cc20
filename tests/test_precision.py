import json

import numpy as np

import pytest
import torch
from torch import nn
from torchvision.utils import save_image

import generators
import neurons
from evolver_common import BadInput
from evolver_common.compute import bf16_is_native, resolve_precision
from neurons import precision
from neurons.precision import agreement, bf16_verdict, check_bf16


def test_agreement_of_rankings():
    x = torch.randn(40, 5)
    assert agreement(x, x) == pytest.approx((1.0, 1.0))
    spearman, overlap = agreement(x, -x)
    assert spearman == pytest.approx(-1.0) and overlap == 0.0
    assert agreement(torch.ones(40, 3), torch.randn(40, 3)) == (1.0, 1.0)  # units that never vary are left out


class Offset(nn.Module):
    """Responses 1000 + a small image-dependent part: bf16's 8-bit mantissa rounds the part away."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)
        nn.init.normal_(self.linear.weight, 0, 0.05)
        nn.init.constant_(self.linear.bias, 1000.0)

    def forward(self, images):
        return {"out": self.linear(images.mean((2, 3)))}


def test_a_network_whose_ranking_bf16_breaks_is_kept_in_fp32():
    verdict = check_bf16(Offset(), torch.device("cpu"), (8, 8))
    assert not verdict["bf16"] and verdict["spearman"] < 0.99


def test_verdicts_are_cached(tmp, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp))
    calls = []
    monkeypatch.setattr(precision, "check_bf16", lambda *a: calls.append(a) or {"bf16": False, "spearman": 0.5,
                                                                                "top10_overlap": 0.5})
    for _ in range(2):
        assert bf16_verdict({"model": "m", "layers": ["l"], "weights": "random"}, None, torch.device("cpu"),
                            (8, 8))["bf16"] is False
    assert len(calls) == 1 and len(json.loads((tmp / "evolver" / "precision.json").read_text())) == 1


def test_auto_precision_records_its_check(tmp, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp))
    neuron = neurons.create("resnet18:layer3:unit5", weights="random")
    if resolve_precision("auto", torch.device("cpu")) == "bf16":
        check = neuron.reader.precision_check
        assert check["spearman"] >= 0.99 and neuron.precision == ("bf16" if check["bf16"] else "fp32")
    else:
        assert neuron.reader.precision_check is None and neuron.precision == "fp32"
    assert neurons.create("resnet18:layer3:unit5", weights="random", precision="fp32").reader.precision_check is None


def test_the_environment_says_what_auto_means(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("EVOLVER_PRECISION", raising=False)
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_is_native(cpu) else "fp32")
    for forced in ("fp32", "bf16"):
        monkeypatch.setenv("EVOLVER_PRECISION", forced)
        assert resolve_precision("auto", cpu) == forced and resolve_precision("fp32", cpu) == "fp32"
        assert generators.create("dcgan", weights="random").precision == forced
    monkeypatch.setenv("EVOLVER_PRECISION", "fp16")
    with pytest.raises(BadInput, match="EVOLVER_PRECISION='fp16' is not a precision; set it to fp32 or bf16"):
        resolve_precision("auto", cpu)


@pytest.mark.slow
def test_a_compiled_neuron_answers_as_the_eager_one_and_a_run_records_it(tmp):
    from evolver import RunConfig, run

    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    eager = neurons.create("stimnet:relu3:unit2", precision="fp32")
    compiled = neurons.create("stimnet:relu3:unit2", precision="fp32")
    compiled.compile()
    assert compiled.reader.network is not compiled.reader.eager
    assert compiled(images) == pytest.approx(eager(images), rel=1e-4, abs=1e-5)
    result = run(RunConfig(neuron="stimnet:relu3:unit2", generations=2, compile=True, precision="fp32"),
                 out=tmp / "run", progress=False)
    assert json.loads((result.path / "config.json").read_text())["run"]["compile"] is True


def test_a_failed_compile_warns_and_runs_uncompiled(monkeypatch):
    def broken(network, **options):
        def fail(images):
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    images = torch.rand(3, 3, 64, 64)
    neuron = neurons.create("stimnet:relu3:unit2", precision="fp32")
    expected = neuron(images)
    neuron.compile()
    with pytest.warns(UserWarning, match="torch.compile failed for stimnet.*no C\\+\\+ compiler"):
        assert neuron(images) == pytest.approx(expected)
    assert neuron.reader.network is neuron.reader.eager


def test_composites_and_templates_compile_the_networks_they_read(tmp):
    save_image(torch.rand(3, 16, 16), tmp / "target.png")
    composite = neurons.create("stimnet:relu3:unit2 - 0.5*stimnet:relu4:unit1 + v1:complex:ori=30")
    template = neurons.create(f"template:{tmp / 'target.png'}:stimnet:relu2")
    for neuron, readers in ((composite, composite.readers.values()), (template, [template.reader])):
        neuron.compile()  # lazy: nothing compiles before the first images
        assert all(reader.eager is not None and reader.network is not reader.eager for reader in readers)


def test_units_are_read_in_fp32_resolution_when_the_body_runs_in_bf16(dcgan):
    images = dcgan.render(dcgan.sample(18, np.random.default_rng(3)))
    bf16 = neurons.create("stimnet:classifier:unit7", precision="bf16")
    exact = neurons.create("stimnet:classifier:unit7", precision="fp32")(images)
    responses = bf16(images)
    assert len(set(responses.tolist())) == 18  # bf16's 8 bits would tie some of them
    assert np.abs(responses - exact).max() < 0.05 * np.abs(exact).max()
    figures = check_bf16(bf16.reader.network, bf16.device, (64, 64))
    assert figures["top10_ties_fp32_read"] == 0 < figures["top10_ties_bf16_read"]
