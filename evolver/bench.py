"""`evolver bench`: optimizers × units × seeds × noise levels at a fixed image budget.

Every cell is an ordinary run (`evolver.experiment.run`) in <out>/runs/, so a benchmark reuses
the loop, its records and its resume. The measure is the one of Wang & Ponce (2022): per unit,
the best noise-free response a run reached, divided by the best any run reached on that unit
(`normalised`), and by the white-box gradient reference on that unit (`vs_gradient`).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from evolver.experiment import RunConfig
from evolver.records import RunDirectory
from evolver.sweep import run_or_resume
from evolver_common import write_atomic

NO_NOISE = "none"
REFERENCE_OPTIMIZER = "gradient"


@dataclass
class BenchConfig:
    """The grid. `noises` holds noise specs or 'none'; the gradient reference runs noise-free."""

    neurons: list[str]
    optimizers: list[str] = field(default_factory=lambda: ["ga", "cmaes", "sphere-cma", "random"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    noises: list[str] = field(default_factory=lambda: [NO_NOISE, "multiplicative:0.5"])
    images: int = 3000
    generator: str = "dcgan"
    generator_weights: str = "pretrained"
    weights: str = "pretrained"
    params: dict[str, dict] = field(default_factory=dict)  # per optimizer
    gradient_reference: bool = True
    device: str = "auto"
    precision: str = "auto"


def _cells(config: BenchConfig) -> list[tuple[str, str, int, str]]:
    cells = list(itertools.product(config.neurons, config.optimizers, config.seeds, config.noises))
    if config.gradient_reference:
        cells += [(n, REFERENCE_OPTIMIZER, s, NO_NOISE) for n in config.neurons for s in config.seeds]
    return cells


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(map(str, parts))).strip("-")


def _trajectory(path: Path) -> pd.DataFrame:
    """Images shown and best noise-free response so far, per generation of one run."""
    table = RunDirectory(path).table("generations.csv")
    clean = "best_clean_so_far" if "best_clean_so_far" in table else "best_so_far"
    return pd.DataFrame({"gen": table["gen"], "images": table["n_images"].cumsum(), "best_clean": table[clean]})


def bench(config: BenchConfig, out: str | Path, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or finish) every cell of the grid under `out`; write bench.csv, summary.csv, bench.html.

    Returns the tidy table (one row per run and generation) and the summary (mean ± s.e.m.).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    frames = []
    for neuron, optimizer, seed, noise in tqdm(_cells(config), desc="bench", unit="run", disable=not progress):
        path = out / "runs" / _slug(neuron, optimizer, noise, f"seed{seed}")
        run_or_resume(path, _cell_config(config, neuron, optimizer, seed, noise))
        frame = _trajectory(path)
        frame[["neuron", "optimizer", "seed", "noise"]] = neuron, optimizer, seed, noise
        frames.append(frame)
    table = _normalise(pd.concat(frames, ignore_index=True))
    summary = summarise(table)
    write_atomic(out / "bench.csv", table.to_csv(index=False).encode())
    write_atomic(out / "summary.csv", summary.to_csv(index=False).encode())
    write_atomic(out / "bench.html", figure(table).to_html(include_plotlyjs=True).encode())
    return table, summary


def _cell_config(config: BenchConfig, neuron: str, optimizer: str, seed: int, noise: str) -> dict:
    return dataclasses.asdict(RunConfig(
        neuron=neuron, weights=config.weights, generator=config.generator, generator_weights=config.generator_weights,
        optimizer=optimizer, params=config.params.get(optimizer, {}), generations=10**6, images=config.images,
        seed=seed, noise=None if noise == NO_NOISE else noise, device=config.device, precision=config.precision))


def _normalise(table: pd.DataFrame) -> pd.DataFrame:
    final = table.loc[table.groupby(["neuron", "optimizer", "seed", "noise"])["gen"].idxmax()]
    unit_best = final.groupby("neuron")["best_clean"].max()
    signed = sorted(final.loc[final["best_clean"] < 0, "neuron"].unique())
    if signed:
        warnings.warn(f"Units {', '.join(signed)} ended some runs with a negative best response, so their "
                      "normalised scores (a fraction of the unit's best over all runs) are not fractions and "
                      "their means are not comparable with other units'. Benchmark units that cannot respond "
                      "below zero (after a ReLU) or compare their best_clean responses directly.", stacklevel=3)
    silent = sorted(unit_best.index[unit_best == 0])
    if silent:
        warnings.warn(f"Units {', '.join(silent)} never responded in any run: their normalised scores are "
                      "undefined (0 / 0) and left out of the summary's means.", stacklevel=3)
    table["normalised"] = table["best_clean"] / table["neuron"].map(unit_best)
    gradient = final[final["optimizer"] == REFERENCE_OPTIMIZER].groupby("neuron")["best_clean"].mean()
    table["vs_gradient"] = table["best_clean"] / table["neuron"].map(gradient) if len(gradient) else np.nan
    return table


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.e.m. over units and seeds of the final normalised score, per optimizer × noise."""
    final = table.loc[table.groupby(["neuron", "optimizer", "seed", "noise"])["gen"].idxmax()]
    grouped = final.groupby(["optimizer", "noise"])
    summary = grouped.agg(runs=("normalised", "size"), normalised=("normalised", "mean"),
                          normalised_sem=("normalised", "sem"), vs_gradient=("vs_gradient", "mean"),
                          vs_gradient_sem=("vs_gradient", "sem"), images=("images", "max")).reset_index()
    return summary.sort_values(["noise", "normalised"], ascending=[True, False], ignore_index=True)


def figure(table: pd.DataFrame) -> go.Figure:
    """Mean normalised score against images shown, one line per optimizer × noise level."""
    fig = go.Figure()
    for (optimizer, noise), group in table.groupby(["optimizer", "noise"]):
        curve = group.groupby("gen").agg(images=("images", "mean"), score=("normalised", "mean"),
                                         sem=("normalised", "sem")).reset_index()
        fig.add_trace(go.Scatter(x=curve["images"], y=curve["score"], mode="lines", name=f"{optimizer} ({noise})",
                                 line=dict(dash="solid" if noise == NO_NOISE else "dash"),
                                 error_y=dict(type="data", array=curve["sem"], visible=False)))
    fig.update_layout(title="Normalised best noise-free response against images shown", template="plotly_white",
                      xaxis_title="images shown", yaxis_title="best response / unit's best over all runs")
    return fig


def format_summary(summary: pd.DataFrame) -> str:
    lines = [f"{'optimizer':<12} {'noise':<20} {'runs':>5} {'normalised':>16} {'vs gradient':>16}"]
    for r in summary.itertuples():
        lines.append(f"{r.optimizer:<12} {r.noise:<20} {r.runs:>5} {r.normalised:>9.3f} ± {r.normalised_sem:<5.3f}"
                     f" {r.vs_gradient:>9.3f} ± {r.vs_gradient_sem:<5.3f}")
    return "\n".join(lines)
