"""Reading a sweep back: every run of a sweep folder as tables (runs and trajectories), with the measure
of Wang & Ponce (2022). `evolver report`, bench and the checks read sweeps through `aggregate`."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evolver.runs import open_run
from evolver.sweep import REFERENCE_OPTIMIZER, read_plan
from evolver.sweep_progress import status
from evolver_common import BadInput, write_atomic


@dataclass
class Aggregate:
    """A sweep read back: one row a run (`runs`) and one row a run and generation (`trajectories`)."""

    runs: pd.DataFrame
    trajectories: pd.DataFrame
    statuses: dict[str, int] = field(default_factory=dict)


def _layer(neuron: str) -> str:
    """A CNN unit's layer, else the spec's kind (v1, encoder, a composite expression's text)."""
    from neurons.spec import UnitSpec

    try:
        return UnitSpec.parse(neuron).layer
    except BadInput:
        return neuron.split(":", 1)[0]


def aggregate(folder: str | Path) -> Aggregate:
    """Every run of a sweep folder, finished or not, as tables; writes runs.parquet and trajectories.parquet."""
    folder = Path(folder)
    frames, rows, statuses = [], [], {}
    for planned in read_plan(folder):
        path = folder / planned.path
        found = status(path)
        statuses[found] = statuses.get(found, 0) + 1
        if found in ("new", "damaged"):
            continue
        try:
            table = open_run(path).generations
        except (BadInput, OSError, ValueError) as err:  # a table edited or damaged by hand: the others are read
            warnings.warn(f"The sweep's run {planned.path} could not be read and is left out of the report "
                          f"({type(err).__name__}: {str(err)[:300]}).", stacklevel=2)
            statuses[found] -= 1
            statuses["unreadable"] = statuses.get("unreadable", 0) + 1
            continue
        if table.empty:
            continue
        labels = {**planned.labels, "layer": _layer(planned.labels["neuron"]), "run": planned.path}
        clean = "best_clean_so_far" if "best_clean_so_far" in table else "best_so_far"
        frame = pd.DataFrame({"gen": table["gen"], "images": table["n_images"].cumsum(),
                              "best_so_far": table[clean], "returned": _returned(table)})
        if "relative_activation" in table:
            frame["relative_activation"] = table["relative_activation"]
        frames.append(frame.assign(**labels))
        rows.append({**labels, "status": found, "generations": len(table), "images": int(frame["images"].iloc[-1]),
                     "best": float(frame["best_so_far"].iloc[-1]), "returned": float(frame["returned"].iloc[-1]),
                     "relative_activation": float(frame["relative_activation"].iloc[-1])
                     if "relative_activation" in frame else float("nan")})
    runs = pd.DataFrame(rows)
    trajectories = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(runs):
        normalise(runs, trajectories)
        for name, table in (("runs.parquet", runs), ("trajectories.parquet", trajectories)):
            write_atomic(folder / name, table.to_parquet(index=False))
    return Aggregate(runs, trajectories, statuses)


def _returned(table):
    """The noise-free response of the image a run returns, generation by generation (its generations.csv):
    a noise-free run returns its best; a noisy run recorded before runs named their returned image, NaN."""
    if "returned_clean" in table:
        return table["returned_clean"]
    if "best_clean_so_far" in table:
        return np.nan
    return table["returned"] if "returned" in table else table["best_so_far"]


def normalise(runs, trajectories) -> None:
    """Add the measure of Wang & Ponce (2022) to both tables: each run's best noise-free response divided
    by the best any run reached on its unit (`normalised`, an oracle: under noise no lab knows which image
    that was) and by the unit's mean gradient reference in the run's generator (`vs_gradient`, where the
    sweep has `gradient` runs of that generator); and the noise-free response of the image the run returns
    over the same best (`returned_normalised`). Warn where the measure is not a fraction."""
    unit_best = runs.groupby("neuron")["best"].max()
    signed = sorted(runs.loc[runs["best"] < 0, "neuron"].unique())
    if signed:
        warnings.warn(f"Units {', '.join(signed)} ended some runs with a negative best response, so their "
                      "normalised scores (a fraction of the unit's best over all runs) are not fractions and "
                      "their means are not comparable with other units'. Compare units that cannot respond "
                      "below zero (after a ReLU), or their best responses directly.", stacklevel=3)
    silent = sorted(unit_best.index[unit_best == 0])
    if silent:
        warnings.warn(f"Units {', '.join(silent)} never responded in any run: their normalised scores are "
                      "undefined (0 / 0) and left out of the means.", stacklevel=3)
    gradient = runs[runs["optimizer"] == REFERENCE_OPTIMIZER].groupby(["neuron", "generator"])["best"].mean()
    for table in (runs, trajectories):
        best = table["best"] if table is runs else table["best_so_far"]
        table["normalised"] = best / table["neuron"].map(unit_best)
        table["returned_normalised"] = table["returned"] / table["neuron"].map(unit_best)
        reference = pd.MultiIndex.from_frame(table[["neuron", "generator"]]).map(gradient.get) if len(gradient) \
            else np.nan
        table["vs_gradient"] = best / np.asarray(reference, dtype=float)
