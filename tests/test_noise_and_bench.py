import json
import numpy as np
import pandas as pd
import pytest

from conftest import evolver_cli, figure_in_page, plotly_values
from evolver import RunConfig, run
from evolver.bench import BenchConfig, bench
from evolver.aggregate import normalise
from evolver_common import BadInput
from neurons.noise import Noise

CLEAN = np.linspace(0.5, 2.0, 200_000)


def test_multiplicative_noise_has_the_stated_mean_and_variance():
    noisy = Noise.parse("multiplicative:0.5")(CLEAN, np.random.default_rng(0))
    # s * max(0, 1 + 0.5 Z): mean s * (Phi(2) + 0.5 phi(2)) = s * 1.0042; sd s * 0.490 (clipped at 0)
    ratio = noisy / CLEAN
    assert ratio.mean() == pytest.approx(1.0042, abs=0.005)
    assert ratio.std() == pytest.approx(0.490, abs=0.005)
    assert (noisy >= 0).all()


def test_gaussian_noise_has_the_stated_mean_and_variance():
    noisy = Noise.parse("gaussian:sd=0.3")(CLEAN, np.random.default_rng(0))
    assert (noisy - CLEAN).mean() == pytest.approx(0, abs=0.003)
    assert (noisy - CLEAN).std() == pytest.approx(0.3, abs=0.003)


def test_poisson_noise_scales_the_first_maximum_to_max_rate():
    noise = Noise.parse("poisson:max_rate=20,reps=4")
    noisy = noise(CLEAN, np.random.default_rng(0))
    assert noise.state["scale"] == pytest.approx(10.0)  # 20 spikes / largest response 2.0
    spikes, rate = noisy * 10.0, CLEAN * 10.0
    assert (spikes - rate).mean() == pytest.approx(0, abs=0.02)
    assert ((spikes - rate) ** 2 / rate).mean() == pytest.approx(1 / 4, rel=0.03)  # Poisson variance / reps
    np.testing.assert_allclose(spikes * 4, np.round(spikes * 4))  # whole spike counts


def test_poisson_count_noise_drives_count_spikes_at_the_median_response_plus_the_baseline():
    clean = np.concatenate([np.zeros(2000), np.linspace(0.5, 1.5, 4001)])  # a unit silent to a third of images
    noise = Noise.parse("poisson:count=5,baseline=2")
    many = np.tile(clean, 50)
    noisy = noise(many, np.random.default_rng(0))
    assert noise.state["scale"] == pytest.approx(5.0)  # 5 spikes / median response above zero, 1.0
    counts = noisy * 5.0 + 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # whole spike counts in the window
    silent = counts.reshape(50, -1)[:, :2000]
    assert silent.mean() == pytest.approx(2.0, rel=0.02) and silent.var() == pytest.approx(2.0, rel=0.05)
    assert (noisy - many).mean() == pytest.approx(0, abs=0.01)  # the told response is unbiased
    assert str(noise) == "poisson:count=5,overdispersion=0,baseline=2"


def test_overdispersed_counts_have_the_negative_binomial_variance():
    clean = np.ones(200_000)
    counts = Noise.parse("poisson:count=5,overdispersion=0.5")(clean, np.random.default_rng(1)) * 5
    assert counts.mean() == pytest.approx(5, rel=0.01)
    assert counts.var() == pytest.approx(5 + 0.5 * 25, rel=0.03)  # λ + F λ²


def test_noise_is_seeded_and_keeps_missing_responses_missing():
    clean = np.array([1.0, np.nan, 3.0])
    a = Noise.parse("gaussian:sd=1")(clean, np.random.default_rng(5))
    b = Noise.parse("gaussian:sd=1")(clean, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[1])


@pytest.mark.parametrize("spec", ["poisson", "poisson:rate=3", "multiplicative:-1", "gaussian:0.1", "uniform:1",
                                  "poisson:max_rate=10,reps=0", "poisson:count=5,overdispersion=-1",
                                  "poisson:count=0", "poisson:count=5,reps=2", "poisson:count=5,baseline=nan"])
def test_bad_noise_specs(spec):
    with pytest.raises(BadInput, match="noise|Noise"):
        Noise.parse(spec)


