import base64
import json
import os

# Before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import runpy
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import generators
import neurons

# A unit of a randomly initialised resnet18 whose responses vary across DCGAN images.
UNIT = "resnet18:layer2:unit3"
ROOT = Path(__file__).parents[1]


@dataclass
class CliResult:
    """What a user sees of one `evolver` command: its exit status and its two streams."""

    returncode: int
    stdout: str
    stderr: str


def evolver_cli(*args, check: bool = False, env: dict[str, str] | None = None) -> CliResult:
    """Run the `evolver` command line in this process (click's CliRunner), as a user would type it.

    An exception the command did not handle reaches `stderr` as the traceback a user would see, so
    that "no traceback" stays testable in-process.
    """
    from evolver.cli import main

    argv = [str(a) for a in args]
    result = CliRunner().invoke(main, argv, prog_name="evolver", env=env, catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    outcome = CliResult(result.exit_code, result.stdout, stderr)
    if check and outcome.returncode != 0:
        raise AssertionError(f"evolver {' '.join(argv)} exited {outcome.returncode}:\n{outcome.stderr}")
    return outcome


def evolver_process(*args, timeout: float = 600, check: bool = False, env: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess:
    """Run the `evolver` command line in a fresh process: for what only a process shows (a kill, a
    plugin installed for it, import-time settings)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "evolver", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(f"evolver {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}")
    return result


def run_script(path: str, *args, monkeypatch, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python path args...` (path relative to the repository), run in
    this process."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / path), *map(str, args)])
    try:
        runpy.run_path(str(ROOT / path), run_name="__main__")
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def run_args(out, generations: int = 12) -> list:
    """`evolver run` of a small GA run on a random resnet18 unit, recorded in `out`."""
    return ["run", "--neuron", UNIT, "--weights", "random", "--generations", generations, "--population", 20,
            "--seed", 7, "--optimizer", "ga", "--param", "mutation_size=0.3", "--out", out, "--quiet"]


def when_shown(folder, block: int, action, delay: float = 0.0) -> threading.Thread:
    """Play the rig: do `action` once the block's images are written (anew: a block shown again rewrites them),
    `delay` seconds later. A response file written before them would be refused as early."""
    pattern = f"block{block:03d}_*.png"
    before = {p.name: p.stat().st_ino for p in folder.glob(pattern)}

    def wait_then_act():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(before.get(p.name) != p.stat().st_ino
                                                      for p in folder.glob(pattern) if p.exists()):
            time.sleep(0.01)
        time.sleep(delay)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="session")
def dcgan():
    return generators.create("dcgan", weights="random")


@pytest.fixture(scope="session")
def bundled_dcgan():
    """The bundled generator, as `evolver run` loads it by default."""
    return generators.create("dcgan")


@pytest.fixture(scope="session")
def stimnet_classifier():
    """stimnet's 12 class units, read at once."""
    return neurons.create("stimnet:classifier:0")


@pytest.fixture(scope="session")
def images(dcgan):
    """(12, 3, 64, 64) DCGAN images in [0, 1]."""
    return dcgan.render(dcgan.sample(12, np.random.default_rng(0)))


@pytest.fixture(scope="session")
def unit_neuron():
    return neurons.create(UNIT, weights="random")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished 3-generation run folder (`run_args`); read it, or copy it with `copy_of` to change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    evolver_cli(*run_args(out, generations=3), check=True)
    return out


@pytest.fixture
def copy_of(tmp):
    def copy(folder: Path) -> Path:
        return Path(shutil.copytree(folder, tmp / folder.name))
    return copy


@pytest.fixture
def tmp(tmp_path) -> Path:
    return tmp_path


def plotly_values(array) -> np.ndarray:
    """A plotly array as the page stores it: a list, or {"dtype", "bdata"} (base64)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def figure_in_page(html: str) -> tuple[list[dict], dict]:
    """The traces and layout of the plotly figure an HTML page of evolver's draws."""
    decoder = json.JSONDecoder()
    at = html.index(",", html.index("Plotly.newPlot(")) + 1  # past the div's id

    def next_value():
        nonlocal at
        while html[at] in " \n,":
            at += 1
        value, at = decoder.raw_decode(html, at)
        return value

    return next_value(), next_value()
