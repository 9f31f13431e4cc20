"""How far a sweep is, read from its folder: each run's state, the counts of runs finished, running,
failed and to go, the images shown and the share of the planned work done; and `Reporter`, which prints
that (with images/s and an estimate of the time left) while a sweep runs, and leaves its latest line in
the folder for `evolver sweep --status`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolver.config import RunConfig
from evolver.runs import open_run
from evolver_common import BadInput, FolderLock, write_atomic

JOBS_FILE = "jobs.json"  # the last submission: each array task's job id and its runs
REPORT_FILE = "progress.json"  # the reporter's latest line, for --status
FRESH_SECONDS = 120  # a report older than this is from a sweep process that no longer reports


def status(folder: Path) -> str:
    """'done', 'partial' (a run folder to resume), 'new', or 'damaged' (its state file unreadable)."""
    if not (folder / "config.json").is_file():
        return "new"
    try:
        run = open_run(folder)
    except BadInput:
        return "damaged"
    return "done" if run.finished else "partial"


@dataclass(frozen=True)
class RunProgress:
    state: str  # as `status` says
    images: int  # shown so far
    done: float  # share of the run's planned generations (or image budget) done, in [0, 1]
    writing: bool  # whether a process holds the run's folder now


def run_progress(folder: Path, config: dict[str, Any]) -> RunProgress:
    """How far the run in `folder` (planned with `config`, RunConfig fields) is."""
    if not (folder / "config.json").is_file():
        return RunProgress("new", 0, 0.0, False)
    try:
        run = open_run(folder)
    except BadInput:
        return RunProgress("damaged", 0, 0.0, False)
    images = run.state.next_image_id if run.state else 0
    if run.finished:
        return RunProgress("done", images, 1.0, False)
    done = (run.state.generation + 1) / config.get("generations", RunConfig.generations) if run.state else 0.0
    if config.get("images"):
        done = max(done, images / config["images"])
    return RunProgress("partial", images, min(done, 1.0), FolderLock.held(folder))


@dataclass(frozen=True)
class Progress:
    """A sweep's runs counted by what they are doing, the images they showed, and the share of the planned
    work done (each run's share of its generations, averaged)."""

    counts: dict[str, int]  # planned, finished, running, pending, failed, interrupted, not started
    images: int
    done: float

    def describe(self) -> str:
        shown = {k: v for k, v in self.counts.items() if v or k in ("planned", "finished")}
        return f"{', '.join(f'{k} {v}' for k, v in shown.items())}; {self.images:,} images shown, {self.done:.0%} done"


class Watch:
    """Reads a sweep's progress from its folder, rereading only the runs that can still change."""

    def __init__(self, folder: Path, runs: list[tuple[str, dict[str, Any]]]):
        self.folder, self.runs, self.finished = folder, runs, {}

    def progress(self) -> Progress:
        jobs = json.loads((self.folder / JOBS_FILE).read_text()) if (self.folder / JOBS_FILE).is_file() else []
        queued = _queue_states([job["job"] for job in jobs])
        submitted = {path: queued.get(job["job"]) for job in jobs for path in job["runs"]}
        counts = dict.fromkeys(("planned", "finished", "running", "pending", "failed", "interrupted", "not started"), 0)
        counts["planned"], images, done = len(self.runs), 0, 0.0
        for path, config in self.runs:
            run = self.finished.get(path) or run_progress(self.folder / path, config)
            if run.state == "done":
                self.finished[path] = run
            images, done = images + run.images, done + run.done
            counts[_category(run, (submitted[path] or "") if path in submitted else None)] += 1
        return Progress(counts, images, done / max(len(self.runs), 1))


def _category(run: RunProgress, queue_state: str | None) -> str:
    """`queue_state`: the squeue state of the run's SLURM task, "" where it left the queue, None where the
    run was never submitted."""
    if run.state == "done":
        return "finished"
    if run.state == "damaged" or queue_state == "":
        return "failed"
    if queue_state is not None:
        return "running" if queue_state in ("RUNNING", "COMPLETING") else "pending"
    if run.writing:
        return "running"
    return "interrupted" if run.state == "partial" else "not started"


def _queue_states(job_ids: list[str]) -> dict[str, str]:
    """{array task id (as submitit names it, JOB_TASK): its squeue state} for those still in the queue."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True,
                            text=True, check=False).stdout
    return dict(line.split() for line in listed.splitlines() if len(line.split()) == 2)


class Reporter:
    """Prints a sweep's progress every `every` seconds while it runs (a line rewritten in place on a
    terminal, a new line each minute in a log), with the images shown a second and the time left at the
    pace of this session, and writes each line to the folder's progress.json."""

    def __init__(self, watch: Watch, every: float = 5.0, stream=None):
        self.watch, self.every, self.stream = watch, every, stream or sys.stderr
        self.started, self.first = time.monotonic(), watch.progress()
        self.stop, self.thread = threading.Event(), threading.Thread(target=self._loop, daemon=True,
                                                                     name="sweep-progress")
        self.terminal = self.stream.isatty()
        self.last_printed = 0.0

    def __enter__(self) -> Reporter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.report(final=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.report()
            except (OSError, ValueError, BadInput):  # a run folder caught mid-write: the next report reads it
                pass

    def line(self, progress: Progress) -> str:
        seconds = time.monotonic() - self.started
        rate = (progress.images - self.first.images) / seconds if seconds > 0 else 0.0
        gained = progress.done - self.first.done
        left = seconds * (1 - progress.done) / gained if gained > 0 else None
        if progress.done >= 1:
            ending = f", all done in {_duration(seconds)}"
        else:
            ending = f", about {_duration(left)} left" if left is not None else ""
        pace = f"; {rate:,.0f} images/s{ending}"
        return f"sweep: {progress.describe()}{pace}"

    def report(self, final: bool = False) -> None:
        line = self.line(self.watch.progress())
        write_atomic(self.watch.folder / REPORT_FILE, (json.dumps({"line": line, "at": time.time()}) + "\n").encode())
        if self.terminal:
            print(f"\r\033[K{line}", end="\n" if final else "", file=self.stream, flush=True)
        elif final or time.monotonic() - self.last_printed >= 60:
            print(line, file=self.stream, flush=True)
            self.last_printed = time.monotonic()


def last_report(folder: Path) -> str | None:
    """The line a sweep process reported in the last FRESH_SECONDS, or None."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return report["line"] if time.time() - report.get("at", 0) < FRESH_SECONDS else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
