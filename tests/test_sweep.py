import base64
import dataclasses
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from evolver.report import report
from evolver.aggregate import aggregate
from evolver.sweep import Resources, check_spec, load_spec, plan, sweep
from conftest import figure_in_page, plotly_values
from evolver_common import BadInput

SPEC = """
[grid]
neuron = ["stimnet:relu3:unit2", "stimnet:relu4:unit1", "stimnet:relu4:unit6", "stimnet:classifier:unit7"]
optimizer = ["cmaes", "ga", "random"]
seed = [0, 1]

[run]
generations = 3
precision = "fp32"
"""
# Two units of two layers, two optimizers, reference images: every panel of the report has something in it.
SMALL_SPEC = """
[grid]
neuron = ["stimnet:relu3:unit2", "stimnet:relu4:unit1"]
optimizer = ["cmaes", "random"]
seed = [0]

[run]
generations = 2
precision = "fp32"
reference = "procedural:12"
"""


@pytest.fixture
def spec_file(tmp):
    path = tmp / "spec.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def small_spec_file(tmp):
    path = tmp / "small.toml"
    path.write_text(SMALL_SPEC)
    return path


def test_plan_is_the_product_with_parameter_grids():
    spec = check_spec({"grid": {"neuron": ["a:b:unit1", "a:b:unit2"], "optimizer": ["ga", "cmaes"], "seed": [0, 1, 2],
                                "noise": ["none", "multiplicative:0.5"]},
                       "params": {"ga": {"mutation_size": [0.3, 0.5]}}, "run": {"generations": 5}})
    runs = plan(spec)
    assert len(runs) == 2 * 3 * 2 * (2 + 1)  # ga twice (its grid), cmaes once
    assert len({r.path for r in runs}) == len(runs)
    ga = [r for r in runs if r.config["optimizer"] == "ga"]
    assert {r.config["params"]["mutation_size"] for r in ga} == {0.3, 0.5}
    assert all(r.config["generations"] == 5 for r in runs)
    assert {r.config["noise"] for r in runs} == {None, "multiplicative:0.5"}


def test_a_run_folder_keeps_its_name_from_before_the_re_test_option():
    grid = {"grid": {"neuron": ["a:b:unit1"], "optimizer": ["ga"], "noise": ["poisson:count=5"]}}
    (planned,) = plan(grid)
    assert planned.config["retest"] == "auto"
    before = {k: v for k, v in planned.config.items() if k != "retest"}  # a config as sweeps recorded it then
    assert planned.path.endswith(hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10])
    (asked,) = plan({**grid, "run": {"retest": "3x2"}})
    assert asked.path != planned.path  # a re-test other than the default is another run


def test_the_returned_image_is_the_best_without_noise_and_unknown_for_noisy_runs_recorded_before_it():
    from evolver.aggregate import _returned

    noise_free = pd.DataFrame({"best_so_far": [1.0, 2.0]})
    old_noisy = noise_free.assign(best_clean_so_far=[0.5, 1.5])
    noisy = old_noisy.assign(returned=[1.0, 1.8], returned_clean=[0.5, 1.2])
    assert _returned(noise_free).tolist() == [1.0, 2.0]
    assert np.isnan(_returned(old_noisy))
    assert _returned(noisy).tolist() == [0.5, 1.2]


@pytest.mark.parametrize("text, message", [
    ("[grid]\noptimizer = ['ga']", "needs neuron"),
    ("[grid]\nneuron = 'a:b:unit1'\noptimizer = ['ga']", "must be a non-empty list"),
    ("[grid]\nneuron = ['x']\noptimizer = ['ga']\nunits = [1]", "unknown key"),
    ("[grid]\nneuron = ['x']\noptimizer = ['ga']\n[run]\ngenerationz = 3", "generationz: not a run option"),
    ("[grid\nneuron", "not valid TOML"),
])
def test_bad_specs_are_named(tmp, text, message):
    (tmp / "bad.toml").write_text(text)
    with pytest.raises(BadInput, match=message):
        load_spec(tmp / "bad.toml")


