"""The command line as a user meets it: in-process (click's runner), but for a kill and a resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants

from conftest import UNIT, evolver_cli, figure_in_page, plotly_values, run_args
from evolver.records import RunDirectory
from generators.dcgan import bundled_code_dim

DESIGN_FILES = ("config.json", "generations.csv", "scores.csv", "codes", "images", "best.png", "best_code.npy",
                "state", "trajectory.html")


def test_a_run_writes_every_file_of_the_run_folder(tmp):
    out = tmp / "run"
    result = evolver_cli("run", "--neuron", "resnet18:layer3:unit5", "--weights", "random", "--generations", 4,
                         "--population", 20, "--out", out, "--quiet", check=True)
    for name in DESIGN_FILES:
        assert (out / name).exists(), name
    table = pd.read_csv(out / "generations.csv")
    assert table["gen"].tolist() == list(range(4))
    # the default uh-cmaes shows 2 images twice until the neuron has answered alike 3 times
    assert table["n_images"].tolist() == [22, 22, 22, 20]
    assert table["best_so_far"].is_monotonic_increasing
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert len(scores) == 86 and scores["image_id"].tolist() == list(range(86))
    assert table["best_so_far"].iloc[-1] == scores["score"].max()
    assert len(list((out / "codes").glob("gen_*.npy"))) == 4
    assert np.load(out / "codes" / "gen_0003.npy").shape == (20, bundled_code_dim())
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["optimizer"]["name"] == "uh-cmaes"  # the default, chosen by evolver bench
    assert config["resolved"]["optimizer"]["params"]["population"] == 20
    assert config["resolved"]["neuron"]["weights"].startswith("random")
    assert config["command"][:2] == ["evolver", "run"] and "--weights" in config["command"]
    assert config["versions"]["torch"]
    assert f"{table['best_so_far'].iloc[-1]:.4g}" in result.stdout and "untrained random weights" in result.stdout


@pytest.mark.slow
def test_evolution_raises_the_unit_well_above_the_first_generation(tmp, record_property):
    out = tmp / "run"
    evolver_cli("run", "--neuron", "resnet18:layer3:unit5", "--weights", "random", "--generations", 30,
                "--population", 20, "--out", out, "--quiet", check=True)
    table = pd.read_csv(out / "generations.csv")
    first, last = table["best"].iloc[0], table["best_so_far"].iloc[-1]
    record_property("margin", round(last / first - 1.5, 2))
    # measured 1.92x in bf16 and 1.96x in fp32 (seed 0): 0.4 above the 1.5x asked
    assert last > 1.5 * first, f"first generation's best {first:.3f}, final best {last:.3f}"


def _committed_generation(run_dir) -> int:
    state = RunDirectory(run_dir).state()
    return -1 if state is None else state.generation


@pytest.mark.slow  # 15 s: two runs, one in a process of its own (test_python_api resumes a kill in the fast suite)
def test_a_terminated_run_says_how_to_resume_and_resumes_to_the_same_result(tmp):
    """SIGTERM (a scheduler's, `kill`) as Ctrl-C: what finished is recorded, the message names the resume
    command, the status is 130. (SIGKILL, which runs nothing: test_python_api, test_sweep.)"""
    evolver_cli(*run_args(tmp / "whole"), check=True)
    killed = tmp / "killed"
    process = subprocess.Popen([sys.executable, "-m", "evolver", *map(str, run_args(killed))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _committed_generation(killed) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    stopped_at = _committed_generation(killed)
    assert 3 <= stopped_at < 11, "the signal must land mid-run"
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert f"{killed} holds {stopped_at + 1} finished generation(s) of 12, recorded. Continue with " \
           f"`evolver run --resume {killed}`." in stderr, stderr
    evolver_cli("run", "--resume", killed, "--quiet", check=True)

    for table in ("generations.csv", "scores.csv"):
        whole = pd.read_csv(tmp / "whole" / table, keep_default_na=False)
        resumed = pd.read_csv(killed / table, keep_default_na=False)
        pd.testing.assert_frame_equal(whole.drop(columns="seconds", errors="ignore"),
                                      resumed.drop(columns="seconds", errors="ignore"))
    for gen in range(12):
        np.testing.assert_array_equal(np.load(tmp / "whole" / "codes" / f"gen_{gen:04d}.npy"),
                                      np.load(killed / "codes" / f"gen_{gen:04d}.npy"))
    np.testing.assert_array_equal(np.load(tmp / "whole" / "best_code.npy"), np.load(killed / "best_code.npy"))
    assert not list(killed.rglob("*.tmp"))


def test_resume_extends_a_finished_run(finished_run, copy_of):
    out = copy_of(finished_run)
    evolver_cli("run", "--resume", out, "--generations", 5, "--quiet", check=True)
    assert pd.read_csv(out / "generations.csv")["gen"].tolist() == [0, 1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["run"]["generations"] == 5


def _bad_input(*args, match: str, **kwargs):
    result = evolver_cli(*args, **kwargs)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert match in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("neuron, match", [
    ("resnt18:layer3:1", "Unknown model 'resnt18'"),
    ("resnet18:layer9:1", "no layer 'layer9' (closest: layer4"),
    ("resnet18:layer3:999", "has 256 units (0–255)"),
    ("resnet18:layer3", "Malformed neuron spec"),
])
def test_bad_neuron_specs_exit_2(tmp, neuron, match):
    _bad_input("run", "--neuron", neuron, "--weights", "random", "--out", tmp / "r", match=match)
    assert not (tmp / "r").exists()


def test_an_out_folder_that_is_a_file_or_under_one_is_bad_input(tmp):
    (tmp / "notes.txt").write_text("a lab's notes")
    for out in (tmp / "notes.txt", tmp / "notes.txt" / "run"):
        message = _bad_input("run", "--generations", 1, "--out", out, match=f"{tmp / 'notes.txt'} is a file")
        assert "--resume" not in message and "free space" not in message
    _bad_input("run", "--neuron", "stimnet:relu4:unit0-1", "--generations", 1, "--out", tmp / "notes.txt" / "set",
               match="is a file")
    assert (tmp / "notes.txt").read_text() == "a lab's notes"


def test_bad_weights_exit_2(tmp):
    _bad_input("run", "--neuron", UNIT, "--weights", tmp / "missing.pth", match="does not exist")
    wrong = tmp / "wrong.pth"
    torch.save(timm.create_model("resnet34").state_dict(), wrong)
    _bad_input("run", "--neuron", UNIT, "--weights", wrong, match="unexpected (")
    _bad_input("run", "--neuron", UNIT, "--generator-weights", wrong, match="do not match")


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if a pretrained download is attempted: an offline machine must fail at once."""
    create_model = timm.create_model

    def build(*args, pretrained=False, **kwargs):
        assert not pretrained, "a download was attempted"
        return create_model(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", build)


def test_pretrained_offline_without_cache_exits_2_at_once(tmp, monkeypatch, no_download):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp))
    message = _bad_input("run", "--neuron", "test_resnet:fc:1", "--weights", "pretrained",
                         match="No pretrained weights for 'test_resnet'")
    assert str(tmp) in message and "--weights random" in message


