"""`evolver.open_run`: one reader of a run folder, for users and for evolver's own commands."""
import subprocess
import sys
import time

import numpy as np
import pytest

import evolver
from conftest import ROOT
from evolver_common import BadInput


def test_open_run_gives_the_tables_the_best_image_and_the_codes(tmp):
    result = evolver.run(neuron="stimnet:relu4:unit1", generations=3, params={"population": 6}, seed=2,
                         out=tmp / "run", progress=False)
    run = evolver.open_run(result.path)
    assert run.finished and run.generation == 2 and run.config["run"]["generations"] == 3
    assert run.generations["gen"].tolist() == [0, 1, 2] and run.references is None
    assert len(run.scores) == run.generations["n_images"].sum()
    assert run.best.response == result.best and run.best.generation == result.best_generation
    assert run.best.image.shape == (64, 64, 3) and run.best.image.dtype == np.uint8
    np.testing.assert_array_equal(run.best.code, np.load(result.path / "best_code.npy"))
    assert run.codes(1).shape == (len(run.scores[run.scores["gen"] == 1]), run.config["resolved"]["generator"]["code_dim"])
    top = run.top_image(run.best.generation)
    np.testing.assert_array_equal(top, run.best.image)  # the best image is its generation's top image
    images = run.images(run.best.generation)  # rendered again from the codes, by the run's own generator
    assert images.shape == (len(run.codes(run.best.generation)), 3, 64, 64) and 0 <= images.min() <= images.max() <= 1
    with pytest.raises(BadInput, match="Generation 7 .* generations 0 to 2"):
        run.codes(7)
    with pytest.raises(BadInput, match="not an evolver run folder"):
        evolver.open_run(tmp)


WRITER = """
import evolver, sys
evolver.run(neuron="stimnet:relu4:unit1", generations=500, params={"population": 30}, out=sys.argv[1],
            progress=False)
"""


def assert_one_committed_generation(run) -> None:
    """What a reader sees is one committed generation: as many rows as generations, as many scores as
    images, its codes on disk, never a row of a generation still being written."""
    state = run.state
    assert run.generations["gen"].tolist() == list(range(state.generation + 1))
    assert len(run.scores) == state.next_image_id == run.generations["n_images"].sum()
    assert run.codes(state.generation).shape[0] == run.generations["n_images"].iloc[-1]
    assert run.best.response == run.generations["best_so_far"].max()


def test_open_run_reads_a_run_another_process_is_writing(tmp):
    folder = tmp / "live"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=ROOT)
    seen = set()
    try:
        deadline = time.monotonic() + 300
        while len(seen) < 8 and writer.poll() is None and time.monotonic() < deadline:
            if (folder / "state" / "state.npz").is_file():
                run = evolver.open_run(folder)
                assert_one_committed_generation(run)
                seen.add(run.generation)
    finally:
        writer.kill()
        writer.wait()
    assert len(seen) == 8  # read at 8 points of the run while it was being written
    killed = evolver.open_run(folder)  # and after it was killed mid-generation
    assert_one_committed_generation(killed)
    assert not killed.finished and killed.generation >= max(seen)
