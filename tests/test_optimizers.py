"""Every registered optimizer: improves a simple objective, resumes bit-exactly, copes with NaN."""
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from evolver import optimizers
from evolver.optimizers.cmaes import flat_fitness
from evolver.optimizers.uncertainty import PROOF
from evolver.run_state import migrate
from evolver_common import BadInput
from generators.base import Choice
from conftest import ROOT, UNIT, evolver_cli
from test_same_results import assert_same_records

DIM = 30
# nevergrad's registry behind evolver's contract: the two the issue names and the best of Wang & Ponce's
ALL = sorted(optimizers.REGISTRY) + ["nevergrad:TwoPointsDE", "nevergrad:NGOpt", "nevergrad:CMA"]
TARGET = np.linspace(-1, 1, DIM)


def normal(n, rng):
    return rng.standard_normal((n, DIM)).astype(np.float32)


def sphere(codes):
    return -((codes - TARGET) ** 2).sum(axis=1)


def on_sphere_objective(codes):
    """Maximal along TARGET's direction: reachable by a search of fixed norm."""
    return codes @ TARGET / np.linalg.norm(codes, axis=1)


def differentiable_sphere(codes: torch.Tensor) -> torch.Tensor:
    return -((codes - torch.as_tensor(TARGET, dtype=codes.dtype)) ** 2).sum(dim=1)


def make(name, seed=0, **params):
    """The optimizer `name`; white-box ones get the sphere objective's gradient."""
    if optimizers.get(name).needs_gradient:
        params.update(render=lambda codes: codes, respond=differentiable_sphere)
    return optimizers.create(name, code_dim=DIM, sample=normal, rng=np.random.default_rng(seed), **params)


def run(name, objective, images=2000, seed=0, **params):
    opt = make(name, seed, **params)
    shown, best = 0, -np.inf
    while shown < images:
        codes = opt.ask()
        scores = objective(codes)
        opt.tell(codes, scores)
        shown += len(codes)
        best = max(best, scores.max())
    return opt, best


@pytest.mark.parametrize("name, objective, reached, params", [
    ("cmaes", sphere, -0.5, {}),
    ("sep-cmaes", sphere, -0.5, {}),
    ("sphere-cma", on_sphere_objective, 0.95 * np.linalg.norm(TARGET), {}),
    ("ga", sphere, -15.0, {}),
    ("uh-cmaes", sphere, -0.5, {}),
    ("racing-cmaes", sphere, -3.0, {}),  # it spends most of 2,000 images on arms it drops
    ("gradient", sphere, -0.5, {}),
    # XDream's defaults (radius and lr 1.5) step too far for a 30-d sphere 3 from the start to settle in it
    ("fdgd", sphere, -30.0, {}),
    ("nes", sphere, -30.0, {}),
    ("fdgd", sphere, -5.0, {"radius": 0.3, "lr": 0.3}),
    ("nes", sphere, -3.0, {"radius": 0.3, "lr": 0.3}),
    ("nes", sphere, -3.0, {"radius": 0.3, "lr": 0.3, "antithetic": False}),
    ("fdgd", sphere, -10.0, {"radius": 0.3, "lr": 0.3, "antithetic": False}),
    ("nevergrad:TwoPointsDE", sphere, -3.0, {}),
    ("nevergrad:NGOpt", sphere, -0.5, {}),
])
def test_improves_a_simple_objective_within_2000_evaluations(name, objective, reached, params):
    _, first = run(name, objective, images=1, **params)
    _, best = run(name, objective, **params)
    assert best > reached > first


def test_random_search_is_the_floor():
    _, random_best = run("random", sphere)
    _, cma_best = run("cmaes", sphere)
    assert random_best < cma_best


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_continues_bit_exactly(name):
    opt, _ = run(name, sphere, images=200, seed=4)
    saved = opt.state_dict()
    later = []
    for _ in range(4):
        codes = opt.ask()
        opt.tell(codes, sphere(codes))
        later.append(codes)
    fresh = make(name, seed=123)
    fresh.load_state_dict(saved)
    for expected in later:
        codes = fresh.ask()
        np.testing.assert_array_equal(codes, expected)
        fresh.tell(codes, sphere(codes))