def test_pretrained_with_the_hub_unreachable_exits_2_without_trying_to_download(tmp, monkeypatch, no_download):
    # HF_HUB_OFFLINE unset, and the hub endpoint a closed port on this machine.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp))
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    _bad_input("run", "--neuron", "test_resnet:fc:1", "--weights", "pretrained",
               match="127.0.0.1 is unreachable", env={"HF_HUB_OFFLINE": "0"})


def test_bad_optimizer_and_params_exit_2(tmp):
    _bad_input("run", "--neuron", UNIT, "--weights", "random", "--param", "mutation_sise=0.1",
               match="unknown option mutation_sise")
    _bad_input("run", "--neuron", UNIT, "--weights", "random", "--param", "oops", match="NAME=VALUE")
    _bad_input("run", "--neuron", UNIT, "--weights", "random", "--optimizer", "cma", match="Valid optimizers")


def test_bad_resume_exits_2(tmp, finished_run):
    def recorded():  # what the run holds (.lock names the last process that held the folder)
        return {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file() and p.name != ".lock"}

    _bad_input("run", "--resume", tmp, match="is not an evolver run folder")
    before = recorded()
    _bad_input("run", "--resume", finished_run, "--seed", 8, match="seed=8 (the run has 7)")
    _bad_input("run", "--resume", finished_run, "--neuron", "resnet18:layer2:unit4", match="conflict")
    _bad_input("run", "--resume", finished_run, "--generations", -5, match="--generations must be at least 1")
    _bad_input(*run_args(finished_run), match="already exists")
    assert recorded() == before  # nothing touched


def test_plot_overlays_runs(tmp, finished_run, copy_of):
    a = finished_run
    b = copy_of(finished_run).rename(tmp / "b")
    out = tmp / "cmp.html"
    evolver_cli("plot", a, b, "--out", out, "--generations", "0,2", check=True)
    html = out.read_text()
    traces = figure_in_page(html)[0]
    groups = {t.get("legendgroup") for t in traces if t.get("name") == "best so far"}
    assert groups == {f"{a.name} ({UNIT})", f"b ({UNIT})"}  # named once, as the group's title
    assert html.count('"source":"data:image\\u002fpng;base64,') == 4  # 2 runs x gens 0 and 2
    _bad_input("plot", tmp / "nope", match="not an evolver run folder")


