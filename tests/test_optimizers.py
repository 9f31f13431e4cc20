"""Every registered optimizer: improves a simple objective, resumes bit-exactly, copes with NaN."""
import numpy as np
import pytest
import torch

from evolver import optimizers
from evolver.optimizers.cmaes import flat_fitness
from evolver_common import BadInput
from generators.base import Choice

DIM = 30
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
        params["objective"] = differentiable_sphere
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


@pytest.mark.parametrize("name, objective, reached", [
    ("cmaes", sphere, -0.5),
    ("sep-cmaes", sphere, -0.5),
    ("sphere-cma", on_sphere_objective, 0.95 * np.linalg.norm(TARGET)),
    ("ga", sphere, -15.0),
    ("racing-cmaes", sphere, -3.0),  # it spends most of 2,000 images on arms it drops
    ("gradient", sphere, -0.5),
])
def test_improves_a_simple_objective_within_2000_evaluations(name, objective, reached):
    _, first = run(name, objective, images=1)
    _, best = run(name, objective)
    assert best > reached > first


def test_random_search_is_the_floor():
    _, random_best = run("random", sphere)
    _, cma_best = run("cmaes", sphere)
    assert random_best < cma_best


@pytest.mark.parametrize("name", sorted(optimizers.REGISTRY))
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


@pytest.mark.parametrize("name", sorted(optimizers.REGISTRY))
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


@pytest.mark.parametrize("name", sorted(optimizers.REGISTRY))
def test_parameters_are_recorded_and_unknown_ones_refused(name):
    described = make(name).describe()
    assert described["name"] == name and "population" in described["params"]
    with pytest.raises(BadInput, match="Unknown parameter"):
        make(name, bogus=1)


def test_cmaes_on_long_codes_runs_the_separable_variant():
    long = optimizers.create("cmaes", code_dim=4096, sample=lambda n, r: r.standard_normal((n, 4096)),
                             rng=np.random.default_rng(0))
    assert long.describe()["name"] == "sep-cmaes"
    assert make("cmaes").describe()["name"] == "cmaes"


def step_size(opt) -> float:
    return opt.strategy.sigma if hasattr(opt, "strategy") else opt.state["sigma"]


def silent_until_far(codes):
    """A unit silent for every code shorter than 5 times the prior's typical norm (sqrt(DIM)): silent
    around the zero code, where the CMA-ES searches start."""
    return np.maximum(np.linalg.norm(codes, axis=1) - 5 * np.sqrt(DIM), 0)


def centre(opt) -> np.ndarray:
    return opt.strategy.centroid if hasattr(opt, "strategy") else opt.state["mean"]


@pytest.mark.parametrize("name", ["cmaes", "sep-cmaes"])
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
    recorded_before_prior = opt.state_dict()
    del recorded_before_prior["awaiting_prior"]
    resumed.load_state_dict(recorded_before_prior)
    np.testing.assert_array_equal(opt.ask(), resumed.ask())
    zero = optimizers.create(name, code_dim=DIM, sample=far_prior, rng=np.random.default_rng(0))
    assert zero.describe()["params"]["start"] == "zero" and abs(zero.ask().mean()) < 1  # the default
    with pytest.raises(BadInput, match="start='middle' .*zero, sample, prior"):
        make(name, start="middle")


@pytest.mark.parametrize("name", ["cmaes", "sep-cmaes"])
def test_cmaes_widens_its_step_on_a_plateau_until_the_unit_answers(name):
    opt = make(name)
    start = step_size(opt)
    codes = opt.ask()
    opt.tell(codes, np.zeros(len(codes)))
    assert step_size(opt) > start  # a silent generation: no ranking, so the step grows
    assert not flat_fitness(np.array([0.0])) and flat_fitness(np.zeros(2))  # one answer alone is no plateau
    _, best = run(name, silent_until_far, images=1000)
    assert best > 0


def test_sphere_cma_keeps_codes_on_the_sphere_and_decays_its_step():
    opt, _ = run("sphere-cma", on_sphere_objective, images=400)
    norms = np.linalg.norm(opt.ask(), axis=1)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-5)
    assert opt.angle() < opt.params.angle_start


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
