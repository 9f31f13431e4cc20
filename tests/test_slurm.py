"""Sweeps through a real SLURM controller: the one-node cluster of tests/slurm/start.sh (started here if it
is not up; .ci/run starts it), with real sbatch, squeue and scontrol."""
import subprocess
import time
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


def test_a_requeued_task_resumes_its_run_exactly(partition, tmp):
    spec = {"grid": {"neuron": ["stimnet:relu4:unit6"], "optimizer": ["ga"]}, "run": {"generations": 150}}
    submitted = sweep(spec, tmp / "sweep", executor="slurm", wait=False,
                      resources=Resources(partition=partition, time_minutes=10, mem_gb=1))
    job, runs = submitted["jobs"][0], tmp / "sweep" / "runs"

    def generations_done() -> int:
        tables = list(runs.glob("*/generations.csv"))
        return tables[0].read_text().count("\n") - 1 if tables else 0

    wait_for(lambda: generations_done() >= 30, 240, "the run to pass 30 generations")
    assert sweep_status(tmp / "sweep")["running"] == 1
    subprocess.run(["scontrol", "requeue", str(job)], check=True)  # killed mid-run, queued again, run again
    # SLURM holds a requeued job for a couple of minutes (its BeginTime); a cluster would too, a test need not
    wait_for(lambda: queue_state(job) == "PENDING", 120, "the task to be queued again")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    wait_for(lambda: sweep_status(tmp / "sweep")["finished"] == 1, 300, "the requeued task to finish the run")
    status = evolver_cli("sweep", tmp / "spec.toml", "--out", tmp / "sweep", "--status", check=True).stdout
    assert status.startswith("planned 1, finished 1, running 0, pending 0, failed 0")
    shown = subprocess.run(["scontrol", "show", "job", str(job)], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown, shown
    sweep(spec, tmp / "local", workers=2)  # the same run, never interrupted
    same_records(next(runs.iterdir()), next((tmp / "local" / "runs").iterdir()))
