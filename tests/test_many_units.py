import numpy as np
import pandas as pd
import pytest

from conftest import evolver_cli
from evolver import RunConfig, resume, run
from evolver_common import BadInput


def test_one_evolution_per_unit_in_one_batch(tmp):
    results = run(RunConfig(neuron="stimnet:relu4:unit[1,6,9]", generations=3, precision="fp32"), tmp / "set",
                  progress=False)  # a unit set: one RunResult a unit
    assert [r.path.name for r in results] == ["unit1", "unit6", "unit9"]
    alone = run(RunConfig(neuron="stimnet:relu4:unit6", generations=3, precision="fp32"), tmp / "alone", progress=False)
    together = pd.read_csv(tmp / "set" / "unit6" / "scores.csv")
    single = pd.read_csv(alone.path / "scores.csv")
    first = together.gen == 0  # same seed, same first population: the same responses, whatever the batch
    np.testing.assert_allclose(together.score[first], single.score[single.gen == 0], rtol=1e-4, atol=1e-5)
    assert results[1].best == pytest.approx(alone.best, rel=1e-3)


def test_a_unit_folder_resumes_as_a_single_unit_run(tmp):
    results = run(RunConfig(neuron="stimnet:relu4:unit0-1", generations=2), tmp / "set", progress=False)
    resumed = resume(results[0].path, progress=False, generations=4)
    assert resumed.generations == 4 and len(pd.read_csv(results[0].path / "generations.csv")) == 4


@pytest.mark.slow  # an outcome: two units continue exactly
def test_a_unit_set_resumes_as_a_set_as_if_never_stopped_and_makes_a_unit_a_kill_left_unmade(tmp):
    import shutil

    config = dict(neuron="stimnet:relu4:unit[1,6,9]", generations=4, precision="fp32", device="cpu")
    straight = run(RunConfig(**config), tmp / "straight", progress=False)
    run(RunConfig(**{**config, "generations": 2}), tmp / "stopped", progress=False)
    shutil.rmtree(tmp / "stopped" / "unit9")  # as a kill while the set's folders were made leaves it
    result = evolver_cli("run", "--resume", tmp / "stopped", "--generations", 4, "--quiet", check=True)
    assert "3 runs, one a unit" in result.stdout
    for unit in ("unit1", "unit6", "unit9"):
        a, b = (pd.read_csv(tmp / folder / unit / "scores.csv") for folder in ("straight", "stopped"))
        if unit != "unit9":  # the two others continued exactly
            pd.testing.assert_frame_equal(a, b)
        assert len(pd.read_csv(tmp / "stopped" / unit / "generations.csv")) == 4
    assert [r.path.name for r in straight] == ["unit1", "unit6", "unit9"]
    again = evolver_cli("run", "--neuron", config["neuron"], "--out", tmp / "stopped")
    assert again.returncode == 2 and "holds a unit set already" in again.stderr


def test_unit_sets_refuse_options_for_single_units(tmp):
    with pytest.raises(BadInput, match="one evolution per unit"):
        run(RunConfig(neuron="stimnet:relu4:unit0-1", minimize=True), tmp / "set", progress=False)


def test_command_line_runs_a_unit_set(tmp):
    result = evolver_cli("run", "--neuron", "stimnet:relu4:unit0-2", "--generations", 2, "--out", tmp / "set",
                         "--quiet", check=True)
    assert "3 runs, one a unit" in result.stdout and (tmp / "set" / "unit2" / "best.png").is_file()


def test_a_damaged_unit_set_record_is_a_one_paragraph_error(tmp):
    run(RunConfig(neuron="stimnet:relu4:unit0-1", generations=1), tmp / "set", progress=False)
    (tmp / "set" / "unit-set.json").write_text("{neuron")
    result = evolver_cli("run", "--resume", tmp / "set", "--generations", 2)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"resumes on its own: `evolver run --resume {tmp / 'set'}/unitN`" in " ".join(result.stderr.split())