def test_the_runs_of_a_folder_share_one_copy_of_plotly_js(tmp, finished_run, copy_of):
    """A page loads plotly.js from beside its run folder (one copy for the folder's runs), or from the
    CDN where copied away from it; the page itself is small."""
    import plotly.offline

    import evolver

    script = f"plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    for name in ("a", "b"):
        evolver.run(neuron="stimnet:relu4:unit1", generations=2, retest="none", out=tmp / "runs" / name,
                    progress=False)
    assert [p.name for p in (tmp / "runs").glob("*.js")] == [script]
    assert (tmp / "runs" / script).read_text() == plotly.offline.get_plotlyjs()
    for name in ("a", "b"):
        page = (tmp / "runs" / name / "trajectory.html").read_text()
        assert f'src="../{script}"></script><script>window.Plotly || document.write(' in page
        assert f"https://cdn.plot.ly/{script}" in page and len(page) < 200_000
    evolver_cli("plot", tmp / "runs" / "a", "--out", tmp / "pages" / "a.html", check=True)
    assert f'src="{script}"' in (tmp / "pages" / "a.html").read_text() and (tmp / "pages" / script).is_file()


def test_the_trajectory_draws_the_best_reference_image(tmp):
    import evolver

    result = evolver.run(neuron="stimnet:relu4:unit1", generations=2, retest="none", reference="procedural:6",
                         out=tmp / "run", progress=False)
    traces = figure_in_page((result.path / "trajectory.html").read_text())[0]
    (line,) = [t for t in traces if t.get("name") == "best of 6 reference images"]
    assert set(plotly_values(line["y"])) == {evolver.open_run(result.path).reference_set["score"].max()}


@pytest.mark.slow
def test_a_200_generation_run_folder_is_small(tmp):
    """The main job's folder without 4.7 MB of plotly.js in its page: measured 3.4 MB (codes 1.6 MB, best
    images 1.3 MB), trajectory.html 64 kB."""
    out = tmp / "runs" / "main"
    evolver_cli("run", "--out", out, "--quiet", check=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 5_000_000 and (out / "trajectory.html").stat().st_size < 200_000, size


def test_layers_and_generators_listings():
    layers = evolver_cli("layers", "resnet18", check=True).stdout
    assert any(line.split()[:3] == ["layer4.1.act2", "512", "7×7"] for line in layers.splitlines())
    _bad_input("layers", "resnet1800", match="Unknown model")
    listing = evolver_cli("generators", check=True).stdout
    dcgan = next(line for line in listing.splitlines() if line.startswith("dcgan "))
    assert f"code {bundled_code_dim()} bundled" in dcgan and "64×64" in dcgan and "weights found" in dcgan


@pytest.mark.parametrize("first_best, gain", [(2.0, " (36.00x)"), (-0.22, ""), (0.0, "")])
def test_summary_gives_a_gain_only_over_a_positive_first_best(capsys, first_best, gain):
    from types import SimpleNamespace

    from evolver.cli import _summarise

    _summarise(SimpleNamespace(best=72.0, first_best=first_best, best_generation=198, path=Path("run"), notes=[], presentations=1))
    assert f"the first generation's best was {first_best:.4g}{gain}.\n" in capsys.readouterr().out


HEAVY = ("torch", "torchvision", "timm", "pandas", "plotly", "deap", "h5py", "himalaya", "zmq", "scipy", "PIL")
IMPORTS_OF_HELP = """
import sys
from evolver.cli import main
try:
    main(sys.argv[1:], prog_name="evolver")
except SystemExit as done:
    print(done.code)
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["--version"], ["run", "--generations", "x"],
                                  ["rnu"]], ids=" ".join)
def test_help_version_and_argument_errors_import_no_heavy_package(args):
    """Help, the version and a typo answer in well under a second: none of them loads torch or the other
    heavy packages (their time is measured in the closing notes, not asserted)."""
    result = subprocess.run([sys.executable, "-c", IMPORTS_OF_HELP, *args], capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent)
    status, modules = result.stdout.strip().splitlines()[-2:]
    assert status in ("0", "2"), result.stdout + result.stderr
    assert not set(modules.split()) & set(HEAVY), modules


def test_the_command_list_shows_whole_descriptions_and_the_version():
    listing = evolver_cli("--help", check=True).stdout
    commands = listing.split("Commands:")[1].splitlines()[1:]
    assert len(commands) >= 13 and not any(line.rstrip().endswith("...") for line in commands), listing
    assert evolver_cli("--version", check=True).stdout.startswith("evolver 0.")


@pytest.mark.slow  # a process of its own: the warnings' format is set by the command line
def test_a_rig_time_out_prints_as_one_plain_line(tmp):
    (tmp / "exchange").mkdir()
    result = subprocess.run([sys.executable, "-m", "evolver", "run", "--neuron",
                             f"folder:{tmp / 'exchange'}:timeout=0.3:retries=1:connect_timeout=0.3",
                             "--generations", "1", "--quiet", "--out", str(tmp / "run")],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert "Warning: block 0: no responses within 0.3 s (attempt 1 of 2)" in lines, result.stderr
    assert "UserWarning" not in result.stderr and "_timed_out" not in result.stderr
