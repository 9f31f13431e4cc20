"""The same arguments and seed give the same records as the code before a change of the loop: the one-loop
change and the typed run state.

Before the one-loop change
(commit PRE_CHANGE): a single unit (with noise, references and interleaved images), a unit set, and a
recorded rig. The old code is taken from git and run in its own process, on this machine, so that both
sides compute on the same CPU. Both run in fp32: in bf16 the new code reads units in fp32 resolution
(issue 35), a change of results on purpose. The new side runs without the re-test that noisy and
recorded runs have had since (issue 40: `--retest none`), and its tables' columns of the returned image
are left out."""
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, evolver_cli

PRE_CHANGE = "7e83075"
WALL_CLOCK = ["seconds"]
RETURNED = ["returned", "returned_clean"]  # columns added since PRE_CHANGE

CASES = {
    "single": ["--precision", "fp32", "--neuron", "stimnet:relu4:unit1", "--optimizer", "ga", "--population", 10, "--generations", 4,
               "--seed", 3, "--noise", "multiplicative:0.5", "--reference", "procedural:6", "--interleave", 2],
    "unit-set": ["--precision", "fp32", "--neuron", "stimnet:relu4:unit0-2", "--optimizer", "cmaes", "--population", 8, "--generations", 3,
                 "--seed", 5, "--noise", "poisson:max_rate=20"],
}


# The typed run state (issue 48): the same arguments and seed give the same records as the commit before it,
# every column of them but the wall clock's, for each kind of run.
PRE_RUN_STATE = "786f10d"
RUN_STATE_CASES = {
    "single": ["--neuron", "stimnet:relu4:unit1", "--optimizer", "ga", "--population", 10, "--generations", 4,
               "--seed", 3, "--reference", "procedural:6", "--interleave", 2],
    "unit-set": ["--neuron", "stimnet:relu4:unit0-2", "--optimizer", "cmaes", "--population", 8, "--generations", 3,
                 "--seed", 5],
    "noisy-retest": ["--neuron", "stimnet:relu4:unit6", "--generations", 5, "--seed", 1, "--noise",
                     "poisson:count=5", "--retest", "3x2"],
    "racing-stimuli": ["--neuron", "stimnet:classifier:unit7", "--generator", "stimuli", "--images", 700, "--seed", 2,
                       "--generations", 20],
}


def _tree(tmp_path_factory, commit: str) -> Path:
    tree = tmp_path_factory.mktemp(f"at-{commit}")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    imported = subprocess.run([sys.executable, "-c", "import evolver; print(evolver.__file__)"], cwd=tree, env=env,
                              capture_output=True, text=True, check=True).stdout
    assert imported.startswith(str(tree)), imported
    return tree


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory) -> Path:
    return _tree(tmp_path_factory, PRE_CHANGE)


@pytest.fixture(scope="module")
def pre_run_state_tree(tmp_path_factory) -> Path:
    return _tree(tmp_path_factory, PRE_RUN_STATE)


def old_evolver(tree: Path, *args) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-m", "evolver", *map(str, args)], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def run_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob("config.json"))


def assert_same_records(new: Path, old: Path, dropped: list[str] = WALL_CLOCK + RETURNED) -> None:
    new_runs, old_runs = run_folders(new), run_folders(old)
    assert [p.relative_to(new) for p in new_runs] == [p.relative_to(old) for p in old_runs]
    for a, b in zip(new_runs, old_runs):
        generations = [pd.read_csv(p / "generations.csv").drop(columns=dropped, errors="ignore")
                       for p in (a, b)]
        pd.testing.assert_frame_equal(*generations)
        for table in ("scores.csv", "references.csv", "reference.csv"):
            if (b / table).exists():
                assert (a / table).read_bytes() == (b / table).read_bytes(), f"{a / table} differs"
        codes = sorted(p.name for p in (b / "codes").iterdir())
        assert codes and codes == sorted(p.name for p in (a / "codes").iterdir())
        for name in codes:
            np.testing.assert_array_equal(np.load(a / "codes" / name), np.load(b / "codes" / name))
        assert (a / "best_code.npy").read_bytes() == (b / "best_code.npy").read_bytes()
        if (b / "best.json").exists():
            assert (a / "best.json").read_bytes() == (b / "best.json").read_bytes()


@pytest.mark.slow
@pytest.mark.pinned
@pytest.mark.parametrize("case", list(CASES))
def test_same_records_as_before_the_change(case, old_tree, tmp):
    args = [*CASES[case], "--quiet"]
    old_evolver(old_tree, "run", *args, "--out", tmp / "old")
    evolver_cli("run", *args, "--retest", "none", "--out", tmp / "new", check=True)
    assert_same_records(tmp / "new", tmp / "old")


def rig_runs(tmp: Path, tree: Path, *new_args) -> tuple[Path, Path]:
    """A run of the folder rig by the old code in `tree` and by this code (with `new_args`): (new, old)."""
    from test_recorded import Rig

    for side in ("old", "new"):
        (tmp / side).mkdir()
        rig = Rig(tmp / side, "folder")
        args = ["run", "--neuron", rig.spec, "--population", 6, "--generations", 3, "--seed", 2, "--quiet",
                "--out", tmp / side / "run"]
        try:
            old_evolver(tree, *args) if side == "old" else evolver_cli(*args, *new_args, check=True)
        finally:
            rig.stop()
    return tmp / "new" / "run", tmp / "old" / "run"


@pytest.mark.slow
def test_same_records_with_a_recorded_rig(old_tree, tmp):
    assert_same_records(*rig_runs(tmp, old_tree, "--optimizer", "cmaes", "--retest", "none"))  # the default then


@pytest.mark.slow
@pytest.mark.pinned
@pytest.mark.parametrize("case", list(RUN_STATE_CASES))
def test_same_records_as_before_the_typed_run_state(case, pre_run_state_tree, tmp):
    args = ["run", "--precision", "fp32", *RUN_STATE_CASES[case], "--quiet"]
    old_evolver(pre_run_state_tree, *args, "--out", tmp / "old")
    evolver_cli(*args, "--out", tmp / "new", check=True)
    assert_same_records(tmp / "new", tmp / "old", WALL_CLOCK)


@pytest.mark.slow
def test_same_records_with_a_recorded_rig_as_before_the_typed_run_state(pre_run_state_tree, tmp):
    assert_same_records(*rig_runs(tmp, pre_run_state_tree), WALL_CLOCK)