@pytest.mark.parametrize("name", ALL)
def test_missing_responses_do_not_break_the_search(name):
    opt = make(name)
    for k in range(6):
        codes = opt.ask()
        scores = sphere(codes)
        scores[:: 3] = np.nan
        if k == 2:
            scores[:] = np.nan
        opt.tell(codes, scores)
        assert np.isfinite(opt.ask()).all()


@pytest.mark.parametrize("name", ALL)
def test_parameters_are_recorded_and_unknown_ones_refused(name):
    described = make(name).describe()
    assert described["name"] == name and "population" in described["params"]
    with pytest.raises(BadInput, match="unknown option bogus"):
        make(name, bogus=1)


def test_cmaes_on_long_codes_runs_the_separable_variant():
    long = optimizers.create("cmaes", code_dim=4096, sample=lambda n, r: r.standard_normal((n, 4096)),
                             rng=np.random.default_rng(0))
    assert long.describe()["name"] == "sep-cmaes"
    assert make("cmaes").describe()["name"] == "cmaes"
    long = optimizers.create("uh-cmaes", code_dim=4096, sample=lambda n, r: r.standard_normal((n, 4096)),
                             rng=np.random.default_rng(0))
    assert long.describe()["name"] == "uh-sep-cmaes"


def silent_until_far(codes):
    """A unit silent for every code shorter than 5 times the prior's typical norm (sqrt(DIM)): silent
    around the zero code, where the CMA-ES searches start."""
    return np.maximum(np.linalg.norm(codes, axis=1) - 5 * np.sqrt(DIM), 0)


def centre(opt) -> np.ndarray:
    return opt.strategy.centroid if hasattr(opt, "strategy") else opt.state["mean"]


@pytest.mark.parametrize("name", ["cmaes", "sep-cmaes", "uh-cmaes"])
def test_cmaes_starts_from_the_best_of_the_generators_own_samples(name):
    def far_prior(n, rng):  # the generator's codes, far from the zero code
        return 5 + rng.standard_normal((n, DIM)).astype(np.float32)

    opt = optimizers.create(name, code_dim=DIM, sample=far_prior, rng=np.random.default_rng(0), start="prior")
    first = opt.ask()
    assert first.mean() > 4  # the generator's samples, not the zero code's neighbours
    opt.tell(first, np.full(len(first), np.nan))
    np.testing.assert_array_equal(opt.ask(), first)  # no answer at all: shown again
    scores = sphere(first)
    scores[0] = np.nan
    resumed = optimizers.create(name, code_dim=DIM, sample=far_prior, rng=np.random.default_rng(9), start="prior")
    resumed.load_state_dict(opt.state_dict())
    for search in (opt, resumed):
        search.tell(first, scores)
        np.testing.assert_array_equal(centre(search), first[np.nanargmax(scores)])
    np.testing.assert_array_equal(opt.ask(), resumed.ask())
    recorded_before_prior = opt.state_dict()  # as a version-1 run state holds it (evolver.run_state)
    del recorded_before_prior["awaiting_prior"]
    recorded_before_prior["state" if "sep" in name else "strategy"] = recorded_before_prior.pop("search")
    resumed.load_state_dict(migrate({"loop": {"optimizer": recorded_before_prior}})["components"]["optimizer"])
    np.testing.assert_array_equal(opt.ask(), resumed.ask())
    zero = optimizers.create(name, code_dim=DIM, sample=far_prior, rng=np.random.default_rng(0))
    assert zero.describe()["params"]["start"] == "zero" and abs(zero.ask().mean()) < 1  # the default
    with pytest.raises(BadInput, match="start='middle' .*zero, sample, prior"):
        make(name, start="middle")


@pytest.mark.parametrize("name", ["cmaes", "sep-cmaes", "uh-cmaes", "uh-sep-cmaes"])
def test_cmaes_widens_its_step_on_a_plateau_until_the_unit_answers(name):
    opt = make(name)
    start = opt.sigma
    codes = opt.ask()
    opt.tell(codes, np.zeros(len(codes)))
    assert opt.sigma > start  # a silent generation: no ranking, so the step grows
    assert not flat_fitness(np.array([0.0])) and flat_fitness(np.zeros(2))  # one answer alone is no plateau
    _, best = run(name, silent_until_far, images=1000)
    assert best > 0


