"""One loop for every mode: a unit of a set evolves exactly as the same unit run alone, with noise,
missing responses (shown again, or skipped), reference images (scored once and interleaved in every
block) and the same seed."""
import pandas as pd
import pytest
import torch
from torch import nn

import evolver
import neurons
from evolver_common import BadInput
from test_same_results import assert_same_records


class Blinking(nn.Module):
    """Two units, the brightness and its negative, that give no response (NaN) to about a third of images."""

    def __init__(self):
        super().__init__()
        self.out = nn.Identity()

    def forward(self, x):
        brightness = x.mean((1, 2, 3))
        responses = torch.stack([brightness, 1 - brightness], 1)
        lost = (brightness * 1000).floor() % 3 == 0
        return self.out(torch.where(lost[:, None], torch.full_like(responses, float("nan")), responses))


def unit(units):
    return neurons.from_module(Blinking(), "out", unit=units, input_size=16, mean=(0, 0, 0), std=(1, 1, 1),
                               precision="fp32")


@pytest.mark.parametrize("missing", ["represent", "skip"])
def test_a_unit_of_a_set_evolves_as_it_does_alone(missing, tmp):
    options = dict(generator_weights="random", optimizer="ga", params={"population": 10}, generations=4, seed=3,
                   noise="poisson:max_rate=20", missing=missing, reference="procedural:5", interleave=2, progress=False)
    evolver.run(neuron=unit(range(2)), out=tmp / "set", **options)
    evolver.run(neuron=unit(1), out=tmp / "alone" / "unit1", **options)
    scores = pd.read_csv(tmp / "alone" / "unit1" / "scores.csv")
    assert scores["score_clean"].isna().any() and scores["score_clean"].notna().any()
    assert (scores["score"].isna() == scores["score_clean"].isna()).all()
    assert len(pd.read_csv(tmp / "set" / "unit1" / "references.csv")) == 4 * 2
    assert_same_records(tmp / "set" / "unit1", tmp / "alone" / "unit1")


def test_evolver_max_generations_stops_runs_early_and_they_resume_to_their_own_count(tmp, monkeypatch):
    options = dict(neuron=unit(0), generator_weights="random", generations=6, progress=False)
    monkeypatch.setenv("EVOLVER_MAX_GENERATIONS", "2")
    with pytest.warns(UserWarning, match="stops this run after 2 generations"):
        evolver.run(out=tmp / "run", **options)
    assert len(pd.read_csv(tmp / "run" / "generations.csv")) == 2
    monkeypatch.setenv("EVOLVER_MAX_GENERATIONS", "two")
    with pytest.raises(BadInput, match="EVOLVER_MAX_GENERATIONS='two': give a whole number"):
        evolver.run(out=tmp / "other", **options)
    assert not (tmp / "other").exists()
    monkeypatch.delenv("EVOLVER_MAX_GENERATIONS")
    evolver.resume(tmp / "run", neuron=options["neuron"], progress=False)
    assert len(pd.read_csv(tmp / "run" / "generations.csv")) == 6
