"""Every run-folder layout evolver has written resumes, and `open_run` reads it.

tests/data/layouts/ keeps a folder of each (made by the evolver of a past commit with
tests/data/layouts/make.sh, stopped after 2 generations, fp32 on the CPU): the state of version 1
before start=prior, before the re-test (three optimizers, noise, references and interleaved images), and
with the re-test, then one of each typed version. Each is read as a current RunState and resumed to 4
generations; what it had recorded stays as it was."""
import shutil
from pathlib import Path

import numpy as np
import pytest

import evolver
from conftest import evolver_cli
from evolver.records import RunDirectory, read_state
from evolver.run_state import SCHEMA_VERSION

LAYOUTS = Path(__file__).parent / "data" / "layouts"
FOLDERS = sorted(p.name for p in LAYOUTS.iterdir() if p.is_dir())


def test_every_layout_is_kept():
    assert FOLDERS == ["v1-before-prior-cmaes", "v1-before-retest-cmaes", "v1-before-retest-racing-stimuli",
                       "v1-before-retest-sep-cmaes-noise", "v1-retest-ga", "v1-retest-uh-cmaes-noise", "v2-cmaes-noise",
                       "v3-uh-cmaes-noise"]
    for name in FOLDERS:
        tree = read_state(LAYOUTS / name / "state" / "state.npz")
        assert tree.get("schema_version", 1) == int(name[1])  # version 1 is untyped: no schema_version


@pytest.mark.parametrize("name", FOLDERS)
def test_open_run_reads_a_kept_layout(name):
    run = evolver.open_run(LAYOUTS / name)
    assert run.state.schema_version == SCHEMA_VERSION and run.generation == 1
    assert run.state.represented == 0  # not counted before version 4: no response goes missing from a model
    assert run.finished == (name == "v1-before-prior-cmaes")  # made with --generations 2; the others stopped early
    assert run.generations["gen"].tolist() == [0, 1]
    assert len(run.scores) == run.state.next_image_id and run.scores["image_id"].tolist() == list(range(len(run.scores)))
    best = run.best
    assert best.response == run.generations["best_so_far"].iloc[-1]
    assert best.image.dtype == np.uint8 and best.image.ndim == 3 and best.code.ndim == 1
    assert best.presentations == 1 and best.chosen_by == "the largest response told"
    noisy = "noise" in name
    assert np.isnan(best.clean) if noisy and "before-retest" in name else best.clean == pytest.approx(
        run.scores.set_index("image_id").loc[best.image_id, "score_clean" if noisy else "score"])
    np.testing.assert_array_equal(run.codes(1), np.load(LAYOUTS / name / "codes" / "gen_0001.npy"))
    optimizer = run.state.components["optimizer"]
    if "cmaes" in name and "racing" not in name:
        assert "search" in optimizer and optimizer["awaiting_prior"] in (True, False)


@pytest.mark.parametrize("name", FOLDERS)
def test_a_kept_layout_resumes(name, tmp):
    folder = tmp / name
    shutil.copytree(LAYOUTS / name, folder)
    before = {table: (folder / table).read_text().splitlines() for table in ("generations.csv", "scores.csv")}
    # the layout is what is kept, not the packages of the machine that made it: a newer pandas or torch is no reason
    # to refuse it here (tests/test_hardening.py checks that a changed condition is refused without --force)
    result = evolver_cli("run", "--resume", folder, "--generations", 4, "--quiet", "--force", "versions", check=True)
    assert "Traceback" not in result.stderr
    run = evolver.open_run(folder)
    assert run.finished and run.generations["gen"].tolist() == [0, 1, 2, 3]
    for table, lines in before.items():  # what it had recorded is kept as it was, in its own columns
        after = (folder / table).read_text().splitlines()
        assert after[:len(lines)] == lines and all(line.count(",") == lines[0].count(",") for line in after)
    assert read_state(folder / "state" / "state.npz")["schema_version"] == SCHEMA_VERSION
    assert RunDirectory(folder).state().generation == 3
    assert (folder / "best.json").is_file() and (folder / "trajectory.html").is_file()


def test_a_state_of_a_newer_schema_or_of_no_layout_is_refused_by_name(tmp):
    from evolver.records import state_bytes
    from evolver_common import BadInput

    folder = tmp / "run"
    shutil.copytree(LAYOUTS / "v1-retest-ga", folder)
    state = folder / "state" / "state.npz"
    tree = read_state(state)
    for bad, message in (({**tree, "schema_version": SCHEMA_VERSION + 1}, f"schema version {SCHEMA_VERSION + 1}; this evolver reads"),
                         ({**tree, "best": {"score": 1.0}}, "does not hold a run's state"),
                         ({"generation": "three"}, "does not hold a run's state")):
        state.write_bytes(state_bytes(bad))
        with pytest.raises(BadInput, match=message):
            evolver.open_run(folder)
        result = evolver_cli("run", "--resume", folder, "--generations", 4, "--quiet")
        assert result.returncode == 2 and message.split(";")[0] in result.stderr and "Traceback" not in result.stderr
