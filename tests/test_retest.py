"""A noisy run names its best image by re-showing a shortlist at the end (evolver.retest)."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import evolver_cli
from evolver import RunConfig, resume, run
from evolver.retest import Retest, choose, shortlist
from evolver_common import BadInput
from neurons.base import Neuron

NOISY = dict(neuron="stimnet:relu4:unit1", noise="poisson:count=5", seed=2)


def test_the_shortlist_keeps_the_largest_told_responses_and_the_best_mean_wins():
    codes = np.arange(12, dtype=np.float32).reshape(6, 2)
    kept = shortlist(None, 3, np.array([1.0, 9.0, np.nan, 4.0, 2.0, 5.0]), np.arange(6), 0, codes)
    kept = shortlist(kept, 3, np.array([8.0, 0.5]), np.array([6, 7]), 1, codes[:2])
    np.testing.assert_array_equal(kept.ids, [1, 6, 5])
    np.testing.assert_array_equal(kept.generations, [0, 1, 0])
    # image 1 was lucky (9, then 2, 2, 2: mean 3.75); image 5 answers 5 every time (mean 5)
    again = np.array([2.0, 2.0, 2.0, 1.0, np.nan, 1.0, 5.0, 5.0, 5.0])
    chosen = choose(kept, 3, again, np.array([2.0] * 3 + [1.0] * 3 + [5.0] * 3))
    assert chosen == {"row": 2, "mean": 5.0, "shown": 4, "clean": 5.0}
    assert choose(kept, 3, np.full(9, np.nan), np.full(9, np.nan))["row"] == 0  # no answer: the single ones decide


def test_a_noisy_run_re_tests_its_shortlist_in_its_last_generation_within_its_budget(tmp):
    result = run(RunConfig(**NOISY, images=600, generations=1000), out=tmp / "run", progress=False)
    generations = pd.read_csv(tmp / "run" / "generations.csv")
    scores = pd.read_csv(tmp / "run" / "scores.csv")
    retest = scores[scores["gen"] == generations["gen"].max()]
    assert generations["n_images"].iloc[-1] == len(retest) == 40  # 10 images, 4 presentations each, counted
    assert 600 <= generations["n_images"].sum() < 600 + generations["n_images"].iloc[:-1].max()
    shown_again = retest["parent_ids"].astype(int)
    assert shown_again.nunique() == 10 and shown_again.value_counts().eq(4).all()
    single = scores.set_index("image_id").loc[shown_again.unique()]
    assert (single["score"] >= np.sort(scores.loc[scores["gen"] < retest["gen"].iloc[0], "score"])[-10]).all()
    best = json.loads((tmp / "run" / "best.json").read_text())
    means = {i: np.mean([single.loc[i, "score"], *retest.loc[shown_again == i, "score"]]) for i in single.index}
    assert best["image_id"] == max(means, key=means.get) and best["score"] == pytest.approx(max(means.values()))
    assert best["presentations"] == 5 and "mean over 5 presentations" in best["chosen_by"]
    assert best["clean"] == pytest.approx(retest.loc[shown_again == best["image_id"], "score_clean"].iloc[0])
    np.testing.assert_array_equal(np.load(tmp / "run" / "best_code.npy"),
                                  np.load(tmp / "run" / "codes" / f"gen_{best['generation']:04d}.npy")[
                                      best["image_id"] - scores.loc[scores["gen"] == best["generation"], "image_id"].min()])
    assert generations["returned"].iloc[-1] == best["score"] and generations["returned_clean"].iloc[-1] == best["clean"]
    assert result.best == best["score"] and result.presentations == 5
    config = json.loads((tmp / "run" / "config.json").read_text())
    assert config["resolved"]["retest"] == "10x4"


def test_a_run_stopped_early_resumes_through_its_re_test_exactly_and_re_tests_again_when_extended(tmp, monkeypatch):
    options = dict(**NOISY, generations=8, retest="3x2")
    run(RunConfig(**options), out=tmp / "whole", progress=False)
    monkeypatch.setenv("EVOLVER_MAX_GENERATIONS", "4")
    with pytest.warns(UserWarning):
        run(RunConfig(**options), out=tmp / "split", progress=False)
    monkeypatch.delenv("EVOLVER_MAX_GENERATIONS")
    resume(tmp / "split", progress=False)
    for table in ("scores.csv", "generations.csv"):
        pd.testing.assert_frame_equal(*(pd.read_csv(tmp / name / table).drop(columns=["seconds"], errors="ignore")
                                        for name in ("whole", "split")))
    assert (tmp / "whole" / "best.json").read_text() == (tmp / "split" / "best.json").read_text()
    resume(tmp / "whole", generations=12, progress=False)
    sizes = pd.read_csv(tmp / "whole" / "generations.csv")["n_images"]
    assert sizes.iloc[7] == sizes.iloc[11] == 6 and sizes.iloc[8] != 6  # re-tested at both ends


def test_noise_free_runs_are_not_re_tested_unless_asked_and_recorded_neurons_are():
    assert Retest.resolve("auto", False, 200, None) is None
    assert Retest.resolve("auto", True, 200, None) == Retest(10, 4)
    assert Retest.resolve("auto", True, 200, 60) is None  # no room in 60 images: the search keeps them
    assert Retest.resolve("5x2", False, 200, None) == Retest(5, 2)
    assert Retest.resolve("none", True, 200, None) is None

    class Rig(Neuron):
        noisy = True
    assert Neuron.noisy is False and Rig.noisy is True


@pytest.mark.parametrize("retest, message", [("10", "KxR"), ("0x3", "KxR"), ("auto ", None), ("20x4", "twice as many")])
def test_bad_retests_are_refused_before_the_run(tmp, retest, message):
    if message is None:
        RunConfig(**NOISY, retest=retest, images=100)  # surrounding spaces are forgiven
        return
    with pytest.raises(BadInput, match=message):
        RunConfig(**NOISY, retest=retest, images=100)
    refused = evolver_cli("run", "--retest", retest, "--images", "100", "--out", tmp / "bad")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (tmp / "bad").exists()


def test_a_run_no_response_came_back_to_ends_without_a_re_test(tmp):
    def silent(images):
        return np.full(len(images), np.nan)

    result = run(RunConfig(neuron=silent, noise="poisson:count=5", retest="2x2", generations=4), out=tmp / "run",
                 progress=False)
    assert result.generations == 3 and np.isnan(result.best)  # the search's 3 generations; nothing to show again
    assert not (tmp / "run" / "best.json").exists()
