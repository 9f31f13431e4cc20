"""Interactive pages (plotly figures as HTML) that share one copy of plotly.js.

A page that inlines plotly.js carries 4.7 MB of the same script: 85% of a run folder, 5 GB over a
thousand-run sweep. Each page here loads `plotly-VERSION.min.js` from a folder it names (a run's page: the
folder that holds the run folder, so the runs beside one another share one copy; a sweep's runs and
report: the sweep's folder), written there once. A
page copied away from that file loads the same version from plotly's CDN instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline

from evolver_common import write_atomic


def plotly_script(folder: Path) -> Path:
    """This plotly's plotly.js in `folder`, written there (atomically) unless it already is."""
    path = folder / f"plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, plotly.offline.get_plotlyjs().encode())
    return path


def scripts_folder(run_folder: Path) -> Path:
    """Where a run's page finds plotly.js: the folder holding the run folder; for a run of a sweep
    (SWEEP/runs/RUN), the sweep's own folder, whose report shares the copy (and its runs/ holds runs only)."""
    parent = run_folder.parent
    if parent.name == "runs" and (parent.parent / "sweep.json").is_file():
        return parent.parent
    return parent


def write_page(figure: go.Figure, out: str | Path, scripts: str | Path | None = None, after: str = "") -> Path:
    """Write `figure` as an HTML page at `out` that loads plotly.js from the folder `scripts` (default:
    the page's own folder), with the HTML `after` below it."""
    out = Path(out)
    script = plotly_script(Path(scripts) if scripts is not None else out.parent)
    source = Path(os.path.relpath(script, out.parent)).as_posix()
    page = figure.to_html(include_plotlyjs=source)
    tag = f'src="{source}"></script>'
    cdn = f"https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    fallback = f"<script>window.Plotly || document.write('<script src=\"{cdn}\"><\\/script>')</script>"
    if tag not in page:
        raise RuntimeError(f"plotly wrote no script tag for {source}: its page layout changed")
    write_atomic(out, page.replace(tag, tag + fallback, 1).replace("</body>", f"{after}</body>", 1).encode())
    return out
