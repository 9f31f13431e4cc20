"""`evolver sweep SPEC.toml`: the cartesian product of neurons, generators, optimizers (with parameter
grids), noise levels and seeds, one ordinary run folder each, handed to a local process pool or to
SLURM through submitit; and `evolver report SWEEP`, which reads them back.

A spec (TOML):

    [grid]                       # lists; every combination is one run
    neuron = ["stimnet:relu4:unit1", "stimnet:relu4:unit6"]
    optimizer = ["cmaes", "ga"]
    seed = [0, 1]
    generator = ["dcgan"]        # optional, like noise
    noise = ["none", "multiplicative:0.5"]

    [params.ga]                  # optional: a parameter grid per optimizer
    mutation_size = [0.3, 0.5]

    [run]                        # optional: fixed options of every run (RunConfig fields)
    generations = 50

Several grids in one sweep are an array of tables, [[grid]] ... [[grid]] (`evolver bench` plans its
gradient reference so).

The sweep folder holds `sweep.json` (the spec and every planned run's configuration) and
`runs/<slug>-<hash>/`, the hash naming the run's whole configuration, so re-running a sweep finds
its runs: finished ones are skipped, killed ones resumed, new ones started.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tomllib
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolver.experiment import RunConfig, resume, run
from evolver.records import check_out_folder
from evolver.runs import open_run
from evolver.sweep_progress import JOBS_FILE, Reporter, Watch, status
from evolver_common import BadInput, FolderLock, Interrupted, RigError, write_atomic
from evolver_common.secrets import redact

GRID_KEYS = ("neuron", "generator", "optimizer", "noise", "seed")
NO_NOISE = "none"
REFERENCE_OPTIMIZER = "gradient"  # the white-box reference of Wang & Ponce's measure
RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the sweep: where its run folder is and what it runs."""

    path: str  # relative to the sweep folder
    config: dict[str, Any]  # RunConfig fields

    @property
    def labels(self) -> dict[str, Any]:
        c = self.config
        return {"neuron": c["neuron"], "generator": c["generator"], "optimizer": c["optimizer"],
                "noise": c["noise"] or NO_NOISE, "seed": c["seed"],
                "params": json.dumps(c["params"], sort_keys=True) if c["params"] else ""}


@dataclass
class Resources:
    """What one SLURM array task asks for; `runs_per_job` runs go into each task, one after another."""

    partition: str | None = None
    time_minutes: int = 60
    gpus: int = 0
    cpus: int = 1
    mem_gb: float = 4.0
    runs_per_job: int = 8
    parallel_jobs: int = 64  # array tasks running at once
    requeues: int = 3  # times a task that reaches its time limit is queued again to go on

    @property
    def warning_seconds(self) -> int:
        """How long before its time limit a task is told to stop (submitit's USR2). slurmctld sends the
        signal up to a minute early, so submitit's 90 s would reach a task of two minutes or less as it
        starts, before its handler is installed, and kill it (exit 140); a quarter of the limit leaves
        every task most of its time."""
        return min(90, 15 * self.time_minutes)


# ---------------------------------------------------------------------------------------------- planning

