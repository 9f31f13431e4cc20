"""`evolver bench`: generators × optimizers × units × seeds × noise levels at a fixed image budget, as a sweep
preset.

A benchmark is a sweep (`evolver.sweep`): the same planning (run folders named with a hash of their
whole configuration, so a re-run with other parameters never reuses runs of the old ones), the same
status and resume, the same reading back and report. What the preset adds: the grid from a few
lists, the noise-free white-box `gradient` reference per unit, seed and generator, and the summary of
Wang & Ponce (2022): per unit, the best noise-free response a run reached divided by the best any run
(of any generator) reached on that unit (`normalised`) and by the gradient reference of its generator
(`vs_gradient`), mean ± s.e.m. per generator, optimizer and noise level; beside it, the noise-free
response of the image each run returns (`returned`: under noise, the one its re-test chose,
evolver.retest), over the same best.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evolver.report import report
from evolver.aggregate import aggregate
from evolver.sweep import NO_NOISE, REFERENCE_OPTIMIZER, sweep
from evolver_common import write_atomic


@dataclass
class BenchConfig:
    """The grid. `generators` are image spaces (generator specs); `noises` holds noise specs or 'none'; the
    gradient reference runs noise-free, in each generator."""

    neurons: list[str]
    optimizers: list[str] = field(default_factory=lambda: ["uh-cmaes", "cmaes", "ga", "sphere-cma", "random"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    noises: list[str] = field(default_factory=lambda: [NO_NOISE, "multiplicative:0.5"])
    images: int = 3000
    generators: list[str] = field(default_factory=lambda: ["dcgan"])
    generator_weights: str = "pretrained"
    weights: str = "pretrained"
    params: dict[str, dict] = field(default_factory=dict)  # per optimizer: NAME -> VALUE
    gradient_reference: bool = True
    device: str = "auto"
    precision: str = "auto"


def spec(config: BenchConfig) -> dict:
    """The sweep spec of a benchmark: its grid, plus the gradient reference's grid."""
    common = {"neuron": config.neurons, "generator": config.generators, "seed": config.seeds}
    grids = [{**common, "optimizer": config.optimizers, "noise": config.noises}]
    if config.gradient_reference:
        grids.append({**common, "optimizer": [REFERENCE_OPTIMIZER], "noise": [NO_NOISE]})
    run = {"images": config.images, "generations": 10**6, "weights": config.weights,
           "generator_weights": config.generator_weights, "device": config.device, "precision": config.precision}
    params = {optimizer: {name: [value] for name, value in values.items()}
              for optimizer, values in config.params.items()}
    return {"grid": grids, "params": params, "run": run}


def bench(config: BenchConfig, out: str | Path, progress: bool = True, workers: int = 1
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or finish) every cell of the grid under `out` (`workers` processes; 1: this one); write
    bench.csv (one row per run and generation), summary.csv and bench.html (the sweep report).

    Returns the table and the summary (mean ± s.e.m. per optimizer and noise level)."""
    out = Path(out)
    sweep(spec(config), out, workers=workers, progress=progress)
    found = aggregate(out)
    summary = summarise(found.runs)
    write_atomic(out / "bench.csv", found.trajectories.to_csv(index=False).encode())
    write_atomic(out / "summary.csv", summary.to_csv(index=False).encode())
    report(out, out / "bench.html", found, title="Bench")
    return found.trajectories, summary


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.e.m. over units and seeds of the final normalised score (the best image shown, an oracle)
    and of the returned image's, per generator × optimizer × noise."""
    summary = runs.groupby(["generator", "optimizer", "noise"]).agg(
        runs=("normalised", "size"), normalised=("normalised", "mean"), normalised_sem=("normalised", "sem"),
        returned=("returned_normalised", "mean"), returned_sem=("returned_normalised", "sem"),
        vs_gradient=("vs_gradient", "mean"), vs_gradient_sem=("vs_gradient", "sem"), images=("images", "max"),
    ).reset_index()
    return summary.sort_values(["noise", "normalised"], ascending=[True, False], ignore_index=True)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a text table; the generator column where the bench has more than one."""
    several = summary["generator"].nunique() > 1
    names = [f"{g} {o}" if several else o for g, o in zip(summary["generator"], summary["optimizer"])]
    width = max(12, *map(len, names))
    lines = [f"{'generator optimizer' if several else 'optimizer':<{width}} {'noise':<20} {'runs':>5} "
             f"{'normalised':>16} {'returned':>16} {'vs gradient':>16}"]
    for name, r in zip(names, summary.itertuples()):
        lines.append(f"{name:<{width}} {r.noise:<20} {r.runs:>5} {r.normalised:>9.3f} ± {r.normalised_sem:<5.3f}"
                     f" {r.returned:>9.3f} ± {r.returned_sem:<5.3f} {r.vs_gradient:>9.3f} ± {r.vs_gradient_sem:<5.3f}")
    return "\n".join(lines)