def test_a_noisy_run_records_noisy_and_clean_responses_and_resumes(tmp, monkeypatch):
    config = dict(neuron="stimnet:relu3:unit2", generator_weights="random", optimizer="cmaes", generations=6,
                  noise="poisson:max_rate=15,reps=2", reference="procedural:30", seed=3)
    whole = run(RunConfig(**config), out=tmp / "whole", progress=False)
    monkeypatch.setenv("EVOLVER_MAX_GENERATIONS", "3")
    with pytest.warns(UserWarning, match="stops this run after 3 generations"):
        run(RunConfig(**config), out=tmp / "parts", progress=False)
    monkeypatch.delenv("EVOLVER_MAX_GENERATIONS")
    evolver_cli("run", "--resume", tmp / "parts", "--quiet", check=True)  # on to the re-test, in generation 5
    scores = pd.read_csv(whole.path / "scores.csv", keep_default_na=False)
    assert {"score", "score_clean"} <= set(scores)
    assert not np.allclose(scores["score"], scores["score_clean"])
    generations = pd.read_csv(whole.path / "generations.csv")
    reference = pd.read_csv(whole.path / "reference.csv")
    assert len(reference) == 30
    # each column holds its own figure (the row is written in the header's order)
    np.testing.assert_allclose(generations["relative_activation"],
                               generations["best_clean_so_far"] / reference["score"].max())
    assert (generations["returned_clean"] <= generations["best_clean_so_far"]).all()
    assert generations["returned"].iloc[:-1].equals(generations["best_so_far"].iloc[:-1])  # before the re-test
    pd.testing.assert_frame_equal(scores, pd.read_csv(tmp / "parts" / "scores.csv", keep_default_na=False))


def test_bench_grid_tables_and_normalisation(tmp, capsys):
    config = BenchConfig(neurons=["stimnet:relu3:unit2", "stimnet:relu4:unit6"], optimizers=["ga", "random"],
                         seeds=[0], noises=["none", "multiplicative:0.5"], images=60)
    table, summary = bench(config, tmp, progress=True)
    runs = table.groupby(["neuron", "optimizer", "seed", "noise"]).ngroups
    assert runs == 2 * 2 * 2 + 2  # the grid plus the noise-free gradient reference per unit and seed
    told = capsys.readouterr().err.splitlines()
    assert told[0] == f"Plan: 10 runs, 600 images in all, in {tmp}."  # before anything runs
    assert told[-1].startswith("sweep: planned 10, finished 10;") and "all done in" in told[-1]
    final = table.loc[table.groupby(["neuron", "optimizer", "seed", "noise"])["gen"].idxmax()]
    assert (final["images"] >= 60).all()
    assert final.groupby("neuron")["normalised"].max().tolist() == [1.0, 1.0]
    assert set(summary["optimizer"]) == {"ga", "random", "gradient"} and (summary["runs"] > 0).all()
    for name in ("bench.csv", "summary.csv", "bench.html"):
        assert (tmp / name).is_file()
    layout = figure_in_page((tmp / "bench.html").read_text())[1]
    assert layout["title"]["text"] == f"Bench: {runs} runs"
    assert layout["annotations"][1]["text"].endswith("(colour: noise)")  # what varies besides the optimizer
    again, _ = bench(config, tmp, progress=False)  # finished runs are reused, not rerun
    pd.testing.assert_frame_equal(table, again)


def test_bench_rerun_with_another_param_value_does_not_reuse_the_old_runs(tmp):
    config = BenchConfig(neurons=["stimnet:relu3:unit2"], optimizers=["ga"], seeds=[0], noises=["none"], images=30,
                         gradient_reference=False, params={"ga": {"mutation_size": 0.3}})
    first, _ = bench(config, tmp, progress=False)
    config.params = {"ga": {"mutation_size": 0.9}}
    second, _ = bench(config, tmp, progress=False)
    assert first["run"].nunique() == second["run"].nunique() == 1
    assert first["run"].iloc[0] != second["run"].iloc[0]
    assert second["params"].iloc[0] == '{"mutation_size": 0.9}'
    recorded = json.loads((tmp / second["run"].iloc[0] / "config.json").read_text())
    assert recorded["resolved"]["optimizer"]["params"]["mutation_size"] == 0.9
    assert not first["best_so_far"].reset_index(drop=True).equals(second["best_so_far"].reset_index(drop=True))