def noisy(objective, sd, seed=0):
    """`objective` plus Gaussian noise of `sd`, drawn anew at every presentation."""
    rng = np.random.default_rng(seed)
    return lambda codes: objective(codes) + sd * rng.standard_normal(len(codes))


@pytest.mark.parametrize("name", ["uh-cmaes", "uh-sep-cmaes"])
def test_uh_cmaes_shows_some_codes_twice_until_the_neuron_proves_noise_free(name):
    opt = make(name)
    population, repeats = len(opt.population), opt.repeats
    assert repeats == 2  # Hansen et al.'s max(0.1, 2 / population) of a generation of 14
    for _ in range(PROOF):
        codes = opt.ask()
        assert len(codes) == population + repeats
        np.testing.assert_array_equal(codes[population:], codes[:repeats])
        opt.tell(codes, sphere(codes))
    assert len(opt.ask()) == population and opt.agreed == PROOF  # a noise-free neuron: plain CMA-ES from here
    uh, plain = make(name), make(name.removeprefix("uh-"))
    for _ in range(PROOF + 5):  # and it has asked all along what CMA-ES asks, besides the codes shown twice
        codes, asked = uh.ask(), plain.ask()
        np.testing.assert_array_equal(codes[:len(asked)], asked)
        uh.tell(codes, sphere(codes))
        plain.tell(asked, sphere(asked))
    silent = make(name)
    for _ in range(PROOF + 2):  # a neuron that answers zero to everything proves nothing
        codes = silent.ask()
        silent.tell(codes, np.zeros(len(codes)))
    assert len(silent.ask()) == population + repeats


@pytest.mark.parametrize("name", ["uh-cmaes", "uh-sep-cmaes"])
def test_uh_cmaes_widens_its_step_while_noise_reorders_its_ranking_up_to_max_step(name):
    opt, _ = run(name, noisy(sphere, sd=100.0), images=1500)  # noise far above the differences between codes
    assert opt.uncertainty > 0 and opt.sigma > 2 * opt.sigma0
    capped, _ = run(name, noisy(sphere, sd=100.0), images=1500, max_step=1.5)
    assert 1.2 * capped.sigma0 < capped.sigma < 1.65 * capped.sigma0  # at the ceiling, as CSA moves it about
    assert len(opt.ask()) == len(opt.population) + opt.repeats  # still measuring
    plain, _ = run(name.removeprefix("uh-"), noisy(sphere, sd=100.0), images=1500)
    assert plain.sigma < opt.sigma
    faint, _ = run(name, noisy(sphere, sd=1e-6), images=600)  # noise below the differences: no reordering
    assert faint.uncertainty < 0 and faint.sigma < faint.sigma0 and faint.agreed == 0


def test_uh_cmaes_climbs_further_than_cmaes_through_a_neurons_noise():
    """A unit whose rate grows along a direction, answering with Wang & Ponce's multiplicative noise 0.5:
    CMA-ES's step shrinks as the noise scrambles its ranking, UH-CMA-ES's grows."""
    def climbed(name, seed):
        rng = np.random.default_rng(seed)
        rate = lambda codes: np.maximum(0, codes @ TARGET + 30)  # noqa: E731
        objective = lambda codes: rate(codes) * np.maximum(0, 1 + 0.5 * rng.standard_normal(len(codes)))  # noqa: E731
        opt, _ = run(name, objective, seed=seed)
        return rate(np.asarray(centre(opt))[None])[0]

    uh, plain = ([climbed(name, seed) for seed in range(6)] for name in ("uh-cmaes", "cmaes"))
    assert np.median(uh) > 2 * np.median(plain)


def test_uh_cmaes_ranks_a_code_shown_twice_by_its_mean_answer():
    opt = make("uh-cmaes")
    learnt = []
    learn = opt._learn
    opt._learn = lambda codes, scores, valid: (learnt.append(scores.copy()), learn(codes, scores, valid))
    codes = opt.ask()
    population = len(opt.population)
    first = np.arange(population, dtype=np.float64)
    opt.tell(codes, np.concatenate([first, [100.0, np.nan]]))
    np.testing.assert_array_equal(learnt[-1], [50.0, 1.0, *first[2:]])  # a missing second answer: the first
    codes = opt.ask()
    first[0] = np.nan
    opt.tell(codes, np.concatenate([first, [-4.0, 3.0]]))
    np.testing.assert_array_equal(learnt[-1][:2], [-4.0, 2.0])  # a missing first answer: the second
    with pytest.raises(BadInput, match="Invalid parameters for optimizer 'uh-cmaes'"):
        make("uh-cmaes", max_step=0.5)


