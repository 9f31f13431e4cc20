"""`evolver landscape`: the tuning landscape around an evolved code (Wang & Ponce, Cell Reports 2022).

The construction follows the authors' circuit_toolkit (`GAN_manifold_utils.generate_sphere_grid_coords`): codes on
a sphere of the evolved code's norm, spanned by three orthogonal axes of equal length, at azimuth `az` and elevation
`el` on a grid,

    code(az, el) = |c| (cos el cos az u1 + cos el sin az u2 + sin el u3),

with u1 the evolved code's direction (the run's returned image) and u2, u3 the first two principal axes of the run's
trajectory (every code it showed) once u1 is taken out of it, so the grid spreads where the evolution
searched. The paper's grid is 11 × 11 at 18° steps over ±90° (the default). The responses are fitted with a Kent
function, as the paper does, in the parameters of the authors' `KentFunc` (θ, φ, ψ, κ, β, A and an offset b):
r = b + A exp(κ (γ1·x − 1) + β ((γ2·x)² − (γ3·x)²)), peak at γ1 (az₀, el₀); near the peak it falls as a Gaussian
of s.d. 1/√(κ − 2β) along γ2 and 1/√(κ + 2β) along γ3 (the widths, in degrees), γ2 turned by ψ from the
azimuth's direction.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from evolver.analysis import showing
from evolver.pages import write_page
from evolver.records import npy_bytes
from evolver_common import BadInput, write_atomic

MAP, FIT = "map.npy", "fit.json"
MIN_GRID = 5  # 25 points for the Kent function's 7 parameters


@dataclass(frozen=True)
class Kent:
    """A fitted Kent function: peak at azimuth `az` and elevation `el` (degrees), `kappa`, `beta`, `psi` (radians),
    `amplitude` and `offset` (response units), the s.d. of the peak along its two axes `width_major` and
    `width_minor` (degrees; inf where the peak does not fall off along it within 180°) and `r2`, the share of the
    map's variance the fit explains."""

    az: float
    el: float
    kappa: float
    beta: float
    psi: float
    amplitude: float
    offset: float
    width_major: float
    width_minor: float
    r2: float


@dataclass(frozen=True)
class LandscapeResult:
    """An `evolver landscape` folder's outcome: `map` (el rows, az columns: the mean response at each grid point),
    the grid's `az` and `el` (degrees), the `peak` (az, el) of the map's largest mean, and the `fit`."""

    path: Path
    map: np.ndarray
    az: np.ndarray
    el: np.ndarray
    peak: tuple[float, float]
    fit: Kent


def axes(run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sphere's axes of a run: the evolved code c (its returned image's), and the unit vectors u2, u3 of the
    first two principal axes of every code the run showed, with c's direction taken out (each (code_dim,))."""
    if run.best is None:
        raise BadInput(f"The run {run.path} has no finished generation: there is no evolved code to map around.")
    code = run.best.code.astype(np.float64)
    norm = np.linalg.norm(code)
    if run.generation < 2 or norm == 0:
        raise BadInput(f"The run {run.path} has {run.generation + 1} generation(s) and an evolved code of norm "
                       f"{norm:.3g}: a landscape needs a trajectory of at least 3 generations and a code away from 0.")
    u1 = code / norm
    codes = np.concatenate([run.codes(g) for g in range(run.generation + 1)]).astype(np.float64)
    across = codes - np.outer(codes @ u1, u1)
    across -= across.mean(axis=0)
    _, _, principal = np.linalg.svd(across, full_matrices=False)
    u2, u3 = (v - (v @ u1) * u1 for v in principal[:2])  # u1 out again, against rounding
    return code, u2 / np.linalg.norm(u2), u3 / np.linalg.norm(u3)