@pytest.mark.pinned  # its spec sets fp32
@pytest.mark.slow  # two executors' worker processes: 13 s
def test_local_pool_and_submitit_give_the_same_results_and_a_report(small_spec_file, tmp):
    spec = load_spec(small_spec_file)
    local = sweep(spec, tmp / "local", "local", workers=2)
    assert local == {"planned": 4, "skipped": 0, "started": 4}
    submitted = sweep(spec, tmp / "submitit", "submitit-local", resources=Resources(runs_per_job=4))
    assert submitted["started"] == 4
    a, b = aggregate(tmp / "local").runs, aggregate(tmp / "submitit").runs
    assert len(a) == 4 and a.sort_values("run")["best"].tolist() == b.sort_values("run")["best"].tolist()
    assert sweep(spec, tmp / "local", "local") == {"planned": 4, "skipped": 4}
    page, summary = report(tmp / "local")
    assert len(summary) == 2 and set(summary["runs"]) == {2}
    assert pd.read_parquet(tmp / "local" / "trajectories.parquet")["gen"].max() == 1

    html = page.read_text()
    script = next((tmp / "local").glob("plotly-*.min.js")).name  # one copy, the runs' and the report's
    assert f'src="{script}"' in html and not list((tmp / "local" / "runs").glob("*.js"))
    assert f'src="../../{script}"' in (tmp / "local" / a["run"].iloc[0] / "trajectory.html").read_text()
    traces, layout = figure_in_page(html)
    titles = [a["text"] for a in layout["annotations"]]
    assert layout["title"]["text"] == "Sweep report: 4 runs" and len(titles) == 4
    assert titles[1] == "Final normalised best response per optimizer (colour: optimizer)"  # nothing else varies
    images = html[html.index("The images the runs return"):]
    assert images.count("<img src='data:image/png;base64,") == 4 and images.count("<tr><th>stimnet:") == 2
    for run in a.itertuples():  # each run's returned image, captioned with its seed and response
        encoded = base64.b64encode((tmp / "local" / run.run / "best.png").read_bytes()).decode()
        assert f"{encoded}' width='96' height='96' alt='seed {run.seed}: {run.returned:.3g} (" in images
    assert titles[2] == "Final normalised best response per layer (colour: optimizer, as above)"
    assert titles[3].startswith("Relative activation at the end")
    runs = a.set_index(["optimizer", "layer"])["normalised"].sort_index()
    per_layer = {t["name"]: t for t in traces if t["type"] == "box" and t.get("showlegend") is False}
    assert set(per_layer) == {"cmaes", "random"}
    for optimizer, trace in per_layer.items():  # each run's final normalised best, at its layer
        shown = sorted(zip(trace["x"], plotly_values(trace["y"])))
        np.testing.assert_allclose([v for _, v in shown], runs[optimizer].sort_index().to_numpy())
        assert [layer for layer, _ in shown] == sorted(runs[optimizer].index)
    curves = [t for t in traces if t.get("mode") == "lines"]  # a mean trajectory per condition
    assert len(curves) == 2 and all(plotly_values(c["y"]).max() <= 1.0 for c in curves)
    assert a["relative_activation"].notna().all()
    histograms = {t["name"]: plotly_values(t["x"]) for t in traces if t["type"] == "histogram"}
    for optimizer, shown in histograms.items():  # each run's final relative activation
        np.testing.assert_allclose(sorted(shown), sorted(a.query("optimizer == @optimizer")["relative_activation"]))
    assert set(histograms) == {"cmaes", "random"}


@pytest.mark.pinned  # its spec sets fp32
@pytest.mark.slow
def test_killed_sweep_finishes_only_the_missing_runs(spec_file, tmp):
    folder = tmp / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "evolver", "sweep", str(spec_file), "--out", str(folder),
                                "--workers", "1"], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and aggregate_done(folder) < 5:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = aggregate(folder)
    done_before = before.statuses.get("done", 0)
    assert 5 <= done_before < 24
    finished = {r: (folder / r / "generations.csv").stat().st_mtime_ns for r in before.runs.query("status == 'done'").run}
    counts = sweep(load_spec(spec_file), folder, "local", workers=2)
    assert counts["skipped"] == done_before and counts.get("started", 0) + counts.get("resumed", 0) == 24 - done_before
    assert all((folder / r / "generations.csv").stat().st_mtime_ns == t for r, t in finished.items())
    assert aggregate(folder).statuses == {"done": 24}


def aggregate_done(folder) -> int:
    if not (folder / "sweep.json").is_file():
        return 0
    try:
        return aggregate(folder).statuses.get("done", 0)
    except (BadInput, ValueError, OSError, json.JSONDecodeError):  # a file being written
        return 0


def test_a_preempted_job_is_requeued_with_the_same_runs():
    from evolver.sweep import _Chunk

    chunk = _Chunk()
    again = chunk.checkpoint("SWEEP", ["runs/a", "runs/b"], 2)
    assert again.function is chunk and again.args == ("SWEEP", ["runs/a", "runs/b"], 2)


