"""Interactive plotly figures of runs: the response trajectory and the best image per generation."""
from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from evolver.records import RunDirectory
from evolver_common import write_atomic

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


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def trajectory_figure(runs: Sequence[str | Path], generations: Sequence[int] | None = None) -> go.Figure:
    """Best and mean response (± s.d.) per generation for each run, overlaid, with the best
    image of chosen generations (default: evenly spaced) of each run beneath."""
    directories = [RunDirectory.open(r) for r in runs]
    tables = [d.table("generations.csv") for d in directories]
    shown = [_picked(t["gen"].tolist(), generations) for t in tables][:MAX_IMAGE_ROWS]
    cols = max([len(s) for s in shown] + [1])
    rows = 1 + len(shown)
    fig = make_subplots(
        rows=rows, cols=cols,
        specs=[[{"colspan": cols}] + [None] * (cols - 1)] + [[{}] * cols for _ in shown],
        row_heights=[0.5] + [0.5 / max(len(shown), 1)] * len(shown),
        vertical_spacing=0.06, horizontal_spacing=0.01,
    )
    palette = plotly.colors.qualitative.Plotly
    for k, (directory, table) in enumerate(zip(directories, tables)):
        color = palette[k % len(palette)]
        name = f"{directory.path.name} ({directory.config()['resolved']['neuron']['spec']})"
        band = np.concatenate([table["mean"] + table["std"], (table["mean"] - table["std"])[::-1]])
        fig.add_trace(go.Scatter(x=np.concatenate([table["gen"], table["gen"][::-1]]), y=band, fill="toself",
                                 fillcolor=color, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 legendgroup=name, showlegend=False), row=1, col=1)
        for column, dash, label in (("best", "solid", "best"), ("mean", "dot", "mean ± s.d."),
                                    ("best_so_far", "dash", "best so far")):
            fig.add_trace(go.Scatter(x=table["gen"], y=table[column], mode="lines", line=dict(color=color, dash=dash),
                                     name=f"{label}: {name}", legendgroup=name), row=1, col=1)
    for k, (directory, gens) in enumerate(zip(directories, shown)):
        fig.update_yaxes(title_text=directory.path.name, row=2 + k, col=1)
        for col, gen in enumerate(gens, start=1):
            image = directory.path / "images" / f"gen_{gen:04d}.png"
            if image.is_file():
                fig.add_trace(go.Image(source=_data_uri(image), name=f"{directory.path.name} gen {gen}"),
                              row=2 + k, col=col)
                fig.update_xaxes(title_text=f"gen {gen}", showticklabels=False, row=2 + k, col=col)
                fig.update_yaxes(showticklabels=False, row=2 + k, col=col)
    fig.update_xaxes(title_text="generation", row=1, col=1)
    fig.update_yaxes(title_text="response", row=1, col=1)
    fig.update_layout(title="Response trajectory", height=450 + 180 * len(shown), template="plotly_white")
    return fig


def write_trajectory(runs: Sequence[str | Path], out: str | Path, generations: Sequence[int] | None = None) -> Path:
    """Write the trajectory figure of `runs` as a self-contained HTML file (works offline)."""
    out = Path(out)
    write_atomic(out, trajectory_figure(runs, generations).to_html(include_plotlyjs=True).encode())
    return out
