"""evolver from Python, with a lab's own objects: a module's unit, a plain callable, a registered model,
callbacks and stopping rules, and resuming a run built from objects."""
import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import evolver
import generators
import neurons
from conftest import ROOT, evolver_cli
from evolver import optimizers
from evolver_common import BadInput
from neurons.models import MODELS
from test_same_results import assert_same_records


class TinyNet(nn.Module):
    """A lab's own model: two conv stages and a read-out."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 8, 5, stride=2), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(8, 16, 3), nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def evolve(out, generations: int, on_generation=()) -> evolver.RunResult:
    """What a lab writes: one unit of its own network, evolved from Python."""
    neuron = neurons.from_module(tiny_net(), "relu2", unit=3, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    return evolver.run(neuron=neuron, generator_weights="random", optimizer="ga", params={"population": 12},
                       generations=generations, out=out, progress=False, on_generation=on_generation)


def kill_at(gen: int):
    def kill(record):
        if record.gen == gen:
            os.kill(os.getpid(), signal.SIGKILL)
    return kill


@pytest.mark.slow  # a kill and an exact resume: 9 s
def test_a_modules_unit_evolves_and_resumes_after_a_kill_to_the_same_result(tmp):
    whole = evolve(tmp / "whole", 8)
    assert whole.generations == 8 and whole.best > whole.first_best
    code = f"import test_python_api as t; t.evolve({str(tmp / 'killed')!r}, 8, [t.kill_at(4)])"
    killed = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    config = json.loads((tmp / "killed" / "config.json").read_text())
    assert config["run"]["neuron"]["object"]["spec"] == "tinynet:relu2:unit3"
    assert "weights sha1" in config["resolved"]["neuron"]["weights"]
    with pytest.raises(BadInput, match="neuron was a Python object"):
        evolver.resume(tmp / "killed", progress=False)
    neuron = neurons.from_module(tiny_net(), "relu2", unit=3, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    resumed = evolver.resume(tmp / "killed", neuron=neuron, progress=False)
    assert resumed.generations == 8
    assert_same_records(tmp / "killed", tmp / "whole")


def test_resuming_with_a_different_object_is_refused(tmp):
    evolve(tmp / "run", 2)
    other = tiny_net()
    with torch.no_grad():
        other.conv2.weight.mul_(2)
    neuron = neurons.from_module(other, "relu2", unit=3, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(BadInput, match="conflict with the run's config.json"):
        evolver.resume(tmp / "run", neuron=neuron, generations=3, progress=False)


def test_a_plain_callable_is_a_neuron(tmp):
    def redness(images):  # (n, 3, H, W) in [0, 1] -> (n,)
        return images[:, 0].mean((1, 2)) - images[:, 1:].mean((1, 2, 3))

    seen = []
    result = evolver.run(neuron=redness, generator_weights="random", optimizer="cmaes", generations=6, out=tmp / "run",
                         progress=False, on_generation=[seen.append])
    assert [r.gen for r in seen] == list(range(6))
    assert result.best == max(r.best for r in seen) and result.best > result.first_best
    best = torch.from_numpy(np.load(tmp / "run" / "best_code.npy"))[None]
    image = generators.create("dcgan", weights="random").render(best)
    assert redness(image).item() == pytest.approx(result.best, rel=1e-5)
    recorded = json.loads((tmp / "run" / "config.json").read_text())["run"]["neuron"]["object"]
    assert recorded["spec"].startswith("python:") and "redness" in recorded["spec"]


def test_a_callable_giving_the_wrong_shape_is_bad_input(tmp):
    with pytest.raises(BadInput, match=r"returned responses of shape \(.*, 2\)"):
        evolver.run(neuron=lambda images: torch.zeros(len(images), 2), generator_weights="random", generations=2,
                    out=tmp / "run", progress=False)
    with pytest.raises(BadInput, match="neurons.from_module"):
        evolver.run(neuron=tiny_net(), generations=2, out=tmp / "other", progress=False)


def test_from_module_lists_its_layers_and_says_what_it_assumes():
    """A module of this session: no command can list its layers, so the error does. Its input, where not
    given, is ImageNet's, with a warning naming each assumption."""
    with pytest.raises(BadInput, match=r"no layer 'relu9' \(closest: relu2, relu1\)\. Its layers: conv1, relu1, .*, head\.$"):
        neurons.from_module(tiny_net(), "relu9", input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.warns(UserWarning, match=r"input_size=224, ImageNet's mean, ImageNet's std assumed"):
        neurons.from_module(tiny_net(), "relu2")
    with pytest.warns(UserWarning, match=r"'relu2'\): ImageNet's mean, ImageNet's std assumed"):
        neurons.from_module(tiny_net(), "relu2", input_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neurons.from_module(tiny_net(), "relu2", input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)


def test_objects_for_the_generator_and_the_optimizer(tmp):
    generator = generators.create("dcgan", weights="random")
    optimizer = optimizers.create("random", code_dim=generator.code_dim, sample=generator.sample,
                                  rng=np.random.default_rng(1), population=6)
    result = evolver.run(neuron="v1:simple:ori=45", generator=generator, optimizer=optimizer, generations=3,
                         out=tmp / "run", progress=False)
    assert result.generations == 3
    recorded = json.loads((tmp / "run" / "config.json").read_text())["run"]
    assert recorded["generator"]["object"]["class"] == "generators.dcgan.DCGAN"
    assert recorded["optimizer"]["object"]["name"] == "random"
    wrong = optimizers.create("random", code_dim=5, sample=lambda n, rng: rng.standard_normal((n, 5)),
                              rng=np.random.default_rng(1))
    with pytest.raises(BadInput, match="5-d codes"):
        evolver.run(neuron="v1:simple:ori=45", generator=generator, optimizer=wrong, generations=2,
                    out=tmp / "wrong", progress=False)


def test_stop_when_no_improvement_ends_each_unit_of_a_set_on_its_own_and_says_so(tmp):
    with pytest.warns(UserWarning, match=r"unit\d: its stop_when rule ended the run after generation \d+ \(of 60") \
            as stops:
        results = evolver.run(neuron=neurons.from_module(tiny_net(), "head", unit=range(3), input_size=32,
                                                         mean=(0.5,) * 3, std=(0.25,) * 3),
                              generator_weights="random", optimizer="random", params={"population": 4},
                              generations=60, out=tmp / "set", progress=False, stop_when=evolver.no_improvement(3))
    assert [r.path.name for r in results] == ["unit0", "unit1", "unit2"]
    assert len([s for s in stops if "stop_when" in str(s.message)]) == 3
    for result in results:
        bests = pd.read_csv(result.path / "generations.csv")["best_so_far"].to_numpy()
        assert len(bests) < 60 and bests[-1] == bests[-4] and (len(bests) == 4 or bests[-4] > bests[-5])
        assert f"its stop_when rule ended the run after {len(bests)} of the 60 generations asked" in result.notes


@pytest.mark.slow  # a sweep's worker process: 8 s
def test_a_registered_model_works_in_the_cli_expressions_and_sweeps(tmp, monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # registered for this test alone
    neurons.register_model("tinynet", tiny_net, {"size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3})
    result = evolver_cli("run", "--neuron", "tinynet:relu2:unit3 - 0.5*tinynet:head:unit1", "--generator-weights",
                         "random", "--generations", 2, "--population", 6, "--out", tmp / "cli", "--quiet", check=True)
    assert "Best response" in result.stdout
    layers = evolver_cli("layers", "tinynet", check=True)
    assert "relu2" in layers.stdout and "16" in layers.stdout
    from evolver.aggregate import aggregate
    from evolver.sweep import sweep

    spec = {"grid": {"neuron": ["tinynet:relu2:unit3", "tinynet:relu2:unit15@mean"], "optimizer": ["random"]},
            "params": {"random": {"population": [4]}}, "run": {"generations": 2, "generator_weights": "random"}}
    assert sweep(spec, tmp / "sweep", workers=2)["started"] == 2  # in two spawned processes
    assert len(aggregate(tmp / "sweep").runs) == 2
    with pytest.raises(BadInput, match="cannot be empty or hold ':'"):
        neurons.register_model("a:b", tiny_net, {"size": 32})
    with pytest.raises(BadInput, match="with size \\(a side or \\(H, W\\)\\)"):
        neurons.register_model("tinynet2", tiny_net, {"input_size": 32})


def test_stepping_a_loop_by_hand_records_each_generation(tmp):
    with evolver.start(neuron="v1:simple:ori=90", generator_weights="random", optimizer="ga", generations=3,
                       out=tmp / "run") as loop:
        steps = []
        while loop.active():
            steps.append(loop.step())
    assert [[r.gen for r in records] for records in steps] == [[0], [1], [2]]
    assert loop.step() == []
    table = pd.read_csv(tmp / "run" / "generations.csv")
    assert table["best_so_far"].tolist() == [records[0].best_so_far for records in steps]
    assert evolver.resume(tmp / "run", progress=False).generations == 3  # finished: nothing left to do


def test_one_registry_type_for_kinds_generators_and_optimizers(tmp, monkeypatch):
    from evolver.optimizers.random_search import RandomSearch

    class Mine(RandomSearch):
        name = "mine"

    class Brightness(neurons.Neuron):
        weights = "none"

        def __init__(self, spec, **options):
            self.spec = spec

        @classmethod
        def parse(cls, spec):
            return spec

        def __call__(self, images):
            return images.mean((1, 2, 3)).double().numpy()

    for registry in (optimizers.REGISTRY, generators.REGISTRY, neurons.KINDS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    optimizers.REGISTRY.register("mine", Mine)
    neurons.KINDS.register("bright", Brightness)
    generators.register("dcgan-random", lambda **options: generators.create("dcgan", weights="random"), "100", 64)
    result = evolver.run(neuron="bright:lab - 0.5*v1:simple:ori=45", generator="dcgan-random", optimizer="mine", generations=2,
                         out=tmp / "run", progress=False)
    assert result.generations == 2
    for registry, wrong, closest in ((optimizers.REGISTRY, "mnie", "mine"), (generators.REGISTRY, "dcgan-randm",
                                                                              "dcgan-random")):
        with pytest.raises(BadInput, match=f"Unknown {registry.kind} '{wrong}' \\(closest: {closest}"):
            registry.get(wrong)