def test_uh_cmaes_resumes_bit_exactly_under_noise():
    objective = noisy(sphere, sd=100.0, seed=3)
    opt, _ = run("uh-cmaes", objective, images=300, seed=4)
    saved, later = opt.state_dict(), []
    for _ in range(4):
        codes = opt.ask()
        scores = objective(codes)
        opt.tell(codes, scores)
        later.append((codes, scores))
    fresh = make("uh-cmaes", seed=123)
    fresh.load_state_dict(saved)
    for codes, scores in later:
        np.testing.assert_array_equal(fresh.ask(), codes)
        fresh.tell(codes, scores)
    assert fresh.uncertainty == opt.uncertainty and fresh.sigma == opt.sigma


def test_sphere_cma_keeps_codes_on_the_sphere_and_decays_its_step():
    opt, _ = run("sphere-cma", on_sphere_objective, images=400)
    norms = np.linalg.norm(opt.ask(), axis=1)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-5)
    assert opt.angle() < opt.params.angle_start


def test_sphere_cma_draws_the_authors_schedule_from_50_to_7_33_degrees():
    """Each sample leaves the centre at the schedule's angle: 50° at the first generation, 7.33° from the
    75th on, log-linear between (ActMax-Optimizer-Dev's lr_schedule, mode "exp")."""
    opt = make("sphere-cma")
    for generation, degrees in ((0, 50.0), (37, 50.0 * (7.33 / 50.0) ** (37 / 75)), (75, 7.33), (120, 7.33)):
        opt.generation = generation
        codes = opt._generate().astype(np.float64)
        centre = opt.centre / opt.radius
        angles = np.degrees(np.arccos(np.clip(codes @ centre / np.linalg.norm(codes, axis=1), -1, 1)))
        np.testing.assert_allclose(angles, degrees, rtol=1e-3)


