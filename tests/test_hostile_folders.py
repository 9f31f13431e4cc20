"""Issue 49's hostile run and sweep folders: symbolic links where records are, tables edited between
runs, a run folder half made, a unit set wider than the open-file limit. Each is refused with a
one-paragraph message (exit 2) that rewrites nothing, or survived. Rigs' files and messages: test_hostile_rigs.py."""
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

import evolver
from conftest import ROOT, evolver_cli, run_args
from evolver.records import RunDirectory
from evolver.sweep import sweep
from evolver_common import BadInput, FolderLock


SWEEP = {"grid": {"neuron": ["stimnet:relu4:unit1", "stimnet:relu4:unit2"], "optimizer": ["ga"], "seed": [0, 1]},
         "params": {"ga": {"population": [6]}}, "run": {"generations": 2, "generator_weights": "random"}}


def _snapshot(folder):
    """Every record's bytes (the lock names its last holder: not a record)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("record", [".lock", "generations.csv", "scores.csv", "state", "codes/gen_0001.npy"])
def test_resume_refuses_a_run_folder_with_a_symlinked_record(finished_run, copy_of, tmp, record):
    run = copy_of(finished_run)
    victim = tmp / "someone-elses-file"
    victim.write_text("precious\n")
    target = run / record
    if target.is_dir():
        target.rename(tmp / "state-moved")
        target.symlink_to(tmp / "state-moved")
    else:
        target.unlink(missing_ok=True)
        target.symlink_to(victim)
    before = _snapshot(run)
    result = evolver_cli("run", "--resume", run, "--generations", 5, "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "symbolic links" in result.stderr and record.split("/")[0] in result.stderr
    assert victim.read_text() == "precious\n" and _snapshot(run) == before


def test_the_lock_and_appended_tables_are_opened_without_following_links(tmp):
    """Past the folder's check (a link made while the run holds it): the lock and the tables still refuse."""
    run = RunDirectory.create(tmp / "run", {"run": {}})
    run.release()
    victim = tmp / "victim"
    victim.write_text("precious\n")
    (run.path / ".lock").unlink()
    (run.path / ".lock").symlink_to(victim)
    with pytest.raises(BadInput, match="symbolic links"):
        FolderLock(run.path).acquire()  # O_NOFOLLOW, whoever calls it
    (run.path / "generations.csv").unlink()
    (run.path / "generations.csv").symlink_to(victim)
    with pytest.raises(BadInput, match="symbolic links"):
        run.roll_back()
    assert victim.read_text() == "precious\n"


def test_report_replaces_a_symlinked_table_rather_than_writing_into_its_target(tmp):
    from evolver.aggregate import aggregate

    folder = tmp / "sweep"
    sweep({**SWEEP, "grid": {"neuron": ["stimnet:relu4:unit1"], "optimizer": ["ga"]}}, folder, workers=1)
    victims = {}
    for name in ("runs.parquet", "trajectories.parquet", "report.html"):
        victims[name] = tmp / f"victim-{name}"
        victims[name].write_text("precious\n")
        (folder / name).symlink_to(victims[name])
    aggregate(folder)
    assert evolver_cli("report", folder).returncode == 0
    for name, victim in victims.items():
        assert victim.read_text() == "precious\n" and not (folder / name).is_symlink()
    assert len(pd.read_parquet(folder / "runs.parquet")) == 1


