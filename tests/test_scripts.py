"""Every script under benchmarks/ and scripts/ runs with --smoke (tiny sizes), so that none rots unseen.

The Python scripts run in this process, as `python SCRIPT --smoke` would run them; the two shell
scripts, which start several processes, run with SMOKE=1 in the slow suite.
"""
import os
import subprocess

import pytest

from conftest import ROOT, run_script

SHELL_SCRIPTS = ("benchmarks/cuda_figures.sh", "scripts/train_dcgan_candidates.sh")


# What each script's smoke run must print: its figures' labels, whatever the figures are.
SMOKE = {
    "benchmarks/bf16_ranking.py": ([], ["stimnet:relu2", "Spearman", "top-10 overlap"]),
    "benchmarks/loop_speed.py": ([], ["(a) raw DCGAN", "(b) evolver run end to end", "(c) naive loop",
                                      "cut there", "(d) RSS of a 60-generation run"]),
    "benchmarks/many_units.py": ([], ["3 units, 2 generations each", "one run, one batch a generation",
                                      "single-unit runs one after another"]),
    "benchmarks/stimuli_throughput.py": ([], ["all families, batches of 24", "dead_leaves", "images/s"]),
    "benchmarks/timm_coverage.py": ([], ["resnet18", "vit_tiny_patch16_224", "14×14 patches + class token",
                                         "2 families: 2 works, 0 refused, 0 crashed"]),
    "benchmarks/session_vs_separate.py": (["--out", "{tmp}/sessions"], ["unit 0 seed 0: session uh-cmaes",
                                                                     "the same winner in 1 of 1 cells",
                                                                     "session / separate ="]),
    "benchmarks/sweep_scale.py": (["--runs-root", "{tmp}/scale"], ["runs: 20 planned, 20 found finished",
                                                                   "aggregate (20 runs", "report"]),
    "benchmarks/watch_latency.py": (["--out", "{tmp}/watch"], ["(a) latency over", "update requests", "(b) a run at", "the page reloaded",
                                                              "(c) evolver run, 5 generations, watched", "watched / alone"]),
    "scripts/analysis_figures.py": (["--out", "{tmp}/images"], ["rf gradient v1:simple", "rf  patches stimnet:relu3",
                                                                "the centre moved by", "landscape stimnet:classifier",
                                                                "show: stimnet:classifier:unit7", "analysis_show.png"]),
    "scripts/check_bundled.py": (["--grid", "{tmp}/grid.png"], ["frechet_stimnet_features", "best corpus",
                                                                '"evolutions": 12']),
    "scripts/check_encoding.py": (["--out", "{tmp}/encoding"], ["fit:", "evolution:", "decoding:"]),
    "scripts/check_objectives.py": ([], ["template:", "population:"]),
    "scripts/image_space_figures.py": (["--out", "{tmp}/images"], ["priors of pixel, fourier, maco",
                                                                    "| `pixel` | `ga` |", "GA noise-free, pixel against dcgan",
                                                                    "nes against the GA, noise poisson:count=5",
                                                                    "bench_spaces.png"]),
    "scripts/import_graph.py": ([], ["evolver.loop -> ", "circles: none"]),
    "scripts/readme_figures.py": (["--out", "{tmp}/images"], ["best response by generation [1, 2, 3, 4, 5, 6]",
                                                              "main_job_best.png and", "main_job_trajectory.png"]),
    "scripts/watch_screenshots.py": (["--out", "{tmp}/shots"], ["watch_run.png,", "watch_session.png and",
                                                                "watch_runs.png"]),
    "scripts/train_stimnet.py": (["--out", "{tmp}/net.safetensors"], ['"held_out"', '"steps": 2']),
}


def test_every_script_has_a_smoke_test():
    scripts = {str(p.relative_to(ROOT)) for folder in ("benchmarks", "scripts") for p in (ROOT / folder).iterdir()
               if p.suffix in (".py", ".sh")}
    assert scripts == set(SMOKE) | set(SHELL_SCRIPTS)


# Smoke runs that take more than a few seconds (a 1,000-generation memory probe even at tiny sizes) run with
# the slow suite.
SLOW_SMOKE = {"benchmarks/loop_speed.py", "scripts/analysis_figures.py", "scripts/image_space_figures.py",
              "scripts/check_bundled.py"}  # its smoke run is also the fast suite's test below
BROWSER_SMOKE = {"benchmarks/watch_latency.py", "scripts/watch_screenshots.py"}  # drive chromium


def smoke_param(script: str):
    if script in BROWSER_SMOKE:
        return pytest.param(script, marks=[pytest.mark.slow, pytest.mark.browser])
    return pytest.param(script, marks=pytest.mark.slow) if script in SLOW_SMOKE else script


@pytest.mark.parametrize("script", [smoke_param(s) for s in SMOKE])
def test_script_runs_with_tiny_sizes(script, tmp, monkeypatch, capsys):
    args, printed = SMOKE[script]
    status, out, err = run_script(script, "--smoke", *(a.format(tmp=tmp) for a in args), monkeypatch=monkeypatch,
                                  capsys=capsys)
    assert status == 0, err
    for text in printed:
        assert text in out, f"{text!r} not in:\n{out}"


def test_check_bundled_smoke_draws_the_grid_and_leaves_the_card_alone(tmp, monkeypatch, capsys):
    card = ROOT / "generators" / "weights" / "dcgan.json"
    before = card.read_bytes()
    status, _, err = run_script("scripts/check_bundled.py", "--smoke", "--write-card", monkeypatch=monkeypatch,
                                capsys=capsys)
    assert status == 2 and "drop --write-card" in err and card.read_bytes() == before


def test_train_stimnet_smoke_never_overwrites_the_bundled_weights(monkeypatch, capsys):
    status, _, err = run_script("scripts/train_stimnet.py", "--smoke", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and "give --out" in err


@pytest.mark.slow
def test_cuda_figures_script_runs_on_the_cpu_with_tiny_sizes():
    result = subprocess.run(["bash", "benchmarks/cuda_figures.sh"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "SMOKE": "1"}, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(a) raw DCGAN") == 3 and "neuron compiled" in result.stdout
    assert "3 units, 2 generations each" in result.stdout and "Spearman" in result.stdout


@pytest.mark.slow
def test_candidate_training_script_trains_and_measures_each_candidate(tmp):
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp / "out"), "RUNS": str(tmp / "runs")}
    result = subprocess.run(["bash", "scripts/train_dcgan_candidates.sh", "base:", "hinge:--loss hinge"], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("base", "hinge"):
        assert (tmp / "out" / f"{name}.safetensors").is_file() and (tmp / "out" / f"{name}.png").is_file()
    summary = (tmp / "out" / "summary.txt").read_text()
    assert summary.count("frechet_stimnet_features") == 2 and '"loss": "hinge"' in summary