def load_spec(path: str | Path) -> dict[str, Any]:
    """The spec file, checked: a [grid] of lists, optional [params.OPTIMIZER] grids and a [run] table."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"The sweep spec {path} does not exist.")
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"The sweep spec {path} is not valid TOML: {err}.") from None
    return check_spec(spec, str(path))


def _grids(spec: dict[str, Any]) -> list[dict[str, Any]]:
    grid = spec.get("grid", {})
    return grid if isinstance(grid, list) else [grid]


def check_spec(spec: dict[str, Any], where: str = "the sweep spec") -> dict[str, Any]:
    """The spec, or BadInput listing every problem of its layout (each run's values are checked by planning)."""
    problems = _layout_problems(spec)
    if problems:
        raise BadInput(f"In {where}: {'; '.join(problems)}. See `evolver sweep --help` for the layout.")
    return spec


def _layout_problems(spec: dict[str, Any]) -> list[str]:
    unknown = sorted(set(spec) - {"grid", "params", "run"})
    problems = [f"unknown table [{unknown[0]}]"] if unknown else []
    grids, params, options = _grids(spec), spec.get("params", {}), spec.get("run", {})
    if not all(isinstance(g, dict) for g in grids) or not isinstance(params, dict) or not isinstance(options, dict) \
            or not all(isinstance(v, dict) for v in params.values()):
        return [*problems, "[grid] (or each [[grid]]), [run] and each [params.OPTIMIZER] must be tables of name = value"]
    for grid in grids:
        problems += [f"[grid] {k}: unknown key (valid: {', '.join(GRID_KEYS)})" for k in grid if k not in GRID_KEYS]
        problems += [f"[grid] {k} must be a non-empty list" for k, v in grid.items() if not isinstance(v, list) or not v]
        problems += [f"[grid] needs {k}" for k in ("neuron", "optimizer") if k not in grid]
    problems += [f"[run] {k}: not a run option (valid: {', '.join(sorted(RUN_FIELDS - set(GRID_KEYS)))})"
                 for k in options if k not in RUN_FIELDS or k in GRID_KEYS]
    for optimizer, values in params.items():
        problems += [f"[params.{optimizer}] {k} must be a non-empty list" for k, v in values.items()
                     if not isinstance(v, list) or not v]
    return problems


def _slug(config: dict[str, Any]) -> str:
    text = redact(f"{config['neuron']}_{config['optimizer']}_{config['noise'] or NO_NOISE}_seed{config['seed']}")
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:90]


def plan(spec: dict[str, Any]) -> list[PlannedRun]:
    """Every run of the spec, in a fixed order: its layout checked (a spec built in Python as much as a
    file), then each configuration by RunConfig."""
    check_spec(spec)
    runs = []
    for grid in _grids(spec):
        runs += _plan_grid({"generator": ["dcgan"], "noise": [NO_NOISE], "seed": [0], **grid}, spec)
    return runs


def _plan_grid(grid: dict[str, list], spec: dict[str, Any]) -> list[PlannedRun]:
    runs = []
    for values in itertools.product(*(grid[k] for k in GRID_KEYS)):
        cell = dict(zip(GRID_KEYS, values))
        param_grid = spec.get("params", {}).get(cell["optimizer"], {})
        for params in itertools.product(*param_grid.values()):
            config = RunConfig(**{
                **spec.get("run", {}), **cell, "noise": None if cell["noise"] == NO_NOISE else cell["noise"],
                "params": dict(zip(param_grid, params))}).request()
            runs.append(PlannedRun(f"runs/{_slug(config)}-{_digest(config)}", config))
    return runs


# Options added after sweeps were first planned, with their defaults: at those they leave a run's folder
# name as it was, so that a sweep planned before them finds its runs again (each resumes as recorded).
LATER_DEFAULTS = {"retest": "auto"}


