"""A clumsy lab and a hostile input lose nothing and crash nothing: two processes on one run, a bad
resume, a damaged state file, a full or read-only disk, a neuron that answers alike or infinitely, noise
at any rate. Each ends in a clear message (exit 2 for bad input, 1 for a fault at run time) and a folder
that still resumes. Parsers and rig messages are fuzzed in test_fuzz.py; rigs in test_recorded.py."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import evolver
from conftest import evolver_cli
from evolver.sweep import sweep
from evolver_common import BadInput


def alike(images):  # a neuron that answers every image the same
    return images.new_zeros(len(images))


def brightness(images):
    return images.mean((1, 2, 3))


RUN = dict(generator_weights="random", progress=False)


def test_a_run_folder_is_held_by_one_writer_at_a_time(tmp):
    with evolver.start(neuron="stimnet:relu4:unit1", generations=2, out=tmp / "held",
                       generator_weights="random") as loop:
        loop.step()
        other = evolver_cli("run", "--resume", tmp / "held")  # a second writer (its own lock, as a process's)
        assert other.returncode == 2 and f"in use by evolver process {os.getpid()}" in other.stderr
    evolver.resume(tmp / "held", progress=False)  # released when the loop closed
    assert len(pd.read_csv(tmp / "held" / "generations.csv")) == 2


def test_a_damaged_state_file_is_refused_clearly_and_a_sweep_goes_on(tmp):
    spec = {"grid": {"neuron": ["stimnet:relu4:unit1", "stimnet:relu4:unit6"], "optimizer": ["random"]},
            "run": {"generations": 2, "generator_weights": "random"}}
    sweep(spec, tmp / "sweep", workers=1)
    runs = sorted((tmp / "sweep" / "runs").iterdir())
    state = runs[0] / "state" / "state.npz"
    state.write_bytes(state.read_bytes()[:100])
    result = evolver_cli("run", "--resume", runs[0], "--generations", 3)
    assert result.returncode == 2 and "state file" in result.stderr and "is damaged" in result.stderr
    assert "Traceback" not in result.stderr
    spec["grid"]["neuron"].append("stimnet:relu4:unit9")
    with pytest.warns(UserWarning, match="failed: .*is damaged"):
        counts = sweep(spec, tmp / "sweep", workers=1)
    assert counts == {"planned": 3, "skipped": 1, "failed": 1, "started": 1}
    assert len(list((tmp / "sweep" / "runs").iterdir())) == 3


def test_a_read_only_output_folder_exits_1_with_a_message(tmp):
    if os.geteuid() == 0:
        out = tmp / ("x" * 300) / "run"  # root writes anywhere: a name over the system's limit fails alike
    else:
        (tmp / "read-only").mkdir(mode=0o500)
        out = tmp / "read-only" / "run"
    result = evolver_cli("run", "--generations", 2, "--generator-weights", "random", "--out", out)
    assert result.returncode == 1 and "the operating system refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_refuses_a_changed_condition_unless_forced(tmp):
    evolver_cli("run", "--generations", 2, "--precision", "fp32", "--out", tmp / "run", "--quiet", check=True)
    config = json.loads((tmp / "run" / "config.json").read_text())
    config["resolved"]["precision"] = "bf16"  # as if it began on a machine with bf16
    (tmp / "run" / "config.json").write_text(json.dumps(config))
    refused = evolver_cli("run", "--resume", tmp / "run", "--generations", 3)
    assert refused.returncode == 2 and "precision: recorded 'bf16', now 'fp32'" in refused.stderr
    assert "--force precision" in refused.stderr
    evolver_cli("run", "--resume", tmp / "run", "--generations", 3, "--force", "precision", "--quiet", check=True)
    assert json.loads((tmp / "run" / "config.json").read_text())["forced"][0]["generation"] == 2
    assert evolver_cli("run", "--force", "device").returncode == 2


@pytest.mark.slow  # 4 s each: long runs on a silent neuron
@pytest.mark.parametrize("optimizer", ["cmaes", "sep-cmaes"])
def test_cmaes_on_a_neuron_that_answers_alike_keeps_its_codes_bounded(tmp, optimizer):
    evolver.run(neuron=alike, optimizer=optimizer, generations=60, out=tmp / "run", **RUN)
    largest = max(np.abs(np.load(p)).max() for p in (tmp / "run" / "codes").glob("*.npy"))
    assert np.isfinite(largest) and largest < 1e4  # without the bound: 1e12 by generation 100


def test_infinite_responses_are_missing_and_poisson_noise_takes_any_rate(tmp):
    def exploding(images):  # a response far above the first generation's, then an infinite one
        values = images.mean((1, 2, 3)) * 1e25
        values[0] = float("inf")
        return values

    with pytest.warns(UserWarning, match=r"answered ±inf, or beyond ±1e\+150, to \d+ image"):
        result = evolver.run(neuron=exploding, noise="poisson:max_rate=20", generations=3, out=tmp / "run", **RUN)
    scores = pd.read_csv(tmp / "run" / "scores.csv")
    assert np.isfinite(result.best) and scores.score_clean.isna().sum() >= 3 and not np.isinf(scores.score).any()


def test_a_run_with_no_response_at_all_says_so(tmp):
    def silent(images):
        return images.new_full((len(images),), float("nan"))

    from evolver.cli import _summarise

    result = evolver.run(neuron=silent, generations=2, missing="skip", out=tmp / "run", **RUN)
    assert np.isnan(result.best) and not (tmp / "run" / "best.png").exists()
    import click.testing

    runner = click.testing.CliRunner()
    with runner.isolation() as (out, _, _):
        _summarise(result)
        printed = out.getvalue().decode()
    assert "No response came back" in printed and "best.png" not in printed


def test_a_copied_run_folder_resumes_elsewhere(tmp):
    evolver.run(neuron=brightness, generations=2, out=tmp / "run", **RUN)
    shutil.copytree(tmp / "run", tmp / "copy")  # the .lock of a finished run holds nothing
    evolver.resume(tmp / "copy", neuron=brightness, generations=3, progress=False)
    assert len(pd.read_csv(tmp / "copy" / "generations.csv")) == 3


def test_bad_types_are_refused_before_a_folder_is_made(tmp):
    with pytest.raises(BadInput, match="generations='ten'"):
        evolver.run(neuron=brightness, generations="ten", out=tmp / "run", **RUN)
    assert not (tmp / "run").exists()
