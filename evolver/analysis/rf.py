"""`evolver rf`: where in the image a neuron looks (docs/analysis.md).

Two maps, each fitted with a rotated 2-D Gaussian (as the Ponce lab's circuit_toolkit fits its gradient maps):

- `gradient`, for a differentiable neuron: the absolute gradient of the response with respect to each pixel,
  averaged over colour channels and over images of the procedural corpus (circuit_toolkit's `grad_RF_estimate`
  averages over uniform noise, which leaves many rectified units silent, or over GAN images); nothing is shown, so
  it needs no folder of presentations.
- `patches`, for any neuron, a rig included: sparse noise, as mapped in vivo. A bright and a dark square, a grid
  cell wide, at every cell of a grid on a mid-grey screen, and the grey screen itself, shown in blocks through the
  loop's presenter; the map is each cell's mean absolute change from the grey screen's response over the two
  polarities (a linear cell's sign flips with the polarity; its size does not).

Positions are fractions of the image's width and height (x right, y down), sizes fractions of the width: the fitted
Gaussian's s.d. along its axes, and `size` their geometric mean, which for a model V1 cell is its envelope's s.d.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from evolver.analysis import showing
from evolver.pages import write_page
from evolver.records import npy_bytes
from evolver_common import BadInput, write_atomic

METHODS = ("auto", "gradient", "patches")
BACKGROUND = 128 / 255  # the grey of the screen the patches are shown on (an 8-bit level, as stimuli are stored)
MAP, FIELD = "map.npy", "field.json"


@dataclass(frozen=True)
class Field:
    """A fitted 2-D Gaussian: centre `x`, `y` (fractions of the image's width and height, x right, y down), s.d.
    `sigma_x`, `sigma_y` along its axes (fractions of the width) turned by `theta` (radians, from the x axis),
    `amplitude` and `offset` (the map's units) and `r2`, the share of the map's variance the fit explains."""

    x: float
    y: float
    sigma_x: float
    sigma_y: float
    theta: float
    amplitude: float
    offset: float
    r2: float

    @property
    def size(self) -> float:
        """The field's s.d., fraction of the image width: the geometric mean of its two."""
        return math.sqrt(self.sigma_x * self.sigma_y)


@dataclass(frozen=True)
class FieldResult:
    """An `evolver rf` folder's outcome: the `method`, the `map` (rows top to bottom, columns left to right) and its
    fitted `field`."""

    path: Path
    method: str
    map: np.ndarray
    field: Field


def _gaussian(xy: np.ndarray, amplitude, x0, y0, sigma_x, sigma_y, theta, offset) -> np.ndarray:
    dx, dy = xy[0] - x0, xy[1] - y0
    along = dx * math.cos(theta) + dy * math.sin(theta)
    across = -dx * math.sin(theta) + dy * math.cos(theta)
    return offset + amplitude * np.exp(-along**2 / (2 * sigma_x**2) - across**2 / (2 * sigma_y**2))


def fit_gaussian(field_map: np.ndarray) -> Field:
    """The rotated 2-D Gaussian (with an offset) closest to `field_map` (H, W) in least squares, started from the
    map's moments; coordinates are those of the module docstring."""
    from scipy.optimize import curve_fit

    height, width = field_map.shape
    if not np.isfinite(field_map).all() or np.ptp(field_map) == 0:
        raise BadInput("The receptive-field map is flat or holds missing values, so no Gaussian can be fitted: the "
                       "neuron did not answer the stimuli differently (a unit that never fires, or responses that "
                       "did not come back). Try more repeats, or another unit.")
    ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    weight = field_map - field_map.min()
    x0, y0 = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
    spread = math.sqrt(max((weight * ((xs - x0) ** 2 + (ys - y0) ** 2)).sum() / weight.sum() / 2, 1e-4))
    xy = np.stack([xs.ravel(), ys.ravel()])
    start = (np.ptp(field_map), x0, y0, spread / 2, spread / 2, 0.0, field_map.min())
    lower = (0, -0.5, -0.5, 0.2 / width, 0.2 / height, -math.pi, -np.inf)
    upper = (np.inf, 1.5, 1.5, 2.0, 2.0, math.pi, np.inf)
    values, _ = curve_fit(_gaussian, xy, field_map.ravel(), p0=start, bounds=(lower, upper), maxfev=20000)
    amplitude, x, y, sigma_x, sigma_y, theta, offset = (float(v) for v in values)
    residual = field_map.ravel() - _gaussian(xy, *values)
    r2 = 1 - float(residual.var() / field_map.var())
    return Field(x, y, sigma_x, sigma_y * height / width, theta, amplitude, offset, r2)


def gradient_map(neuron, size: int, images: int = 64, seed: int = 0, batch: int = 16) -> np.ndarray:
    """The mean absolute gradient (size, size) of `neuron`'s response with respect to each pixel, averaged over colour
    channels and over those of `images` procedural-corpus images (size × size, drawn with `seed`) whose gradient is
    not zero everywhere (a rectified unit that is silent for an image says nothing of where it looks)."""
    from generators.corpus import stimuli

    corpus = stimuli(images, seed, size=size).images
    total, counted = torch.zeros(size, size, dtype=torch.float64), 0
    for start in range(0, images, batch):
        pixels = corpus[start:start + batch].to(getattr(neuron, "device", "cpu")).requires_grad_(True)
        neuron.differentiable(pixels).float().sum().backward()
        amplitude = pixels.grad.detach().abs().mean(dim=1).double().cpu()
        alive = amplitude.flatten(1).amax(dim=1) > 0
        total += amplitude[alive].sum(dim=0)
        counted += int(alive.sum())
    return (total / max(counted, 1)).numpy()


def patch_stimuli(size: int, grid: int) -> showing.Stimuli:
    """The grey screen, then a bright and a dark square a grid cell wide at each cell of a `grid` × `grid` grid on
    it (rows top to bottom), as (1 + 2 grid²) images size × size."""
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    images = torch.full((1 + 2 * grid * grid, 3, size, size), BACKGROUND)
    rows, cols, polarity = [-1], [-1], ["none"]
    k = 1
    for row in range(grid):
        for col in range(grid):
            for value, name in ((1.0, "bright"), (0.0, "dark")):
                images[k, :, edges[row]:edges[row + 1], edges[col]:edges[col + 1]] = value
                rows.append(row), cols.append(col), polarity.append(name)
                k += 1
    sources = ["grey screen"] + [f"{p} square at row {r}, column {c}"
                                 for p, r, c in zip(polarity[1:], rows[1:], cols[1:])]
    return showing.Stimuli.of(images, ["blank"] + ["patch"] * (len(sources) - 1), sources, row=rows, col=cols,
                              polarity=polarity)


def patch_map(responses: pd.DataFrame, grid: int) -> np.ndarray:
    """The sparse-noise map (grid, grid): each cell's mean absolute change from the grey screen's mean response,
    over the two polarities; `responses` are one neuron's (`showing.mean_responses`)."""
    blank = float(responses.loc[responses.kind == "blank", "mean"].iloc[0])
    patches = responses[responses.kind == "patch"]
    change = (patches["mean"] - blank).abs().groupby([patches["row"], patches["col"]]).mean()
    field_map = np.full((grid, grid), np.nan)
    field_map[change.index.get_level_values(0), change.index.get_level_values(1)] = change.to_numpy()
    return field_map


def receptive_field(neuron, out: str | Path | None = None, method: str = "auto", size: int = 128, grid: int = 16,
                    repeats: int | None = None, images: int = 64, seed: int = 0, noise: str | None = None,
                    weights: str | None = None, device: str = "auto", precision: str = "auto", batch: int | None = None,
                    missing: str = "represent", progress: bool = False) -> FieldResult:
    """Map `neuron`'s receptive field (a spec or object, as `evolver.run` takes it) by `method` ('auto': the gradient
    where the neuron is differentiable and answers without noise, else patches) on images `size` pixels a side,
    recorded in `out` (default runs/<time>-rf): map.npy, field.json and page.html (and the presentations, for
    patches)."""
    if method not in METHODS:
        raise BadInput(f"--method {method!r}: give one of {', '.join(METHODS)}.")
    if not (8 <= size <= 1024 and 2 <= grid <= min(64, size) and 1 <= images <= 10000):
        raise BadInput(f"rf takes --size 8 to 1,024 pixels, --grid 2 to 64 cells (at most the size) and --images 1 "
                       f"to 10,000; got size {size}, grid {grid}, images {images}.")
    made, = showing.make_neurons([neuron], weights, device, precision)
    if method == "auto":
        method = "gradient" if _differentiable(made) and noise is None else "patches"
    if method == "gradient" and noise is not None:
        raise BadInput("--noise applies to shown images; the gradient map shows none. Use --method patches.")
    repeats = repeats or (1 if noise is None and not getattr(made, "noisy", False) else 5)
    settings = {"method": method, "size": size, "seed": seed, **(
        {"images": images} if method == "gradient" else
        {"grid": grid, "repeats": repeats, "noise": noise, "missing": missing})}
    record = {"analysis": "rf", "settings": settings, "neurons": [showing.describe(made)]}
    none = showing.Stimuli.of(torch.empty(0, 3, size, size), [], [])
    folder, stimuli = showing.AnalysisFolder.open_or_create(
        out or showing.default_folder("rf"), record,
        (lambda: none) if method == "gradient" else (lambda: patch_stimuli(size, grid)))
    try:
        if method == "gradient":
            field_map = gradient_map(made, size, images, seed)
        else:
            presentations = showing.present(folder, [made], stimuli, repeats, seed, noise, batch, missing, progress)
            responses = showing.mean_responses(presentations, stimuli.table)
            folder.write_table(showing.RESPONSES, responses)
            field_map = patch_map(responses, grid)
        field = fit_gaussian(field_map)
        write_atomic(folder.path / MAP, npy_bytes(field_map))
        write_atomic(folder.path / FIELD, json.dumps({"method": method, **asdict(field), "size": field.size},
                                                     indent=2).encode())
        _page(folder.path, made, method, field_map, field)
    finally:
        folder.close()
    return FieldResult(folder.path, method, field_map, field)


def _differentiable(neuron) -> bool:
    """Whether `neuron` answers without noise and gives a gradient (tried on one grey image)."""
    if getattr(neuron, "noisy", False):
        return False
    try:
        neuron.differentiable(torch.full((1, 3, 8, 8), BACKGROUND, device=getattr(neuron, "device", "cpu")))
    except BadInput:
        return False
    return True


def _page(path: Path, neuron, method: str, field_map: np.ndarray, field: Field) -> Path:
    """page.html: the map, with the fitted Gaussian's centre and 1 and 2 s.d. ellipses."""
    height, width = field_map.shape
    figure = go.Figure(go.Heatmap(z=field_map, x=(np.arange(width) + 0.5) / width, y=(np.arange(height) + 0.5) / height,
                                  colorscale="Viridis", colorbar=dict(title="map")))
    turn = np.linspace(0, 2 * np.pi, 100)
    for k in (1, 2):
        along, across = k * field.sigma_x * np.cos(turn), k * field.sigma_y * np.sin(turn)
        figure.add_scatter(x=field.x + along * np.cos(field.theta) - across * np.sin(field.theta),
                           y=field.y + along * np.sin(field.theta) + across * np.cos(field.theta),
                           mode="lines", line=dict(color="white", dash="solid" if k == 1 else "dot"), name=f"{k} s.d.")
    figure.add_scatter(x=[field.x], y=[field.y], mode="markers", marker=dict(color="white", symbol="x", size=10),
                       name="centre")
    figure.update_layout(
        title=f"Receptive field of {neuron.spec} by {method}<br>centre ({field.x:.3f}, {field.y:.3f}), size "
              f"{field.size:.3f} of the width (r² {field.r2:.2f})<br><sup>white: the fitted Gaussian's centre and its "
              "1 and 2 s.d. (dotted)</sup>", width=640, height=720, margin=dict(t=130), showlegend=False,
        xaxis=dict(title="x (fraction of the width)", range=[0, 1], constrain="domain"),
        yaxis=dict(title="y (fraction of the height)", range=[1, 0], scaleanchor="x"))
    return write_page(figure, path / "page.html")