def _digest(config: dict[str, Any]) -> str:
    """The hash of a run's whole configuration that its folder name ends with."""
    named = {k: v for k, v in config.items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
    return hashlib.sha1(redact(json.dumps(named, sort_keys=True)).encode()).hexdigest()[:10]  # of no secret


def run_or_resume(folder: Path, config: dict[str, Any]) -> str:
    """Bring one run to its end: start it, resume it, or leave it if finished. Returns what it did:
    'skipped', 'resumed', 'started', or 'failed: WHY' for a run that could not go on (the others do)."""
    try:
        return _run_or_resume(folder, config)
    except Exception as err:  # noqa: BLE001 - whatever stops one run, the sweep's other runs go on
        if type(err).__module__.startswith("submitit"):  # how submitit ends a task past its time limit: its own
            raise
        what = str(err) if isinstance(err, (BadInput, RigError, OSError)) else f"{type(err).__name__}: {err}"
        return redact(f"failed: {folder.name}: {what}")


def _run_or_resume(folder: Path, config: dict[str, Any]) -> str:
    found = status(folder)
    if found == "damaged":
        open_run(folder)  # raises, saying what is damaged
    if found == "partial":  # its spec given again: a rig's token is not in the record
        resume(folder, progress=False, **({"neuron": config["neuron"]} if isinstance(config["neuron"], str) else {}))
    elif found == "new" and folder.exists():  # left half made by an evolver before runs were made whole
        lock = FolderLock(folder).acquire()  # a live process's is not removed
        try:
            for entry in folder.iterdir():  # the lock's file too: held by its open descriptor until released
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        finally:
            lock.release()
    if found == "new":
        run(RunConfig(**config), out=folder, progress=False)
    return {"done": "skipped", "partial": "resumed", "new": "started"}[found]


def run_chunk(sweep: str, runs: list[dict[str, Any]], threads: int = 1, models: list | None = None) -> dict[str, str]:
    """Run the given runs of a sweep (PlannedRun fields: path and config) one after another (one job of an
    executor): {path: what it did}. `models` are the `neurons.register_model` entries of the process that
    planned the sweep."""
    import torch

    from neurons.models import MODELS

    for entry in models or []:
        MODELS.register(entry.name, entry.factory, **entry.info)
    torch.set_num_threads(threads)  # runs are the unit of parallelism; fixed threads keep results identical
    done = {}
    for planned in runs:
        if _WorkerInterrupts.stopping:
            break
        _WorkerInterrupts.running = True
        try:
            done[planned["path"]] = run_or_resume(Path(sweep) / planned["path"], planned["config"])
        finally:
            _WorkerInterrupts.running = False
    return done


# ---------------------------------------------------------------------------------------------- executing

class _Chunk:
    """A job for submitit: runs a chunk; on preemption or timeout SLURM requeues it, and the runs
    resume from their folders (submitit's Checkpointable protocol)."""

    def __init__(self, models: list | None = None):
        self.models = models

    def __call__(self, sweep: str, runs: list[dict[str, Any]], threads: int) -> dict[str, str]:
        return run_chunk(sweep, runs, threads, self.models)

    def checkpoint(self, sweep: str, runs: list[dict[str, Any]], threads: int):
        import submitit

        return submitit.helpers.DelayedSubmission(self, sweep, runs, threads)


def write_plan(spec: dict[str, Any], folder: Path) -> list[PlannedRun]:
    runs = plan(spec)
    manifest = {"spec": spec, "runs": [dataclasses.asdict(r) for r in runs]}
    write_atomic(folder / "sweep.json", (redact(json.dumps(manifest, indent=1)) + "\n").encode())
    return runs


def read_plan(folder: str | Path) -> list[PlannedRun]:
    path = Path(folder) / "sweep.json"
    if not path.is_file():
        raise BadInput(f"{folder} is not a sweep folder (no sweep.json); `evolver sweep SPEC --out {folder}` makes one.")
    return [PlannedRun(**r) for r in json.loads(path.read_text())["runs"]]


def sweep(spec: dict[str, Any], folder: str | Path, executor: str = "local", workers: int | None = None,
          resources: Resources | None = None, wait: bool = True, progress: bool = False) -> dict[str, int]:
    """Plan the spec into `folder` and bring every unfinished run to its end with `executor`
    ('local': a process pool, or this process for one worker; 'slurm' or 'submitit-local': submitit
    job arrays). Returns counts of what was done (skipped / resumed / started), or of what was
    submitted when not waiting. Models registered in this process (`neurons.register_model`) go to
    the workers; their factories must be importable functions or classes (not lambdas)."""
    from neurons.models import MODELS

    folder = Path(folder)
    check_out_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = write_plan(spec, folder)
    todo = [dataclasses.asdict(r) for r in runs if status(folder / r.path) != "done"]  # configs go to the workers
    counts = {"planned": len(runs), "skipped": len(runs) - len(todo)}
    if not todo:
        return counts
    resources = resources or Resources()
    # the registered models the runs name (a worker can import only what its runs need)
    named = " ".join(r.config["neuron"] for r in runs if isinstance(r.config["neuron"], str))
    models = [m for m in MODELS.registered() if re.search(rf"(?<![\w.-]){re.escape(m.name)}:", named)]
    if executor not in ("local", "slurm", "submitit-local"):
        raise BadInput(f"Unknown executor '{executor}'. Valid: local (a process pool), slurm (submitit), "
                       "submitit-local (submitit's local executor, for testing a SLURM setup).")
    if progress:
        print(_plan_line(todo, counts["skipped"], folder), file=sys.stderr, flush=True)
    # squeue is asked at each report: less often on a cluster
    reporting = (Reporter(watch(folder), every=5 if executor == "local" else 30) if progress and (executor == "local" or wait)
                 else contextlib.nullcontext())
    try:
        with reporting:
            if executor == "local" and workers == 1:
                done = [run_chunk(str(folder), todo, os.cpu_count() or 1)]
            elif executor == "local":
                done = [_pool(folder, todo, workers or os.cpu_count() or 1, models)]
            else:
                done = _submit(folder, todo, executor, resources, wait, models)
                if not wait:
                    return {**counts, "submitted": len(todo), "jobs": done}
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(folder, executor)) from None
    for outcome in (what for chunk in done for what in chunk.values()):
        if outcome.startswith("failed"):
            warnings.warn(redact(f"A run of the sweep {outcome}"), stacklevel=2)
            outcome = "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _plan_line(todo: list[dict[str, Any]], skipped: int, folder: Path) -> str:
    """What the sweep is about to do: its runs, and the images they show where each has a budget."""
    budgets = [r["config"].get("images") for r in todo]
    size = (f"{len(todo)} runs, {sum(budgets):,} images in all" if all(budgets) else
            f"{len(todo)} runs of {', '.join(sorted({str(r['config'].get('generations', RunConfig.generations)) for r in todo}))} "
            "generations")
    return f"Plan: {size}" + (f" ({skipped} finished already, skipped)" if skipped else "") + f", in {folder}."


