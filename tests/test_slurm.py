"""Sweeps through a real SLURM controller: the one-node cluster of tests/slurm/start.sh (started here if it
is not up; .ci/run starts it), with real sbatch, squeue and scontrol."""
import json
import re
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, evolver_cli
from evolver.sweep import Resources, sweep, sweep_status

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SPEC = {"grid": {"neuron": ["stimnet:relu4:unit1", "stimnet:relu4:unit6", "stimnet:classifier:unit7"],
                 "optimizer": ["cmaes", "ga"], "seed": [0, 1]},
        "run": {"generations": 3}}


@pytest.fixture(scope="module")
def partition() -> str:
    started = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "start.sh")], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"tests/slurm/start.sh could not start a SLURM cluster:\n{started.stderr}")
    return started.stdout.split()[-1]


def same_records(a: Path, b: Path) -> None:
    for table in ("scores.csv", "generations.csv"):
        left, right = (pd.read_csv(p / table).drop(columns="seconds", errors="ignore") for p in (a, b))
        pd.testing.assert_frame_equal(left, right)


def queue_state(job: str) -> str:
    listed = subprocess.run(["squeue", "-h", "-r", "-o", "%T", "-j", job.split("_")[0]], capture_output=True, text=True)
    return listed.stdout.strip()


def restarts(job: str) -> int:
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return int(re.search(r"Restarts=(\d+)", shown).group(1))


def release(job: str) -> None:
    """Start a requeued task now: SLURM holds one for a couple of minutes (its BeginTime); a cluster would
    too, a test need not."""
    wait_for(lambda: queue_state(job) in ("PENDING", "RUNNING"), 120, "the task to be queued again")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, check=False)
    wait_for(lambda: queue_state(job) != "PENDING", 30, "the released task to start")


def generations_done(folder: Path) -> int:
    tables = list((folder / "runs").glob("*/generations.csv"))
    return tables[0].read_text().count("\n") - 1 if tables else 0


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.5)


def test_a_sweep_runs_as_a_job_array_with_the_local_executors_results(partition, tmp):
    on_slurm = sweep(SPEC, tmp / "slurm", executor="slurm",
                     resources=Resources(partition=partition, time_minutes=10, mem_gb=1, runs_per_job=4))
    assert on_slurm == {"planned": 12, "skipped": 0, "started": 12}
    sweep(SPEC, tmp / "local", workers=2)  # one torch thread a run, as an array task has
    runs = sorted(p.name for p in (tmp / "slurm" / "runs").iterdir())
    assert runs == sorted(p.name for p in (tmp / "local" / "runs").iterdir()) and len(runs) == 12
    for run in runs:
        same_records(tmp / "slurm" / "runs" / run, tmp / "local" / "runs" / run)
    assert sweep_status(tmp / "slurm") == {"planned": 12, "finished": 12, "running": 0, "pending": 0, "failed": 0,
                                           "interrupted": 0, "not started": 0}


def test_a_requeued_task_resumes_its_run_exactly(partition, tmp, record_property):
    spec = {"grid": {"neuron": ["stimnet:relu4:unit6"], "optimizer": ["ga"]}, "run": {"generations": 150}}
    submitted = sweep(spec, tmp / "sweep", executor="slurm", wait=False,
                      resources=Resources(partition=partition, time_minutes=10, mem_gb=1))
    job, runs = submitted["jobs"][0], tmp / "sweep" / "runs"
    wait_for(lambda: generations_done(tmp / "sweep") >= 30, 240, "the run to pass 30 generations")
    assert sweep_status(tmp / "sweep")["running"] == 1
    record_property("job", job)
    record_property("generations_before_requeue", generations_done(tmp / "sweep"))
    subprocess.run(["scontrol", "requeue", str(job)], check=True)  # killed mid-run, queued again, run again
    wait_for(lambda: queue_state(job) == "PENDING", 120, "the task to be queued again")
    release(job)
    wait_for(lambda: sweep_status(tmp / "sweep")["finished"] == 1, 300, "the requeued task to finish the run")
    status = evolver_cli("sweep", tmp / "spec.toml", "--out", tmp / "sweep", "--status", check=True).stdout
    counts = status.splitlines()[0]  # the counts that are not 0, then images and the share done
    assert counts.startswith("planned 1, finished 1; ") and counts.endswith("100% done"), status
    assert not any(word in counts for word in ("running", "pending", "failed", "interrupted")), status
    assert restarts(job) == 1
    sweep(spec, tmp / "local", workers=2)  # the same run, never interrupted
    same_records(next(runs.iterdir()), next((tmp / "local" / "runs").iterdir()))
    evolver_cli("report", tmp / "sweep", check=True)  # what the lab reads once --status says finished
    reported = pd.read_parquet(tmp / "sweep" / "runs.parquet")
    best = pd.read_csv(next(runs.iterdir()) / "generations.csv")["best_so_far"].iloc[-1]
    assert reported[["status", "generations", "best"]].values.tolist() == [["done", 150, best]]
    assert (tmp / "sweep" / "report.html").is_file()


def test_a_task_past_its_time_limit_is_requeued_then_given_up_and_the_sweep_rerun_finishes_it(partition, tmp,
                                                                                               record_property):
    spec = {"grid": {"neuron": ["stimnet:relu4:unit6"], "optimizer": ["ga"]}, "run": {"generations": 2000}}
    folder = tmp / "sweep"

    def waited_for() -> tuple[dict, list[str]]:  # the sweep as a user runs it: submit, then wait for the end
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            counts = sweep(spec, folder, executor="slurm",
                           resources=Resources(partition=partition, time_minutes=1, mem_gb=1, requeues=1))
        return counts, [str(w.message) for w in warned]

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(waited_for)
        wait_for(lambda: (folder / "jobs.json").is_file(), 60, "the submission")
        job = json.loads((folder / "jobs.json").read_text())[0]["job"]
        # submitit's USR2 comes a quarter of the limit early; the task checkpoints and SLURM queues it again
        wait_for(lambda: restarts(job) == 1, 150, "the task to be requeued")
        first = generations_done(folder)
        release(job)
        counts, warned = waiting.result(timeout=150)
    assert counts == {"planned": 1, "skipped": 0, "failed": 1}
    assert len(warned) == 1 and "ended unfinished" in warned[0] and "timed-out too many times" in warned[0]
    second = generations_done(folder)
    record_property("job", job)
    record_property("generations_at_the_first_limit_and_the_second", [first, second])
    assert 0 < first < second < 2000  # it went on from where it stopped, and was given up before the end
    wait_for(lambda: queue_state(job) == "", 60, "the task to leave the queue")  # from COMPLETING
    assert sweep_status(folder)["failed"] == 1
    assert sweep(spec, folder, workers=1) == {"planned": 1, "skipped": 0, "resumed": 1}
    run = next((folder / "runs").iterdir())
    assert pd.read_csv(run / "generations.csv")["gen"].tolist() == list(range(2000))  # none lost, none twice
    images = pd.read_csv(run / "scores.csv")["image_id"]
    assert images.tolist() == list(range(len(images)))
    assert sweep_status(folder)["finished"] == 1