@pytest.mark.parametrize("edit", ["fewer digits", "CRLF", "a row removed", "cut short"])
def test_resume_refuses_a_table_edited_after_its_commit_and_rewrites_nothing(finished_run, copy_of, edit):
    run = copy_of(finished_run)
    name = "scores.csv" if edit == "CRLF" else "generations.csv"
    path = run / name
    text = path.read_text()
    if edit == "fewer digits":  # a spreadsheet's re-save
        pd.read_csv(path).to_csv(path, index=False, float_format="%.4g")
    elif edit == "CRLF":
        path.write_bytes(text.replace("\n", "\r\n").encode())
    elif edit == "a row removed":
        lines = text.splitlines(keepends=True)
        path.write_text("".join(lines[:2] + lines[3:]))
    else:
        path.write_text(text[:-10])
    before = _snapshot(run)
    result = evolver_cli("run", "--resume", run, "--generations", 5, "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"The table {path} is not as generation 2 committed it" in result.stderr.replace("\n", " ")
    assert _snapshot(run) == before
    assert len(evolver.open_run(run).generations) >= 2  # still read


def test_a_table_appended_after_its_commit_is_cut_back_on_resume(finished_run, copy_of):
    run = copy_of(finished_run)
    with open(run / "scores.csv", "a") as f:
        f.write("99,9999,,1.0\n")  # a generation a kill caught half written
    evolver_cli("run", "--resume", run, "--generations", 4, "--quiet", check=True)
    scores = evolver.open_run(run).scores
    assert 9999 not in scores["image_id"].tolist() and scores["gen"].max() == 3


KILL_AT_CONFIG = """
import os, signal, sys
from evolver.records import RunDirectory
RunDirectory.write_config = lambda self, config: os.kill(os.getpid(), signal.SIGKILL)
from evolver.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # a process of its own, killed
def test_a_kill_between_mkdir_and_the_first_records_leaves_no_run_folder(tmp):
    out = tmp / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_AT_CONFIG, *map(str, run_args(out, 2))], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()  # the half-made folder kept its temporary name
    resumed = evolver_cli("run", "--resume", out, "--quiet")
    assert resumed.returncode == 2 and "not an evolver run folder" in resumed.stderr
    evolver_cli(*run_args(out, 2), check=True)  # a new run takes the name
    assert len(evolver.open_run(out).generations) == 2


def test_a_full_disk_while_a_run_folder_is_made_leaves_no_folder(tmp, monkeypatch):
    def full(self, name, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunDirectory, "write_file", full)
    result = evolver_cli("run", "--neuron", "stimnet:relu4:unit1", "--generator-weights", "random", "--reference",
                         "procedural:4", "--generations", 2, "--out", tmp / "run", "--quiet")
    assert result.returncode == 1 and "No space left" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp / "run").exists() and not [p for p in tmp.iterdir() if p.name.startswith(".run.")]


@pytest.mark.slow
def test_a_unit_set_wider_than_the_open_file_limit_runs_and_holds_one_lock(tmp):
    """128 units at `ulimit -n 64`: one lock for the set, not one open file a unit (the set stopped at the
    limit). A unit's run resumed alone is refused while the set runs, and goes on after."""
    import resource

    out = tmp / "set"
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # noqa: E731
    result = subprocess.run([sys.executable, "-m", "evolver", "run", "--neuron", "stimnet:relu4:unit0-127",
                             "--generator-weights", "random", "--generations", "1", "--population", "4", "--quiet",
                             "--out", str(out)], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                            text=True, timeout=600, preexec_fn=limit)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([p for p in out.iterdir() if p.is_dir() and p.name.startswith("unit")]) == 128
    assert not any((p / ".lock").exists() for p in out.iterdir() if p.is_dir())
    with evolver.start(neuron="stimnet:relu4:unit0-1", generator_weights="random", generations=1, params={"population": 4},
                       out=tmp / "pair") as loop:
        held = evolver_cli("run", "--resume", tmp / "pair" / "unit1", "--generations", 2, "--quiet")
        assert held.returncode == 2 and "unit set's folder" in held.stderr and "in use by" in held.stderr
        loop.run()
    evolver_cli("run", "--resume", tmp / "pair" / "unit1", "--generations", 2, "--quiet", check=True)
    assert len(evolver.open_run(tmp / "pair" / "unit1").generations) == 2




def test_a_worker_runs_the_configs_it_was_given_though_another_spec_took_the_folder(tmp):
    """Two specs on one folder: the first's worker no longer reads sweep.json (which the second rewrote)."""
    import dataclasses

    from evolver.sweep import plan, run_chunk, write_plan

    mine = plan(SWEEP)
    write_plan({**SWEEP, "grid": {**SWEEP["grid"], "neuron": ["stimnet:relu3:unit0"]}}, tmp)
    assert run_chunk(str(tmp), [dataclasses.asdict(mine[0])]) == {mine[0].path: "started"}
    assert evolver.open_run(tmp / mine[0].path).finished


def test_a_half_made_run_folder_held_by_a_live_process_is_not_removed(tmp):
    from evolver.sweep import plan, run_or_resume

    planned = plan(SWEEP)[0]
    folder = tmp / planned.path
    folder.mkdir(parents=True)
    (folder / "codes").mkdir()
    (folder / "codes" / "gen_0000.npy").write_bytes(b"someone's")
    held = FolderLock(folder).acquire()
    try:
        outcome = run_or_resume(folder, planned.config)
    finally:
        held.release()
    assert outcome.startswith("failed:") and "in use by evolver process" in outcome
    assert (folder / "codes" / "gen_0000.npy").read_bytes() == b"someone's"
    assert run_or_resume(folder, planned.config) == "started"  # once let go, it is cleared and run


def test_any_error_in_one_run_fails_that_run_and_the_sweep_goes_on(tmp, monkeypatch):
    import evolver.sweep as sweep_module

    real = sweep_module.run

    def flaky(config, **kwargs):
        if config.seed == 1:
            raise KeyError("something no one foresaw")
        return real(config, **kwargs)

    monkeypatch.setattr(sweep_module, "run", flaky)
    with pytest.warns(UserWarning, match="KeyError: 'something no one foresaw'"):
        counts = sweep_module.sweep(SWEEP, tmp, workers=1)
    assert counts == {"planned": 4, "skipped": 0, "started": 2, "failed": 2}


@pytest.mark.slow  # two sweeps and a report
def test_a_damaged_run_config_fails_that_run_and_report_names_an_unreadable_one(tmp):
    from evolver.aggregate import aggregate
    from evolver.sweep import plan

    sweep(SWEEP, tmp, workers=1)
    first, second = (tmp / r.path for r in plan(SWEEP)[:2])
    (first / "config.json").write_text("{not json")
    (second / "generations.csv").write_text('gen,n_images\n0,"6\n1,2,3,4,5\n')  # pandas cannot parse it
    with pytest.warns(UserWarning) as caught:
        found = aggregate(tmp)
    assert any(second.name in str(w.message) and "left out of the report" in str(w.message) for w in caught)
    assert found.statuses == {"damaged": 1, "unreadable": 1, "done": 2} and len(found.runs) == 2
    result = evolver_cli("report", tmp)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    with pytest.warns(UserWarning, match="config.json"):
        counts = sweep(SWEEP, tmp, workers=1)
    assert counts["failed"] == 1 and counts["skipped"] == 3


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


def _spec_file(tmp, generations: int) -> str:
    grid = SWEEP["grid"]
    text = (f"[grid]\nneuron = {grid['neuron']!r}\noptimizer = ['ga']\nseed = [0, 1, 2]\n"
            f"[params.ga]\npopulation = [6]\n[run]\ngenerations = {generations}\ngenerator_weights = 'random'\n").replace("'", '"')
    (tmp / "spec.toml").write_text(text)
    return str(tmp / "spec.toml")


def _workers(main: subprocess.Popen, timeout: float = 120) -> list[int]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the pool's spawned workers (not its resource tracker)
        workers = [c for c in _children(main.pid) if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()
                   and b"resource_tracker" not in open(f"/proc/{c}/cmdline", "rb").read()]
        if len(workers) == 2:
            return workers
        time.sleep(0.2)
    raise AssertionError("the sweep's workers did not start")


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_run_which_goes_back_to_the_queue(tmp):
    import time

    out = tmp / "sweep"
    main = subprocess.Popen([sys.executable, "-m", "evolver", "sweep", _spec_file(tmp, 6), "--workers", "2",
                             "--out", str(out)], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _workers(main)
    while not list(out.glob("runs/*/state/state.npz")):  # a run under way
        time.sleep(0.1)
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = main.communicate(timeout=600)
    assert main.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert all(evolver.open_run(p).finished for p in out.glob("runs/*")) and len(list(out.glob("runs/*"))) == 6


@pytest.mark.slow
def test_the_workers_of_a_killed_sweep_exit(tmp):
    import time

    out = tmp / "sweep"
    main = subprocess.Popen([sys.executable, "-m", "evolver", "sweep", _spec_file(tmp, 200), "--workers", "2",
                             "--out", str(out)], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = _workers(main)
    main.kill()
    main.wait()
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z" for w in workers):
        assert time.monotonic() < deadline, "a worker outlived its sweep by 20 s"
        time.sleep(0.2)


def test_a_rig_token_appears_in_no_sweep_file_name_or_warning(tmp):
    """The token given in a sweep's spec: kept out of folder names, sweep.json and the warnings of a run
    that fails; the run resumes with the spec given again."""
    secret = "s3cret-sweep-token"
    spec = {"grid": {"neuron": [f"zmq:tcp://127.0.0.1:1:token={secret}:timeout=0.2:connect_timeout=0.2:retries=0"],
                     "optimizer": ["ga"]}, "params": {"ga": {"population": [4]}}, "run": {"generations": 1}}
    with pytest.warns(UserWarning) as caught:
        counts = sweep(spec, tmp, workers=1)
    assert counts["failed"] == 1
    assert not any(secret in str(w.message) for w in caught)
    for path in tmp.rglob("*"):
        assert secret not in str(path.relative_to(tmp))
        assert not path.is_file() or secret.encode() not in path.read_bytes()
    assert "token=REDACTED" in (tmp / "sweep.json").read_text()


def test_one_paragraph_errors_for_bad_numbers_and_a_damaged_config(finished_run, copy_of, tmp):
    for args, message in ((("--seed", -1), "--seed must be a whole number from 0 up"),
                          (("--reference", "procedural:-5"), "Malformed reference 'procedural:-5'"),
                          (("--reference", "procedural:99999999999"), "N corpus stimuli, 1 to 5000")):
        result = evolver_cli("run", "--neuron", "stimnet:relu4:unit1", *args, "--generations", 1, "--out", tmp / "r")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp / "r").exists()
    run = copy_of(finished_run)
    shorter = evolver_cli("run", "--resume", run, "--generations", 2, "--quiet")
    assert shorter.returncode == 2 and "has finished 3 generations already" in shorter.stderr
    assert '"generations": 3' in (run / "config.json").read_text()
    (run / "config.json").write_text('{"run": {"neuron": ')
    damaged = evolver_cli("run", "--resume", run, "--quiet")
    assert damaged.returncode == 2 and "config.json" in damaged.stderr and "is damaged" in damaged.stderr
    assert "Traceback" not in damaged.stderr


def test_a_response_of_minus_1e308_is_missing_not_an_infinity_in_the_tables(tmp):
    def huge(images):
        values = images.mean((1, 2, 3)).double()
        values[0] = -1e308
        values[1] = 1e300
        return values

    with pytest.warns(UserWarning, match=r"beyond ±1e\+150"):
        evolver.run(neuron=huge, generator_weights="random", generations=2, out=tmp / "run", progress=False)
    for name in ("generations.csv", "scores.csv"):
        assert "inf" not in (tmp / "run" / name).read_text()


def test_a_generation_too_large_to_hold_is_rendered_and_shown_in_chunks(tmp, monkeypatch):
    """Memory follows the chunk: the neuron sees at most a chunk at a time, and the run's records are those
    of a run that kept its whole generation."""
    import numpy as np

    import evolver.presenting as loop

    seen = []

    def brightness(images):
        seen.append(len(images))
        return images.mean((1, 2, 3))

    options = dict(neuron=brightness, generator="stimuli", generations=3, params={"population": 40}, progress=False,
                   precision="fp32", device="cpu", reference="procedural:5", interleave=3)
    whole = evolver.run(out=tmp / "whole", **options)
    shown = sum(seen)
    seen.clear()
    image_bytes = 3 * 4 * 64 ** 2  # the stimuli generator's default size
    monkeypatch.setattr(loop, "CHUNK_BYTES", 7 * image_bytes)
    monkeypatch.setattr(loop, "KEPT_BYTES", 10 * image_bytes)
    chunked = evolver.run(out=tmp / "chunked", **options)
    assert max(seen) == 7 and sum(seen) == shown
    for name in ("scores.csv", "generations.csv", "references.csv"):
        a, b = (pd.read_csv(r.path / name) for r in (whole, chunked))
        pd.testing.assert_frame_equal(a.drop(columns="seconds", errors="ignore"), b.drop(columns="seconds",
                                                                                         errors="ignore"))
    assert chunked.best == whole.best
    np.testing.assert_array_equal(evolver.open_run(chunked.path).best.image, evolver.open_run(whole.path).best.image)


def test_a_run_with_symlinked_records_is_still_read(finished_run, copy_of, tmp):
    run = copy_of(finished_run)
    (run / "codes").rename(tmp / "codes-elsewhere")  # a lab's bigger disk
    (run / "codes").symlink_to(tmp / "codes-elsewhere")
    assert evolver.open_run(run).codes(2).shape[0] > 0
