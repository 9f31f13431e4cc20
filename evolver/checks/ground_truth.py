"""`evolver check ground-truth`: how close evolution gets to a neuron's best stimulus, where that is known.

Two kinds of target, each evolved through every generator × optimizer × seed at a fixed image budget:

- model V1 cells (`neurons.v1`), simple and complex, over orientations × spatial frequencies × receptive
  field positions. Their optimum over all images is analytic: a simple cell's response is Σ (k − k̄) L
  over the luminance L ∈ [0, 1] of each pixel (k its Gabor filter, k̄ the filter's mean), greatest for
  L = 1 where k > k̄ and 0 elsewhere: Σ max(k − k̄, 0). A complex cell's response, the length of its
  quadrature pair's, is the largest over phases φ of the simple cell k_φ = cos φ k₀ + sin φ k₉₀, so its
  optimum is the largest Σ max(k_φ − k̄_φ, 0) over φ (7,200 phases). For reference, the best sine
  grating reaches π/4 of it (0.393 of 0.5 for a cell whose field lies inside the image).
- stimnet's class units, against the best of 10,000 corpus images (`generators.stimuli`), whose
  families they were trained to tell apart; an evolved image may pass that.

The measure is response / optimum of the best image a run showed (noise-free), per run; the summary
gives its median and worst per target set, generator and optimizer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import generators
import neurons
from evolver.aggregate import aggregate
from evolver.sweep import sweep
from evolver_common import BadInput, write_atomic
from generators.corpus import FAMILIES, stimuli
from neurons.v1 import V1Cell

ORIENTATIONS = (0, 30, 67.5, 90, 120, 150)  # degrees
FREQUENCIES = (2, 4, 8)  # cycles per image width
POSITIONS = ((0.5, 0.5), (0.35, 0.62))  # receptive-field centres, fractions of the image
CORPUS_IMAGES, CORPUS_SEED = 10_000, 5151  # a seed no training stream used
TARGETS = ("v1-simple", "v1-complex", "classes")


@dataclass
class GroundTruthConfig:
    """What to evolve and with what. `targets` among TARGETS."""

    targets: list[str] = field(default_factory=lambda: ["v1-complex", "v1-simple", "classes"])
    generators: list[str] = field(default_factory=lambda: ["stimuli", "dcgan"])
    optimizers: list[str] = field(default_factory=lambda: ["racing-cmaes", "cmaes", "ga"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    images: int = 3000
    orientations: tuple[float, ...] = ORIENTATIONS
    frequencies: tuple[float, ...] = FREQUENCIES
    positions: tuple[tuple[float, float], ...] = POSITIONS


def v1_cells(kind: str, config: GroundTruthConfig) -> list[str]:
    return [f"v1:{kind}:ori={ori}:sf={sf}:x={x}:y={y}" for ori in config.orientations
            for sf in config.frequencies for x, y in config.positions]


def class_units() -> list[str]:
    return [f"stimnet:classifier:unit{k}" for k in range(len(FAMILIES))]


def targets(config: GroundTruthConfig) -> dict[str, list[str]]:
    """{target set: its neuron specs}."""
    unknown = sorted(set(config.targets) - set(TARGETS))
    if unknown:
        raise BadInput(f"Unknown ground-truth target '{unknown[0]}'. Valid: {', '.join(TARGETS)}.")
    found = {"classes": class_units()} if "classes" in config.targets else {}
    for kind in ("simple", "complex"):
        if f"v1-{kind}" in config.targets:
            found[f"v1-{kind}"] = v1_cells(kind, config)
    return found


def v1_optimum(spec: str, size: int) -> float:
    """The largest response of the V1 cell `spec` to any RGB image of size×size pixels in [0, 1] (see above)."""
    cell = V1Cell(spec)
    pair = cell._pair(size, size, torch.device("cpu")).double()
    if cell.kind == "simple":
        kernels = pair
    else:
        phases = torch.linspace(0, 2 * math.pi, 7200, dtype=torch.float64)[:, None, None]
        kernels = torch.cos(phases) * pair[0] + torch.sin(phases) * pair[1]
    centred = kernels - kernels.mean(dim=(1, 2), keepdim=True)
    return float(centred.clamp_min(0).sum(dim=(1, 2)).max())


def corpus_best(units: list[str], size: int, images: int = CORPUS_IMAGES, batch: int = 500) -> dict[str, float]:
    """Each unit's largest response to `images` corpus images (size×size) of the seed CORPUS_SEED."""
    population = neurons.create(f"stimnet:classifier:unit0-{len(FAMILIES) - 1}")
    rng = np.random.SeedSequence(CORPUS_SEED)
    best = np.full(len(FAMILIES), -np.inf)
    for k, seed in enumerate(rng.generate_state(math.ceil(images / batch))):
        drawn = stimuli(min(batch, images - k * batch), int(seed), size=size).images
        best = np.maximum(best, population(drawn).max(axis=0))
    return {unit: float(best[int(unit.rsplit("unit", 1)[1])]) for unit in units}


