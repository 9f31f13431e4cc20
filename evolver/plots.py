"""Interactive plotly figures of runs: the response trajectory and the best image per generation."""
from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from evolver.pages import write_page
from evolver.records import is_session
from evolver.runs import open_run, open_session
from evolver_common.images import png_bytes

IMAGES_PER_RUN = 6
MAX_IMAGE_ROWS = 8


def _picked(generations: Sequence[int], wanted: Sequence[int] | None) -> list[int]:
    """The generations to show images of: `wanted` where recorded, else evenly spaced ones."""
    if wanted:
        return [g for g in wanted if g in set(generations)]
    if not len(generations):
        return []
    idx = np.unique(np.linspace(0, len(generations) - 1, IMAGES_PER_RUN).round().astype(int))
    return [int(generations[i]) for i in idx]


def _data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def _label(run) -> str:
    """A run's name in a legend; a session's thread by what it asked that differs from the session's run."""
    if run.thread is None:
        return f"{run.path.name} ({run.config['resolved']['neuron']['spec']})"
    asked = ", ".join(f"{k}={v if isinstance(v, (str, int)) else json.dumps(v)}" for k, v in run.thread.items())
    return f"{run.path.name} ({asked or 'as the session'})"


def opened_runs(paths: Sequence[str | Path]) -> list:
    """The runs of `paths`, a session's folder standing for its threads."""
    opened = []
    for path in paths:
        opened += open_session(path).threads if is_session(Path(path)) else [open_run(path)]
    return opened


def trajectory_figure(runs: Sequence[str | Path], generations: Sequence[int] | None = None) -> go.Figure:
    """Best and mean response (± s.d.) per generation for each run (each thread of a session), overlaid, with
    the best image of chosen generations (default: evenly spaced) of each run beneath."""
    opened = opened_runs(runs)
    tables = [r.generations for r in opened]
    shown = [_picked(t["gen"].tolist(), generations) for t in tables][:MAX_IMAGE_ROWS]
    cols = max([len(s) for s in shown] + [1])
    rows = 1 + len(shown)
    fig = make_subplots(
        rows=rows, cols=cols,
        specs=[[{"colspan": cols}] + [None] * (cols - 1)] + [[{}] * cols for _ in shown],
        row_heights=[0.5] + [0.5 / max(len(shown), 1)] * len(shown),
        vertical_spacing=0.09, horizontal_spacing=0.01,
    )
    palette = plotly.colors.qualitative.Plotly
    for k, (run, table) in enumerate(zip(opened, tables)):
        color = palette[k % len(palette)]
        name = _label(run)
        band = np.concatenate([table["mean"] + table["std"], (table["mean"] - table["std"])[::-1]])
        fig.add_trace(go.Scatter(x=np.concatenate([table["gen"], table["gen"][::-1]]), y=band, fill="toself",
                                 fillcolor=color, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 legendgroup=name, showlegend=False), row=1, col=1)
        for column, dash, label in (("best", "solid", "best"), ("mean", "dot", "mean ± s.d."),
                                    ("best_so_far", "dash", "best so far")):
            fig.add_trace(go.Scatter(x=table["gen"], y=table[column], mode="lines", line=dict(color=color, dash=dash),
                                     name=label, legendgroup=name, legendgrouptitle_text=name), row=1, col=1)
        references = run.reference_set
        if references is not None and references["score"].notna().any() and len(table):
            best = float(references["score"].max())
            fig.add_trace(go.Scatter(x=[table["gen"].min(), table["gen"].max()], y=[best, best], mode="lines",
                                     line=dict(color=color, dash="longdashdot", width=1),
                                     name=f"best of {len(references)} reference images", legendgroup=name),
                          row=1, col=1)
    for k, (run, gens) in enumerate(zip(opened, shown)):
        fig.update_yaxes(title_text=run.path.name, row=2 + k, col=1)
        for col, gen in enumerate(gens, start=1):
            image = run.top_image(gen)
            if image is not None:
                fig.add_trace(go.Image(source=_data_uri(image), name=f"{run.path.name} gen {gen}"),
                              row=2 + k, col=col)
                fig.update_xaxes(title_text=f"gen {gen}", showticklabels=False, row=2 + k, col=col)
                fig.update_yaxes(showticklabels=False, row=2 + k, col=col)
    fig.update_xaxes(title_text="generation", row=1, col=1)
    fig.update_yaxes(title_text="response", row=1, col=1)
    fig.update_layout(title="Response trajectory", height=450 + 180 * len(shown), template="plotly_white")
    return fig


def write_trajectory(runs: Sequence[str | Path], out: str | Path, generations: Sequence[int] | None = None,
                     scripts: str | Path | None = None) -> Path:
    """Write the trajectory figure of `runs` as an HTML page (`evolver.pages`: plotly.js loaded from the
    folder `scripts`, default the page's own)."""
    return write_page(trajectory_figure(runs, generations), out, scripts)