def test_a_runs_optimizer_does_its_linear_algebra_on_one_blas_thread(tmp, monkeypatch):
    """Spinning BLAS threads fought torch's for the cores (a run took 2.8x as long); see small_linear_algebra."""
    from threadpoolctl import threadpool_info

    from evolver import RunConfig, run

    cmaes, threads = optimizers.get("cmaes"), []
    tell = cmaes.tell

    def counting_tell(self, codes, scores):
        threads.extend(pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas")
        return tell(self, codes, scores)

    monkeypatch.setattr(cmaes, "tell", counting_tell)
    run(RunConfig(neuron="stimnet:relu3:unit2", optimizer="cmaes", generations=3), out=tmp / "run", progress=False)
    assert threads and set(threads) == {1}


OPTIONS = 6
CHOICE = Choice(start=DIM - OPTIONS, options=OPTIONS)
CEILING = np.array([0.0, 2.0, 1.0, 9.0, 3.0, 0.5])  # option 3 is the best kind of image


def with_choice(n, rng):
    """Codes whose last OPTIONS values are class logits: one option each, as a conditional GAN draws them."""
    codes = normal(n, rng)
    codes[:, -OPTIONS:] = 3 * np.eye(OPTIONS)[rng.integers(OPTIONS, size=n)] + 0.1 * codes[:, -OPTIONS:]
    return codes


def kinds_objective(codes):
    """A sphere over the free values, raised by the ceiling of the option the code picks."""
    return -((codes[:, :-OPTIONS] - TARGET[:-OPTIONS]) ** 2).sum(axis=1) + CEILING[CHOICE.picked(codes)]


def test_racing_starts_an_arm_per_option_holds_its_choice_and_halves_to_the_best_option():
    opt = optimizers.create("racing-cmaes", code_dim=DIM, sample=with_choice, rng=np.random.default_rng(0),
                            choice=CHOICE, arms=OPTIONS, round_images=24)
    prior = opt.ask()
    assert len(prior) == 20 * OPTIONS
    opt.tell(prior, kinds_objective(prior))
    assert sorted(CHOICE.picked(np.stack([arm["start"] for arm in opt.arms]))) == list(range(OPTIONS))
    alive, shown = [len(opt.alive)], {}
    while len(opt.alive) > 1:
        arm = opt.alive[opt.current]
        codes = opt.ask()
        # an arm searches the free values only: its choice logits stay those of its start
        held = opt.arms[arm]["start"][-OPTIONS:].astype(np.float32)
        np.testing.assert_array_equal(codes[:, -OPTIONS:], np.tile(held, (len(codes), 1)))
        shown[opt.round, arm] = shown.get((opt.round, arm), 0) + len(codes)
        opt.tell(codes, kinds_objective(codes))
        if len(opt.alive) != alive[-1]:
            alive.append(len(opt.alive))
    assert alive == [6, 3, 1]
    # resumed from its record after the halvings (dropped arms keep no search state), it goes on exactly
    saved = opt.state_dict()
    assert [bool(arm["search"]) for arm in saved["arms"]].count(True) == 1
    fresh = optimizers.create("racing-cmaes", code_dim=DIM, sample=with_choice, rng=np.random.default_rng(5),
                              choice=CHOICE, arms=OPTIONS, round_images=24)
    fresh.load_state_dict(saved)
    for _ in range(3):
        codes = opt.ask()
        np.testing.assert_array_equal(fresh.ask(), codes)
        for search in (opt, fresh):
            search.tell(codes, kinds_objective(codes))
    # each round shows each arm round_images x 2^round images, rounded up to whole generations
    population = len(opt.ask())
    assert all(24 * 2**r <= n < 24 * 2**r + population for (r, _), n in shown.items())
    assert CHOICE.picked(opt.arms[opt.alive[0]]["start"][None])[0] == 3


def test_racing_without_a_choice_races_the_best_prior_codes():
    opt = make("racing-cmaes", arms=4)
    prior = opt.ask()
    scores = sphere(prior)
    opt.tell(prior, scores)
    np.testing.assert_array_equal(np.stack([arm["start"] for arm in opt.arms]),
                                  prior[np.argsort(-scores)[:4]].astype(np.float64))
    assert opt.describe()["choice"] is None


def test_racing_shows_a_prior_without_answers_again_and_refuses_bad_parameters():
    opt = make("racing-cmaes")
    prior = opt.ask()
    opt.tell(prior, np.full(len(prior), np.nan))
    np.testing.assert_array_equal(opt.ask(), prior)
    for bad in ({"arms": 0}, {"round_images": 0}, {"step": 0.0}, {"population": 1}, {"prior": -1}):
        with pytest.raises(BadInput, match="Invalid parameters for optimizer 'racing-cmaes'"):
            make("racing-cmaes", **bad)


KILL_AFTER_GENERATION_2 = """
import os, signal, sys
from evolver.records import RunDirectory
commit = RunDirectory.commit
def commit_then_die(self, state, tree=None):
    commit(self, state, tree)
    if state.generation == 2:
        os.kill(os.getpid(), signal.SIGKILL)
RunDirectory.commit = commit_then_die
from evolver.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # processes of their own, one killed
@pytest.mark.parametrize("name", ["nevergrad:TwoPointsDE", "nevergrad:NGOpt"])
def test_a_nevergrad_run_killed_after_a_commit_resumes_to_an_unbroken_runs_records(name, tmp):
    def args(out):
        return ["run", "--neuron", UNIT, "--weights", "random", "--generator-weights", "random", "--generations", 6,
                "--population", 12, "--seed", 5, "--optimizer", name, "--out", out, "--quiet"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = subprocess.run([sys.executable, "-m", "evolver", *map(str, args(tmp / "whole"))], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_GENERATION_2, *map(str, args(tmp / "killed"))],
                            cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert len(pd.read_csv(tmp / "killed" / "generations.csv")) == 3
    resumed = subprocess.run([sys.executable, "-m", "evolver", "run", "--resume", str(tmp / "killed"), "--quiet"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_records(tmp / "killed", tmp / "whole")


def test_a_nevergrad_state_that_replays_to_other_codes_is_refused_by_name():
    opt, _ = run("nevergrad:TwoPointsDE", sphere, images=100)
    state = opt.state_dict()
    state["told"] = -state["told"]  # as if another nevergrad had been told otherwise
    with pytest.raises(BadInput, match=r"nevergrad:TwoPointsDE cannot be resumed exactly: replaying its 5 recorded"):
        make("nevergrad:TwoPointsDE", seed=9).load_state_dict(state)


def test_an_unknown_nevergrad_optimizer_names_the_closest():
    with pytest.raises(BadInput, match=r"nevergrad has no optimizer 'TwoPointDE' \(closest: TwoPointsDE"):
        optimizers.get("nevergrad:TwoPointDE")


def test_a_nevergrad_optimizer_is_told_the_runs_image_budget():
    assert make("nevergrad:NGOpt", budget=3000).search.budget == 3000
    assert make("nevergrad:NGOpt", generations=7, population=4).search.budget == 28


def test_nes_learns_its_radius_and_resumes_it_exactly():
    opt, _ = run("nes", sphere, images=400, radius=0.3, lr=0.3, radius_lr=0.05)
    assert opt.radius != 0.3
    saved, later = opt.state_dict(), []
    for _ in range(3):
        codes = opt.ask()
        opt.tell(codes, sphere(codes))
        later.append(codes)
    fresh = make("nes", seed=1, radius=0.3, lr=0.3, radius_lr=0.05)
    fresh.load_state_dict(saved)
    for expected in later:
        np.testing.assert_array_equal(fresh.ask(), expected)
        fresh.tell(expected, sphere(expected))


@pytest.mark.slow  # 30 generations of a 600-d CMA
def test_a_nevergrad_batch_larger_than_the_population_ends_a_generation_early_and_resumes_exactly():
    """NGOpt on 600-d codes runs a CMA whose batch (4 + 3 ln d = 23 codes) is larger than 20: once its step
    size adaptation needs a whole batch told (from the 25th generation here), a generation ends with the
    batch's last codes, where nevergrad's own batch mode fails, and a resume replays that too."""
    def wide(n, rng):
        return rng.standard_normal((n, 600)).astype(np.float32)

    def create(seed):
        return optimizers.create("nevergrad:NGOpt", code_dim=600, sample=wide, rng=np.random.default_rng(seed),
                                 budget=3000)

    opt, sizes = create(0), []
    for _ in range(30):
        codes = opt.ask()
        sizes.append(len(codes))
        opt.tell(codes, -(codes ** 2).sum(axis=1))
    assert max(sizes) == 20 and min(sizes) < 20
    saved, later = opt.state_dict(), []
    for _ in range(6):
        codes = opt.ask()
        opt.tell(codes, -(codes ** 2).sum(axis=1))
        later.append(codes)
    fresh = create(7)
    fresh.load_state_dict(saved)
    for expected in later:
        np.testing.assert_array_equal(fresh.ask(), expected)
        fresh.tell(expected, -(expected ** 2).sum(axis=1))


def test_a_nevergrad_optimizer_is_asked_no_further_than_its_budget():
    """A one-shot plan of exactly its budget (Hammersley points) asks nothing past the run's last generation."""
    opt = make("nevergrad:HammersleySearch", budget=60)
    for _ in range(3):
        codes = opt.ask()
        opt.tell(codes, sphere(codes))
    assert opt.search.num_ask == 60


def test_a_nevergrad_generation_without_responses_is_shown_again_and_resumes_exactly():
    opt = make("nevergrad:TwoPointsDE", seed=3)
    for _ in range(2):
        codes = opt.ask()
        opt.tell(codes, sphere(codes))
    lost = opt.ask()
    opt.tell(lost, np.full(len(lost), np.nan))
    saved = opt.state_dict()
    fresh = make("nevergrad:TwoPointsDE", seed=8)
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(fresh.ask(), lost)
    np.testing.assert_array_equal(opt.ask(), lost)


def test_a_nevergrad_optimizer_that_cannot_run_here_is_one_paragraph_and_no_folder(tmp):
    result = evolver_cli("run", "--neuron", UNIT, "--weights", "random", "--generator-weights", "random",
                         "--optimizer", "nevergrad:SQP", "--generations", 2, "--out", tmp / "run", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nevergrad's SQP failed on 100-d codes, 20 a generation" in result.stderr
    assert "does not support parallelization" in result.stderr and "--param population=1" in result.stderr
    assert not (tmp / "run").exists()