def test_bench_warns_when_a_units_normalised_score_is_not_a_fraction():
    rows = [(neuron, optimizer, best) for neuron, bests in {"net:relu:unit0": (2.0, 1.0),
                                                             "net:logits:unit3": (0.5, -1.5),
                                                             "net:relu:unit9": (0.0, 0.0)}.items()
            for optimizer, best in zip(("cmaes", "ga"), bests)]
    runs = pd.DataFrame([{"best": best, "returned": best / 2, "neuron": neuron, "generator": "dcgan", "optimizer": optimizer}
                         for neuron, optimizer, best in rows])
    trajectories = runs.rename(columns={"best": "best_so_far"}).assign(gen=0)
    with pytest.warns(UserWarning) as warned:
        normalise(runs, trajectories)
    messages = [str(w.message) for w in warned]
    assert len(messages) == 2
    assert messages[0].startswith("Units net:logits:unit3 ended some runs with a negative best response")
    assert messages[1].startswith("Units net:relu:unit9 never responded in any run")
    for table in (runs, trajectories):
        assert table["normalised"].tolist()[:4] == [1.0, 0.5, 1.0, -3.0]
        assert table["returned_normalised"].tolist()[:4] == [0.5, 0.25, 0.5, -1.5]  # over the same unit best
        assert table["normalised"].iloc[4:].isna().all()


def test_bench_compares_image_spaces_on_a_grid_axis(tmp):
    result = evolver_cli("bench", "--neuron", "stimnet:relu3:unit2", "--generator", "dcgan", "--generator", "pixel:resolution=8",
                         "--optimizer", "ga", "--optimizer", "nevergrad:TwoPointsDE", "--param",
                         "nevergrad:TwoPointsDE:population=10", "--seeds", 1, "--noise", "none", "--images", 20,
                         "--out", tmp, "--quiet")
    assert result.returncode == 0, result.stderr
    runs = pd.read_parquet(tmp / "runs.parquet")
    assert sorted(runs.groupby(["generator", "optimizer"]).size().index) == [
        (g, o) for g in ("dcgan", "pixel:resolution=8") for o in ("ga", "gradient", "nevergrad:TwoPointsDE")]
    assert runs.loc[runs["optimizer"] == "nevergrad:TwoPointsDE", "params"].eq('{"population": "10"}').all()
    assert runs["normalised"].max() == 1.0  # over every generator's runs of the unit
    for generator, group in runs.groupby("generator"):  # each space against its own white-box reference
        reference = group.loc[group["optimizer"] == "gradient", "best"].mean()
        np.testing.assert_allclose(group["vs_gradient"], group["best"] / reference)
    summary = pd.read_csv(tmp / "summary.csv")
    assert len(summary) == 6 and list(summary.columns[:3]) == ["generator", "optimizer", "noise"]
    assert "generator optimizer" in result.stdout and "pixel:resolution=8 nevergrad:TwoPointsDE" in result.stdout
    traces, layout = figure_in_page((tmp / "bench.html").read_text())
    assert layout["annotations"][1]["text"].endswith("(colour: generator)")
    assert layout["annotations"][2]["text"] == "Mean final normalised best response per generator × optimizer and noise"
    (space_map,) = [t for t in traces if t["type"] == "heatmap"]
    assert space_map["y"] == ["dcgan", "pixel:resolution=8"] and len(space_map["x"]) == 3
    means = runs.groupby(["generator", "optimizer"])["normalised"].mean().unstack()
    np.testing.assert_allclose(plotly_values(space_map["z"]).reshape(2, 3), means.to_numpy())


@pytest.mark.parametrize("pair", ["nevergrad:NGOpt", "mutation_size=0.3"])
def test_a_bench_param_without_its_optimizer_or_value_is_refused(pair, tmp):
    result = evolver_cli("bench", "--neuron", "stimnet:relu3:unit2", "--param", pair, "--out", tmp / "b")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--param takes OPTIMIZER:NAME=VALUE in evolver bench (e.g. ga:mutation_size=0.3), got '{pair}'" \
        in result.stderr
    assert not (tmp / "b").exists()