def test_status_counts_runs_from_the_folder_and_the_queue(tmp):
    from evolver.sweep import JOBS_FILE, sweep_status, write_plan

    spec = {"grid": {"neuron": ["stimnet:relu4:unit1", "stimnet:relu4:unit6"], "optimizer": ["cmaes", "ga"]}}
    runs = write_plan(spec, tmp)
    # a task that left the queue (here: never was in it) without finishing its run: failed
    (tmp / JOBS_FILE).write_text(json.dumps([{"job": "999999_0", "runs": [runs[0].path]}]))
    assert sweep_status(tmp) == {"planned": 4, "finished": 0, "running": 0, "pending": 0, "failed": 1,
                                 "interrupted": 0, "not started": 3}


def test_a_spec_built_in_python_is_checked_like_a_file(tmp):
    with pytest.raises(BadInput, match=r"\[grid\] seed must be a non-empty list"):
        sweep({"grid": {"neuron": ["stimnet:relu4:unit1"], "optimizer": ["ga"], "seed": []}}, tmp / "sweep")
    assert not (tmp / "sweep" / "sweep.json").exists()


@pytest.mark.pinned  # its spec sets fp32
@pytest.mark.slow
def test_a_terminated_sweep_stops_its_workers_starts_no_queued_run_and_says_how_to_go_on(tmp):
    """SIGTERM reaches the sweep's process alone: it stops its workers as Ctrl-C would. Each records its run
    part-way; the runs still queued are not started."""
    from evolver.sweep import sweep_status

    spec = tmp / "long.toml"
    spec.write_text('[grid]\nneuron = ["stimnet:relu4:unit1", "stimnet:relu4:unit6"]\noptimizer = ["cmaes"]\n'
                    'seed = [0, 1]\n\n'
                    '[run]\ngenerations = 400\nprecision = "fp32"\nretest = "none"\n')
    folder = tmp / "sweep"
    process = subprocess.Popen([sys.executable, "-m", "evolver", "sweep", str(spec), "--out", str(folder),
                                "--workers", "2"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    tables = lambda: sorted(folder.glob("runs/*/generations.csv"))  # noqa: E731
    while time.monotonic() < deadline and process.poll() is None and not (len(tables()) == 2 and
                                               all(len(t.read_text().splitlines()) > 3 for t in tables())):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "0 of 4 runs of the sweep" in stderr and "2 stopped part-way" in stderr, stderr
    assert "The command: " in stderr and f"--out {folder} --workers 2" in stderr, stderr
    assert f"Plan: 4 runs of 400 generations, in {folder}." in stderr and "sweep: planned 4, finished 0" in stderr
    lengths = [len(t.read_text()) for t in tables()]
    time.sleep(3)
    assert [len(t.read_text()) for t in tables()] == lengths  # no worker goes on
    counts = sweep_status(folder)
    assert counts["interrupted"] == 2 and counts["not started"] == 2, counts


def test_progress_counts_runs_by_what_they_do_and_reports_pace_and_time_left(tmp):
    """A finished run, one being written (its folder held), one stopped part-way, one not started."""
    import evolver
    from evolver.sweep import watch, write_plan
    from evolver.sweep_progress import Reporter, last_report

    spec = {"grid": {"neuron": ["stimnet:relu4:unit1"], "optimizer": ["random"], "seed": [0, 1, 2, 3]},
            "run": {"generations": 4, "retest": "none"}}
    finished, held, stopped, _ = write_plan(spec, tmp)
    evolver.run(**finished.config, out=tmp / finished.path, progress=False)
    loops = [evolver.start(**planned.config, out=tmp / planned.path) for planned in (held, stopped)]
    for loop in loops:
        loop.step()
    loops[1].close()
    try:
        progress = watch(tmp).progress()
        assert progress.counts == {"planned": 4, "finished": 1, "running": 1, "pending": 0, "failed": 0,
                                   "interrupted": 1, "not started": 1}
        population = len(evolver.open_run(tmp / finished.path).scores) // 4
        assert progress.images == 6 * population and progress.done == pytest.approx((1 + 0.25 + 0.25) / 4)
        reporter = Reporter(watch(tmp), stream=io.StringIO())
        reporter.started -= 10  # as if the runs had gained their share in the last 10 s
        reporter.first = dataclasses.replace(progress, images=0, done=0.0)
        line = reporter.line(progress)
        assert line.endswith(f"{6 * population / 10:,.0f} images/s, about 17 s left")  # 37.5% done in 10 s
        reporter.report(final=True)
        assert last_report(tmp) == line and reporter.stream.getvalue() == line + "\n"
    finally:
        loops[0].close()
    assert watch(tmp).progress().counts["interrupted"] == 2  # its writer gone
