import random

import numpy as np
import pytest

from evolver import optimizers
from evolver_common import BadInput

DIM = 10
TARGET = np.linspace(-1, 1, DIM)


def normal(n, rng):
    return rng.standard_normal((n, DIM)).astype(np.float32)


def sphere(codes):
    """Maximal (0) at TARGET."""
    return -((codes - TARGET) ** 2).sum(axis=1)


def make(seed=0, **params):
    return optimizers.create("ga", code_dim=DIM, sample=normal, rng=np.random.default_rng(seed), **params)


def step(ga, objective=sphere):
    codes = ga.ask()
    scores = objective(codes)
    ga.tell(codes, scores)
    return codes, scores


def test_improves_a_simple_objective_in_100_generations():
    ga = make(mutation_size=0.1)
    first = step(ga)[1].max()
    for _ in range(99):
        _, scores = step(ga)
    assert first < -3
    assert scores.max() > -0.5, f"best {scores.max():.3f} after 100 generations"


def test_elites_are_carried_over_unchanged():
    ga = make(n_conserve=2)
    codes, scores = step(ga)
    best_two = codes[np.argsort(-scores)[:2]]
    np.testing.assert_array_equal(ga.ask()[:2], best_two)
    assert ga.parents()[:2] == [(int(np.argsort(-scores)[0]),), (int(np.argsort(-scores)[1]),)]
    assert all(len(p) == 2 for p in ga.parents()[2:])


def test_state_dict_round_trip_continues_bit_exactly():
    ga = make(seed=3)
    for _ in range(5):
        step(ga)
    saved = ga.state_dict()
    continued = [step(ga)[0] for _ in range(5)]
    fresh = make(seed=99)
    fresh.load_state_dict(saved)
    resumed = [step(fresh)[0] for _ in range(5)]
    for a, b in zip(continued, resumed):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_run_and_global_random_state_untouched():
    random.seed(1)
    np.random.seed(1)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    a, b = make(seed=5), make(seed=5)
    for _ in range(3):
        np.testing.assert_array_equal(step(a)[0], step(b)[0])
    assert random.getstate() == python_state
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


def test_missing_responses_are_neither_parents_nor_elites():
    ga = make(population=6)
    codes = ga.ask()
    scores = np.array([np.nan, 5.0, np.nan, 1.0, 2.0, np.nan])
    ga.tell(codes, scores)
    np.testing.assert_array_equal(ga.ask()[0], codes[1])
    used = {i for p in ga.parents() for i in p}
    assert used <= {1, 3, 4}


def test_a_generation_with_no_response_is_shown_again():
    ga = make(population=4)
    codes = ga.ask()
    ga.tell(codes, np.full(4, np.nan))
    np.testing.assert_array_equal(ga.ask(), codes)


def test_equal_scores_do_not_break_selection():
    ga = make(population=5)
    codes = ga.ask()
    ga.tell(codes, np.ones(5))
    assert np.isfinite(ga.ask()).all()


def test_parameters_are_recorded_and_checked():
    ga = make(mutation_size="0.3", population=8)
    assert ga.describe() == {"name": "ga", "params": {
        "population": 8, "selectivity": 2.0, "heritability": 0.5, "mutation_rate": 0.5,
        "mutation_size": 0.3, "n_conserve": 1}}
    with pytest.raises(BadInput, match=r"Invalid parameters for optimizer 'ga': unknown option mutation_sise \(closest: mutation_size"):
        make(mutation_sise=0.3)
    with pytest.raises(BadInput, match=r"heritability=1.5 \(must be in \[0, 1\]\)"):
        make(heritability=1.5)
    with pytest.raises(BadInput, match=r"selectivity='high' \(a finite number\)"):
        make(selectivity="high")
    with pytest.raises(BadInput, match=r"closest: ga\). Valid optimizers: .*ga"):
        optimizers.create("gaa", code_dim=DIM, sample=normal, rng=np.random.default_rng(0))