def _directions(az: np.ndarray, el: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) at azimuth `az` and elevation `el` (radians)."""
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def sphere_codes(code: np.ndarray, u2: np.ndarray, u3: np.ndarray, az: np.ndarray, el: np.ndarray) -> np.ndarray:
    """The codes (len(el) × len(az), code_dim) float32 at each (el, az) in degrees, el rows then az columns."""
    a, e = np.meshgrid(np.radians(az), np.radians(el))
    weights = _directions(a, e).reshape(-1, 3)
    norm = np.linalg.norm(code)
    return (norm * weights @ np.stack([code / norm, u2, u3])).astype(np.float32)


def _kent(points: np.ndarray, theta, phi, psi, kappa, share, amplitude, offset) -> np.ndarray:
    """The Kent function at `points` (2, n) (az, el in radians); β = share κ / 2 keeps β within [0, κ/2]."""
    x = _directions(points[0], points[1])
    gamma1 = _directions(theta, phi)
    toward_az = np.array([-math.sin(theta), math.cos(theta), 0.0])
    toward_el = np.array([-math.sin(phi) * math.cos(theta), -math.sin(phi) * math.sin(theta), math.cos(phi)])
    gamma2 = math.cos(psi) * toward_az + math.sin(psi) * toward_el
    gamma3 = -math.sin(psi) * toward_az + math.cos(psi) * toward_el
    beta = share * kappa / 2
    return offset + amplitude * np.exp(kappa * (x @ gamma1 - 1) + beta * ((x @ gamma2) ** 2 - (x @ gamma3) ** 2))


def fit_kent(field_map: np.ndarray, az: np.ndarray, el: np.ndarray) -> Kent:
    """The Kent function closest to `field_map` (len(el), len(az)) in least squares, started at the map's largest
    value with each of three turns ψ (the best of the three)."""
    from scipy.optimize import curve_fit

    if not np.isfinite(field_map).all() or np.ptp(field_map) == 0:
        raise BadInput("The landscape's map is flat or holds missing values, so no Kent function can be fitted: "
                       "the neuron answered every grid image alike, or some responses did not come back.")
    a, e = np.meshgrid(np.radians(az), np.radians(el))
    points, values = np.stack([a.ravel(), e.ravel()]), field_map.ravel()
    top = np.unravel_index(np.argmax(field_map), field_map.shape)
    lower = (-math.pi, -math.pi / 2, -math.pi / 2, 0.0, 0.0, 0.0, -np.inf)
    upper = (math.pi, math.pi / 2, math.pi / 2, 1e4, 0.999, np.inf, np.inf)
    best = None
    for psi in (-math.pi / 4, 0.0, math.pi / 4):
        start = (a[top], e[top], psi, 2.0, 0.2, np.ptp(values), values.min())
        try:
            fitted, _ = curve_fit(_kent, points, values, p0=start, bounds=(lower, upper), maxfev=5000)
        except RuntimeError:  # no convergence from this start
            continue
        error = float(((_kent(points, *fitted) - values) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, fitted)
    if best is None:
        raise BadInput("No Kent function could be fitted to the landscape's map from any start: its shape is far "
                       "from a single peak (see page.html).")
    error, (theta, phi, psi, kappa, share, amplitude, offset) = best
    beta = share * kappa / 2

    def width(rate: float) -> float:  # beyond 180° the map does not fall off along that axis on the sphere
        return math.degrees(1 / math.sqrt(rate)) if rate > 1 / math.pi ** 2 else math.inf

    return Kent(math.degrees(theta), math.degrees(phi), float(kappa), float(beta), float(psi), float(amplitude),
                float(offset), width(kappa - 2 * beta), width(kappa + 2 * beta),
                1 - error / float(((values - values.mean()) ** 2).sum()))


def landscape(run, out: str | Path | None = None, neuron=None, grid: int = 11, span: float = 90.0,
              repeats: int | None = None, seed: int = 0, noise: str | None = "run", weights: str | None = None,
              device: str = "auto", precision: str = "auto", batch: int | None = None, missing: str = "represent",
              progress: bool = False) -> LandscapeResult:
    """Show the images of a `grid` × `grid` spherical grid (±`span` degrees) around a finished run's evolved code
    (a run or thread folder, or an `evolver.Run`) to its neuron (or `neuron`, a spec or object), each `repeats`
    times (default 1 without noise, else 5), with the run's noise unless `noise` says otherwise (None or 'none':
    none); the folder `out` (default RUN-landscape beside the run) gets map.npy, fit.json and page.html."""
    from evolver.runs import Run, open_run

    run = run if isinstance(run, Run) else open_run(run)
    if not (MIN_GRID <= grid <= 41 and 0 < span <= 180):
        raise BadInput(f"landscape takes --grid {MIN_GRID} to 41 points a side (the Kent function has 7 parameters) "
                       f"and --span above 0 to 180 degrees; got grid {grid}, span {span:g}.")
    recorded = run.config["run"]
    noise = recorded.get("noise") if noise == "run" else None if noise == "none" else noise
    made, = showing.make_neurons([neuron if neuron is not None else _run_neuron(run)],
                                 weights or (recorded.get("weights") if neuron is None else None), device, precision)
    repeats = repeats or (1 if noise is None and not getattr(made, "noisy", False) else 5)
    out = Path(out) if out is not None else run.path.with_name(f"{run.path.name}-landscape")
    steps = np.linspace(-span, span, grid)
    settings = {"run": str(run.path), "grid": grid, "span": span, "repeats": repeats, "seed": seed, "noise": noise,
                "missing": missing}
    record = {"analysis": "landscape", "settings": settings, "neurons": [showing.describe(made)]}
    # the run's own rig goes on from the run's session and blocks, in the exchange folder the run claimed
    rig = run.state.components.get("neuron") if neuron is None and run.state is not None else None
    folder, stimuli = showing.AnalysisFolder.open_or_create(out, record, lambda: grid_stimuli(run, steps),
                                                            {0: rig} if rig else None)
    try:
        presentations = showing.present(folder, [made], stimuli, repeats, seed, noise, batch, missing, progress)
        responses = showing.mean_responses(presentations, stimuli.table)
        folder.write_table(showing.RESPONSES, responses)
        field_map = responses["mean"].to_numpy().reshape(grid, grid)
        top = np.unravel_index(np.argmax(field_map), field_map.shape)
        peak = (float(steps[top[1]]), float(steps[top[0]]))
        fit = fit_kent(field_map, steps, steps)
        write_atomic(folder.path / MAP, npy_bytes(field_map))
        write_atomic(folder.path / FIT, json.dumps({"peak": {"az": peak[0], "el": peak[1]}, "kent": asdict(fit)},
                                                   indent=2).encode())
        _page(folder.path, made, run, stimuli, field_map, steps, peak, fit)
    finally:
        folder.close()
    return LandscapeResult(folder.path, field_map, steps, steps, peak, fit)


def _run_neuron(run) -> str:
    recorded = run.config["run"]
    if not isinstance(recorded["neuron"], str):
        raise BadInput(f"The run {run.path} was made with a neuron object ({recorded['neuron']['object']}); give it "
                       "again: evolver.landscape(run, neuron=...).")
    return f"-({recorded['neuron']})" if recorded.get("minimize") else recorded["neuron"]


def grid_stimuli(run, steps: np.ndarray) -> showing.Stimuli:
    """The grid's images, drawn by the run's generator: el rows (from -span up), az columns."""
    code, u2, u3 = axes(run)
    codes = sphere_codes(code, u2, u3, steps, steps)
    images = run.generator.render(codes).float().cpu()
    el, az = np.meshgrid(steps, steps, indexing="ij")
    return showing.Stimuli.of(images, "grid", [f"az {a:g}°, el {e:g}°" for a, e in zip(az.ravel(), el.ravel())],
                              az=az.ravel(), el=el.ravel())


def _page(path: Path, neuron, run, stimuli: showing.Stimuli, field_map: np.ndarray, steps: np.ndarray,
          peak: tuple[float, float], fit: Kent) -> Path:
    """page.html: the response map with its peak and the fitted peak, beside the grid's images (laid out as the
    map: elevation up, azimuth right)."""
    figure = go.Figure()
    figure.add_heatmap(z=field_map, x=steps, y=steps, colorscale="Viridis", colorbar=dict(title="mean response"))
    figure.add_scatter(x=[peak[0]], y=[peak[1]], mode="markers", marker=dict(symbol="square-open", size=16,
                       color="magenta"), name="largest mean")
    figure.add_scatter(x=[fit.az], y=[fit.el], mode="markers", marker=dict(symbol="x", size=11, color="red"),
                       name="Kent peak")
    figure.update_layout(
        title=f"Tuning landscape of {neuron.spec}<br>around {run.path.name}'s evolved code (0°, 0°)<br>Kent peak "
              f"({fit.az:.0f}°, {fit.el:.0f}°), widths {fit.width_major:.0f}° × {fit.width_minor:.0f}° (r² "
              f"{fit.r2:.2f})", width=640, height=700, margin=dict(t=120),
        legend=dict(orientation="h", y=-0.15),
        xaxis=dict(title="azimuth (°): toward the trajectory's 1st principal axis", constrain="domain"),
        yaxis=dict(title="elevation (°): toward its 2nd", scaleanchor="x"))
    grid = len(steps)
    rows = stimuli.table.reset_index(drop=True)
    flipped = [i for r in reversed(range(grid)) for i in range(r * grid, (r + 1) * grid)]  # elevation up
    images = stimuli.images[flipped]
    captions = [rows.source[i] for i in flipped]
    beside = "<style>body{display:flex;flex-wrap:wrap;align-items:flex-start}</style>"  # the map beside the images
    return write_page(figure, path / "page.html",
                      after=beside + showing.thumbnails(images, captions, side=64, columns=grid))