def optima(config: GroundTruthConfig) -> pd.DataFrame:
    """One row per target neuron and generator: its optimum at that generator's image size."""
    rows, known = [], {}
    for generator in config.generators:
        size = generators.create(generator, weights="random").image_size
        for target, specs in targets(config).items():
            if (target, size) not in known:  # generators of one image size share their optima
                known[target, size] = corpus_best(specs, size) if target == "classes" else \
                    {spec: v1_optimum(spec, size) for spec in specs}
            rows += [{"target": target, "neuron": spec, "generator": generator, "optimum": value}
                     for spec, value in known[target, size].items()]
    return pd.DataFrame(rows)


def spec(config: GroundTruthConfig) -> dict:
    """The sweep spec: every target neuron × generator × optimizer × seed, at the image budget."""
    neurons_ = [s for specs in targets(config).values() for s in specs]
    return {"grid": {"neuron": neurons_, "generator": config.generators, "optimizer": config.optimizers,
                     "seed": config.seeds},
            "run": {"images": config.images, "generations": 10**6}}


def ground_truth(config: GroundTruthConfig, out: str | Path, workers: int = 1, progress: bool = True
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or finish) every run under `out`, then write ground_truth.csv (one row a run: its best, the
    optimum and their ratio) and summary.csv (median and worst ratio per target set, generator and
    optimizer). Returns both."""
    out = Path(out)
    sweep(spec(config), out, workers=workers, progress=progress)
    runs = aggregate(out).runs
    known = optima(config)
    table = runs.merge(known, on=["neuron", "generator"], how="inner")
    table["ratio"] = table["best"] / table["optimum"]
    table = table[["target", "neuron", "generator", "optimizer", "seed", "images", "best", "optimum", "ratio"]]
    summary = table.groupby(["target", "generator", "optimizer"], sort=True).agg(
        runs=("ratio", "size"), median=("ratio", "median"), worst=("ratio", "min"), images=("images", "max"),
    ).reset_index()
    write_atomic(out / "ground_truth.csv", table.to_csv(index=False).encode())
    write_atomic(out / "summary.csv", summary.to_csv(index=False).encode())
    return table, summary


def format_summary(summary: pd.DataFrame) -> str:
    wide = max([len("generator"), *map(len, summary["generator"])])
    lines = [f"{'target':<12} {'generator':<{wide}} {'optimizer':<12} {'runs':>5} {'median':>8} {'worst':>8} "
             f"{'images':>7}"]
    lines += [f"{r.target:<12} {r.generator:<{wide}} {r.optimizer:<12} {r.runs:>5} {r.median:>8.3f} {r.worst:>8.3f} "
              f"{r.images:>7}" for r in summary.itertuples()]
    return "\n".join(lines)
