"""What `evolver watch` shows, read from run folders through the run reader (`evolver.open_run`) only.

`Served` holds the folders a watcher serves and turns a page's path into a run folder inside them (any
other path is refused). `Feed` follows one run: it reads each committed row once (`Run.rows_after`), so a
page that asks twice a second for what is new costs what the run added, at generation 10 or 10,000; the
running process is never asked anything and never waits for a watcher.
"""
from __future__ import annotations

import base64
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from evolver.records import holder, is_run_folder, is_session
from evolver.runs import Run, open_run
from evolver_common import BadInput, FolderLock
from evolver_common.files import is_regular
from evolver_common.images import png_bytes

SEARCH_DEPTH = 3  # a sweep's runs lie at SWEEP/runs/NAME
STATUS_EVERY = 1.0  # seconds between two probes of a run's lock
THUMBNAIL = 96  # pixels, the longer side of the last generation's images on the page
SHOWN_EVERY = 2.0  # seconds: the last generation's images are drawn again at most this often
STATUS_COLOURS = {"running": "#2a7", "finished": "#357", "interrupted": "#c60", "starting": "#888",
                  "failed": "#c00"}


def number(value: float) -> str:
    """A response as a page shows it."""
    return "missing" if not math.isfinite(value) else f"{value:.4g}"


def status_style(status: str) -> dict:
    """The badge of a run's status."""
    return {"color": "white", "background": STATUS_COLOURS.get(status, "#888"), "padding": "1px 8px",
            "border-radius": "8px", "font-size": "14px"}


def file_url(key: str, name: str) -> str:
    """Where a page fetches picture `name` of the served run `key` (the watcher's files route)."""
    index, _, relative = key.partition("/")
    return f"/files/{index}/{name}?run={quote(relative)}"


