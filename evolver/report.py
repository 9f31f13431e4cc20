"""`evolver report SWEEP`: one interactive page for a whole sweep.

1. Trajectories per condition (generator × optimizer × noise × parameters): the best response so
   far, normalised per unit by the best any run of the sweep reached on it, against images shown;
   the mean over units and seeds with a band of ± one s.e.m.
2. Final-score distributions (normalised) per optimizer, per generator and per layer; where the sweep has
   several generators (image spaces), the mean final score per generator × optimizer and noise as a map.
3. When the runs had reference images: the histogram of the final relative activation (best evolved /
   best reference), XDream's Fig. 3, per optimizer.
4. The images the runs return: a row a unit, a column a condition, each seed's image.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from evolver.aggregate import Aggregate, aggregate
from evolver.pages import write_page
from evolver_common import BadInput

CONDITION = ["generator", "optimizer", "noise", "params"]


def _condition_name(values: tuple) -> str:
    generator, optimizer, noise, params = values
    return " ".join(str(v) for v in (optimizer, params, f"({generator}, noise {noise})") if v)


def _band(x: np.ndarray, mean: np.ndarray, sem: np.ndarray, colour: str, name: str) -> list[go.Scatter]:
    fill = colour.replace("rgb", "rgba").replace(")", ", 0.2)") if colour.startswith("rgb") else colour
    return [
        go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + sem, (mean - sem)[::-1]]), fill="toself",
                   fillcolor=fill, line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name,
                   opacity=0.25),
        go.Scatter(x=x, y=mean, mode="lines", name=name, line=dict(color=colour), legendgroup=name),
    ]


def report_figure(runs: pd.DataFrame, trajectories: pd.DataFrame, title: str = "Sweep report") -> go.Figure:
    with_reference = bool(runs["relative_activation"].notna().any())
    spaces = bool(runs["generator"].nunique() > 1)
    rows = 3 + spaces + with_reference
    layer_row = 3 + spaces
    varying = next((c for c in ("generator", "noise", "params") if runs[c].nunique() > 1), None)
    figure = make_subplots(rows=rows, cols=1, vertical_spacing=0.07, subplot_titles=[
        "Normalised best response so far, mean ± s.e.m. over units and seeds, per condition",
        f"Final normalised best response per optimizer (colour: {varying or 'optimizer'})",
        *(["Mean final normalised best response per generator × optimizer and noise"] if spaces else []),
        "Final normalised best response per layer (colour: optimizer, as above)",
        *(["Relative activation at the end (best evolved / best reference), per optimizer (colours as above)"]
          if with_reference else []),
    ])
    # One colour an optimizer in every panel (conditions of one optimizer differ by dash); generators
    # take colours from another palette.
    optimizers = sorted(runs["optimizer"].unique())
    colour = {o: qualitative.Plotly[i % len(qualitative.Plotly)] for i, o in enumerate(optimizers)}
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    seen: dict[str, int] = {}
    for condition, group in trajectories.groupby(CONDITION, sort=True):
        optimizer = condition[1]
        dash = dashes[seen.setdefault(optimizer, 0) % len(dashes)]
        seen[optimizer] += 1
        # runs stop at different image counts: align them on the generation index
        curve = group.groupby("gen").agg(images=("images", "mean"), mean=("normalised", "mean"),
                                         sem=("normalised", "sem")).reset_index().fillna({"sem": 0})
        for trace in _band(curve["images"].to_numpy(), curve["mean"].to_numpy(), curve["sem"].to_numpy(),
                           colour[optimizer], _condition_name(condition)):
            if trace.mode == "lines":
                trace.line.dash = dash
            figure.add_trace(trace, row=1, col=1)
    if varying is None:  # nothing but the optimizer varies: its colour, as in the other panels
        for optimizer, group in runs.groupby("optimizer"):
            figure.add_trace(go.Box(x=group["optimizer"], y=group["normalised"], name=optimizer, boxpoints="all",
                                    marker_color=colour[optimizer], showlegend=False), row=2, col=1)
    for j, (value, group) in enumerate(runs.groupby(varying) if varying else []):
        figure.add_trace(go.Box(x=group["optimizer"], y=group["normalised"], name=f"{varying} {value}",
                                boxpoints="all", marker_color=qualitative.Set2[j % len(qualitative.Set2)]),
                         row=2, col=1)
    if spaces:
        figure.add_trace(_space_map(runs), row=3, col=1)
    for optimizer, group in runs.groupby("optimizer"):
        figure.add_trace(go.Box(x=group["layer"], y=group["normalised"], name=optimizer, boxpoints="all",
                                marker_color=colour[optimizer], showlegend=False), row=layer_row, col=1)
    if with_reference:
        for optimizer, group in runs.groupby("optimizer"):
            figure.add_trace(go.Histogram(x=group["relative_activation"], name=optimizer, opacity=0.6,
                                          marker_color=colour[optimizer], showlegend=False), row=rows, col=1)
        figure.add_vline(x=1.0, line_dash="dot", row=rows, col=1)
        figure.update_xaxes(title_text="relative activation", row=rows, col=1)
        figure.update_layout(barmode="overlay")
    figure.update_xaxes(title_text="images shown", row=1, col=1)
    figure.update_yaxes(title_text="normalised", row=1, col=1)
    figure.update_layout(height=420 * rows, template="plotly_white", boxmode="group",
                         title=f"{title}: {len(runs)} runs")
    return figure


def _space_map(runs: pd.DataFrame) -> go.Heatmap:
    """The mean final normalised score of each generator (a row) × optimizer and noise (a column)."""
    means = runs.groupby(["generator", "optimizer", "noise"])["normalised"].mean().unstack(["optimizer", "noise"])
    columns = [f"{optimizer}<br>{noise}" for optimizer, noise in means.columns]
    return go.Heatmap(z=means.to_numpy(), x=columns, y=list(means.index), colorscale="Viridis", zmin=0, zmax=1,
                      text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(means.to_numpy()),
                      texttemplate="%{text}", showscale=False, hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>")


MAX_UNITS, MAX_CONDITIONS = 32, 12  # the evolved images' table: rows and columns shown
IMAGE_PIXELS = 96  # each image's side on the page


def evolved_images(folder: Path, runs: pd.DataFrame) -> str:
    """The images the runs return (each run's best.png), as an HTML table: a row a unit, a column a
    condition, each seed's image in its cell, its response and normalised score in its caption."""
    conditions = sorted(runs.groupby(CONDITION, sort=True).groups)[:MAX_CONDITIONS]
    units = sorted(runs["neuron"].unique())[:MAX_UNITS]
    head = "".join(f"<th>{html.escape(_condition_name(c))}</th>" for c in conditions)
    rows = []
    for unit in units:
        cells = []
        for condition in conditions:
            chosen = runs[(runs["neuron"] == unit) & (runs[CONDITION].apply(tuple, axis=1) == condition)]
            cells.append("<td>" + "".join(_figure(folder / run.run, run) for run in chosen.sort_values("seed")
                                          .itertuples()) + "</td>")
        rows.append(f"<tr><th>{html.escape(unit)}</th>{''.join(cells)}</tr>")
    left_out = (f"<p>Shown: {len(units)} of {runs['neuron'].nunique()} units, {len(conditions)} of "
                f"{runs.groupby(CONDITION).ngroups} conditions.</p>"
                if len(units) < runs["neuron"].nunique() or len(conditions) < runs.groupby(CONDITION).ngroups else "")
    return (f"<h2>The images the runs return, a seed each</h2>{left_out}<table class='evolved'>"
            f"<tr><th>unit</th>{head}</tr>{''.join(rows)}</table>{IMAGE_STYLE}")


IMAGE_STYLE = ("<style>body{font-family:sans-serif} table.evolved{border-collapse:collapse} .evolved td,.evolved th"
               "{border:1px solid #ddd;padding:4px;vertical-align:top;font-size:12px} .evolved figure{display:inline-"
               "block;margin:2px;text-align:center} .evolved img{image-rendering:pixelated}</style>")


def _figure(run_folder: Path, run) -> str:
    """One run's returned image with its seed, noise-free response and normalised score; a note where it
    has none."""
    path = run_folder / "best.png"
    if not path.is_file():
        return f"<figure>seed {run.seed}: no image yet</figure>"
    source = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    caption = f"seed {run.seed}: {run.returned:.3g} ({run.returned_normalised:.0%})"  # best.png: the returned
    return (f"<figure><img src='{source}' width='{IMAGE_PIXELS}' height='{IMAGE_PIXELS}' alt='{caption}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def report(folder: str | Path, out: str | Path | None = None, found: Aggregate | None = None,
           title: str = "Sweep report") -> tuple[Path, pd.DataFrame]:
    """Aggregate the sweep in `folder` (or take `found`, its aggregate) and write its report (default
    FOLDER/report.html; it loads plotly.js from a copy beside it, `evolver.pages`). Returns the page's path and the
    summary per condition."""
    folder = Path(folder)
    found = found or aggregate(folder)
    if found.runs.empty:
        raise BadInput(f"No run of the sweep in {folder} has finished a generation yet; nothing to report.")
    out = Path(out) if out else folder / "report.html"
    write_page(report_figure(found.runs, found.trajectories, title), out, after=evolved_images(folder, found.runs))
    summary = found.runs.groupby(CONDITION, sort=True).agg(
        runs=("normalised", "size"), normalised=("normalised", "mean"), sem=("normalised", "sem"),
        returned=("returned_normalised", "mean"), best=("best", "mean")).reset_index()
    return out, summary