def _interrupted(folder: Path, executor: str) -> str:
    counts = sweep_status(folder)
    queued = counts["running"] + counts["pending"]
    return (f"Interrupted: {counts['finished']} of {counts['planned']} runs of the sweep in {folder} are finished"
            + (f"; {counts['interrupted']} stopped part-way keep their finished generations" if counts["interrupted"] else "")
            + (f"; {queued} submitted to SLURM go on in the queue (`evolver sweep SPEC --out {folder} --status`)"
               if executor != "local" and queued else "")
            + ". Run the same sweep command again to go on: finished runs are skipped, the others resumed.")


# times a run goes back to the queue after the pool lost a worker (killed, out of memory) with the run in
# it or waiting: a dead worker takes the pool down, so the count includes other workers' deaths
WORKER_DEATHS = 3


def _pool(folder: Path, todo: list[dict[str, Any]], workers: int, models: list) -> dict[str, str]:
    """{path: what it did} of `todo` run by a pool of `workers` processes. A worker that dies takes only its
    runs with it: the pool is made anew and the unfinished runs queued again (each up to WORKER_DEATHS times)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    outcomes: dict[str, str] = {}
    deaths = dict.fromkeys((r["path"] for r in todo), 0)
    queue = list(todo)
    while queue:
        # spawned, not forked: a fork of a process holding threads (torch's, ZeroMQ's) can deadlock
        with ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_chunk, str(folder), [r], threads, models): r for r in queue}
            queue = []
            for future, planned in futures.items():
                try:
                    outcomes.update(future.result())
                except KeyboardInterrupt:
                    _interrupt(pool)
                    raise
                except BrokenProcessPool:  # this run's worker, or another's, died: the pool is gone
                    deaths[planned["path"]] += status(folder / planned["path"]) != "done"
                    if deaths[planned["path"]] > WORKER_DEATHS:
                        outcomes[planned["path"]] = (f"failed: {planned['path']}: its worker process died "
                                                     f"{deaths[planned['path']]} times while it ran or waited "
                                                     "(killed, or out of memory?); the run keeps what it recorded")
                    else:
                        queue.append(planned)
    return outcomes


def _interrupt(pool: ProcessPoolExecutor) -> None:
    """Stop `pool`'s workers as Ctrl-C at a terminal does (a SIGTERM reaches this process alone): each
    records its run's finished generations and ends it; no queued run starts (`_WorkerInterrupts`). Waits
    for them."""
    workers = list(pool._processes.values())  # noqa: SLF001 - the pool names its workers nowhere else
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        try:
            os.kill(worker.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    for worker in workers:
        worker.join()


class _WorkerInterrupts:
    """A pool worker's Ctrl-C: it stops the run in hand (recorded, resumable), and the worker starts no
    other that was already handed to it. Idle, the worker only takes note (a KeyboardInterrupt there would
    end it with the pool's traceback)."""

    running = stopping = False

    @classmethod
    def install(cls) -> None:
        signal.signal(signal.SIGINT, cls._received)

    @classmethod
    def _received(cls, signum, frame) -> None:
        cls.stopping = True
        if cls.running:
            raise KeyboardInterrupt


def _exit_with_parent(parent: int) -> None:
    """A worker's initializer: a thread that ends the worker when the sweep's process is gone (killed, a
    closed terminal), rather than leave it running its runs for no one. Its runs resume when the sweep
    is run again. Ctrl-C: `_WorkerInterrupts`."""
    import threading
    import time

    _WorkerInterrupts.install()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _submit(folder: Path, todo: list[dict[str, Any]], executor: str, resources: Resources, wait: bool, models: list):
    import submitit

    cluster = "slurm" if executor == "slurm" else "local"
    submitter = submitit.AutoExecutor(folder=folder / "logs" / "%j", cluster=cluster,
                                      **{f"{cluster}_max_num_timeout": resources.requeues})
    options = {"timeout_min": resources.time_minutes, "cpus_per_task": resources.cpus, "mem_gb": resources.mem_gb,
               "gpus_per_node": resources.gpus, "slurm_array_parallelism": resources.parallel_jobs,
               "slurm_signal_delay_s": resources.warning_seconds}
    if resources.partition:
        options["slurm_partition"] = resources.partition
    submitter.update_parameters(**options)
    size = max(1, resources.runs_per_job)
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    jobs = submitter.map_array(_Chunk(models), [str(folder)] * len(chunks), chunks, [resources.cpus] * len(chunks))
    submitted = [{"job": job.job_id, "runs": [r["path"] for r in chunk]} for job, chunk in zip(jobs, chunks)]
    write_atomic(folder / JOBS_FILE, (json.dumps(submitted, indent=1) + "\n").encode())
    if not wait:
        return [job.job_id for job in jobs]
    return [_outcomes(job, folder, [r["path"] for r in chunk]) for job, chunk in zip(jobs, chunks)]


def _outcomes(job, folder: Path, paths: list[str]) -> dict[str, str]:
    """{path: what it did} of a finished job; a job that ended unfinished (its time limit reached more than
    `requeues` times, cancelled, killed) fails the runs it left, which keep what they recorded."""
    error = job.exception()  # the task raised or gave up (FailedJobError), or died without a word
    if error is None:
        return job.result()
    text = str(error).split("----------------------\n")  # a FailedJobError holds the task's traceback so
    reason = (text[1] if len(text) >= 3 else text[0]).strip().splitlines()[-1][:300]
    return {path: "finished" if status(folder / path) == "done" else
            f"failed: {path}: its job {job.job_id} ended unfinished ({reason}); the run keeps what it recorded "
            f"and running the sweep again resumes it. Log: {job.paths.stderr}" for path in paths}


# ---------------------------------------------------------------------------------------------- reading

def sweep_status(folder: str | Path) -> dict[str, int]:
    """How many of a sweep's planned runs are finished, running (in SLURM, or held by a live process),
    pending (queued in SLURM), failed (their task left the queue unfinished, or their folder is damaged),
    interrupted (begun and stopped; running the sweep again resumes them) and not started."""
    return watch(folder).progress().counts


def watch(folder: str | Path) -> Watch:
    folder = Path(folder)
    return Watch(folder, [(r.path, r.config) for r in read_plan(folder)])