def find_runs(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """The run folders at or under `root`, up to `depth` levels down, sorted; hidden folders, links and
    the temporary folders of runs being made are left out."""
    if is_run_folder(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            found += find_runs(Path(entry.path), depth - 1)
    return found


class Served:
    """The folders a watcher serves (`roots`, each a run folder, a unit set's, a sweep's or a folder of
    runs), and the run folders inside them a page may name: `key` is `ROOT_INDEX/RELATIVE_PATH`."""

    def __init__(self, roots: list[Path]):
        self.roots = [Path(r).resolve() for r in roots]

    def runs(self) -> list[tuple[str, Path]]:
        """(key, folder) of every run under the roots now (a sweep's new runs appear as they are made)."""
        return [(self.key(i, path), path) for i, root in enumerate(self.roots) for path in find_runs(root)]

    def key(self, index: int, path: Path) -> str:
        relative = path.relative_to(self.roots[index]).as_posix()
        return f"{index}/{'' if relative == '.' else relative}".rstrip("/")

    def folder(self, key: str) -> Path:
        """The run folder `key` names, or BadInput saying why not: outside the served folders, or no run."""
        return self._inside(key, is_run_folder, "a run folder (config.json and generations.csv are what "
                                                "`evolver run` writes)")

    def session(self, key: str) -> Path:
        """The session's folder `key` names (evolver.session), or BadInput saying why not."""
        return self._inside(key, is_session, "a session's folder (session.json is what `evolver run --thread ...` "
                                             "writes)")

    def _inside(self, key: str, kind: Callable[[Path], bool], what: str) -> Path:
        index, _, relative = key.partition("/")
        if not index.isdigit() or int(index) >= len(self.roots):
            raise BadInput(f"'{key}' names none of the served folders: {self.describe()}.")
        root = self.roots[int(index)]
        path = (root / relative).resolve()
        if path != root and root not in path.parents:
            raise BadInput(f"'{relative}' is outside the served folder {root}; this watcher shows only the runs "
                           f"inside {self.describe()}.")
        if not kind(path):
            raise BadInput(f"{path} is not {what}; the served folders are {self.describe()}.")
        return path

    def file(self, key: str, name: str) -> Path:
        """A picture of a served run a page may load: best.png or images/gen_NNNN.png, itself a file of the
        run's folder (a link in its place, or in place of images/, is refused: it may lead anywhere)."""
        if not (name == "best.png" or name.startswith("images/gen_") and name.endswith(".png") and "/" not in name[7:]):
            raise BadInput(f"'{name}' is not a picture a run page shows (best.png, images/gen_NNNN.png).")
        folder = self.folder(key)
        path = folder / name
        if path.parent.is_symlink() or path.is_symlink() or path.exists() and not is_regular(path):
            raise BadInput(f"{path} is a link or not a plain file; a run page shows only the run's own pictures.")
        return path

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)


@dataclass(frozen=True)
class Shown:
    """One image of a generation, as the page shows it: its id, response (NaN: missing), code norm and
    thumbnail (a data: URL)."""

    image_id: int
    response: float
    code_norm: float
    src: str


class Feed:
    """One run as a watcher follows it: its generations so far (a DataFrame grown by the rows each update
    adds), counts of images shown and responses missing, the mean response to the interleaved reference
    images a generation, and its status."""

    def __init__(self, path: Path):
        self.path = path
        self.run: Run = open_run(path)
        self.generations = pd.DataFrame()
        self.references = pd.Series(dtype=float)  # gen -> the interleaved references' mean response
        self.images = self.missing = 0
        self.last_scores = pd.DataFrame()  # the last generation's rows of scores.csv
        self._offsets: dict[str, int] = {}
        self._seen: tuple | None = None
        self._status, self._status_at = "", -math.inf
        self._shown: tuple[int, list[Shown] | str] | None = None
        self._shown_at = -math.inf
        self.lock = threading.Lock()

    def update(self) -> Feed:
        """Read what the run committed since the last update (nothing when its state file is unchanged)."""
        with self.lock:
            try:
                stat = (self.path / "state" / "state.npz").stat()
                seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except OSError:
                seen = None
            if seen == self._seen:
                return self
            self.run.refresh()
            new = {name: self._rows(name) for name in ("generations.csv", "scores.csv", "references.csv")
                   if name in self.run.directory.headers()}
            self._seen = seen
            self.generations = pd.concat([self.generations, new["generations.csv"]], ignore_index=True)
            scores = new["scores.csv"]
            self.images += len(scores)
            self.missing += int(scores["score"].isna().sum())
            if len(scores):  # a commit holds whole generations: the last one's rows are all here
                self.last_scores = scores[scores["gen"] == scores["gen"].max()]
            if "references.csv" in new and len(new["references.csv"]):
                means = new["references.csv"].groupby("gen")["score"].mean()
                self.references = pd.concat([self.references, means])
        return self

    def _rows(self, name: str) -> pd.DataFrame:
        rows, self._offsets[name] = self.run.rows_after(name, self._offsets.get(name, 0))
        return rows

    @property
    def generation(self) -> int:
        return self.run.generation

    @property
    def planned(self) -> int:
        return int(self.run.config["run"]["generations"])

    def status(self) -> str:
        """running (a process holds the run, or its unit set or session), finished, interrupted (stopped before its
        end, held by nothing), starting (held, no generation yet); probed at most once a STATUS_EVERY."""
        with self.lock:  # two pages asking at once get the same answer
            if time.monotonic() - self._status_at >= STATUS_EVERY:
                if self.run.finished:
                    self._status = "finished"
                else:
                    held = FolderLock.held(self.path) or (holder(self.path) is not None
                                                          and FolderLock.held(self.path.parent))
                    self._status = ("running" if self.generation >= 0 else "starting") if held else "interrupted"
                self._status_at = time.monotonic()
            return self._status

    def shown(self) -> tuple[int, list[Shown] | str]:
        """The last committed generation and its images (rendered again by the run's generator, once a
        generation), or a line saying why they cannot be shown."""
        gen = self.generation
        with self.lock:
            if self._shown is not None and (self._shown[0] == gen or time.monotonic() - self._shown_at < SHOWN_EVERY):
                return self._shown  # a fast run's generations are drawn at most every SHOWN_EVERY seconds
            scores = self.last_scores
            self._shown_at = time.monotonic()
        if gen < 0:
            return gen, "No generation has finished yet."
        try:
            self._shown = gen, self._render(gen, scores)
        except (BadInput, OSError) as err:
            self._shown = gen, f"The images of generation {gen} cannot be drawn again here: {err}"
        return self._shown

    def _render(self, gen: int, scores: pd.DataFrame) -> list[Shown]:
        import torch

        codes = self.run.codes(gen)
        images = self.run.images(gen)  # the run's generator is made once, at the first drawing
        if images.shape[-1] > THUMBNAIL:
            images = torch.nn.functional.interpolate(images, size=THUMBNAIL, mode="area")
        if len(scores) != len(codes) or len(scores) and scores["gen"].iloc[0] != gen:
            raise BadInput(f"scores.csv holds {len(scores)} rows of generation {gen}, its codes {len(codes)}.")
        return [Shown(int(image_id), float(score), float(np.linalg.norm(code)),
                      "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode())
                for code, image, image_id, score in zip(codes, images, scores["image_id"], scores["score"])]


def sparkline(values: np.ndarray, width: int = 120, height: int = 28) -> str:
    """A line of `values` (best so far by generation) as an SVG data: URL, at most 120 points."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) > width:
        values = values[np.linspace(0, len(values) - 1, width).round().astype(int)]
    if len(values) < 2:
        points = ""
    else:
        low, span = values.min(), np.ptp(values) or 1.0
        xs = np.linspace(1, width - 1, len(values))
        ys = height - 2 - (values - low) / span * (height - 4)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
           f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/></svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


class Feeds:
    """One Feed a run folder, made when first asked for and kept (a page reloaded, or opened twice, reads
    nothing twice)."""

    def __init__(self):
        self._feeds: dict[Path, Feed] = {}
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> Feed:
        with self._lock:
            if path not in self._feeds:
                self._feeds[path] = Feed(path)
            feed = self._feeds[path]
        return feed.update()
