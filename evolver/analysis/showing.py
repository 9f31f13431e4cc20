"""Showing a fixed set of images to neurons, repeated, and recording every presentation: what `evolver show`,
`evolver rf` and `evolver landscape` are built on (docs/analysis.md).

A block is one repeat of every image, in an order drawn from the seed and the block's number, shown through the
loop's `Presenter` (so a rig meets a run's protocol: one block a request, images with a missing response shown
again). Each block is committed to the analysis folder as it finishes: its rows appended to presentations.csv,
then state.json (the blocks done, the table's committed length, each neuron's and noise's state) replaced
atomically. A killed analysis loses at most the block in flight, and the same command continues it.

    OUT/analysis.json       what was asked (the analysis, its settings, each neuron's description)
    OUT/stimuli.csv         one row an image: image (its id), kind, source and the analysis's own columns
    OUT/stimuli.npy         the images as shown, (n, H, W, 3) uint8
    OUT/presentations.csv   one row a presentation (PRESENTATION_COLUMNS)
    OUT/state.json          what is committed
    OUT/responses.csv       each image's mean and s.e.m. on each neuron, written at the end
"""
from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from evolver.presenting import MISSING, Presenter, Shown
from evolver.records import npy_bytes
from evolver_common import BadInput, Interrupted, write_atomic
from evolver_common.files import FolderLock
from neurons.noise import Noise
from neurons.python_neurons import as_neuron

ANALYSIS_FILE, STIMULI_TABLE, STIMULI_ARRAY = "analysis.json", "stimuli.csv", "stimuli.npy"
PRESENTATIONS, STATE, RESPONSES = "presentations.csv", "state.json", "responses.csv"
# one row a presentation: the neuron's index in analysis.json, the block (a repeat of every image on that neuron),
# the repeat, the image's place in the block's order, its id, the told response (NaN where missing), the noise-free
# one (with simulated noise) and the times the image was shown again in the block for a missing response
PRESENTATION_COLUMNS = ("neuron", "block", "repeat", "position", "image", "response", "response_clean",
                        "shown_again")
OWN_FILES = {FolderLock.NAME, STIMULI_TABLE, STIMULI_ARRAY, PRESENTATIONS, STATE}  # written before analysis.json
NOISE_SEED, ORDER_SEED = 1, 2  # streams of the analysis's seed: block b's noise is [seed, 1, b], its order [seed, 2, b]


@dataclass
class Stimuli:
    """The images an analysis shows, `images` (n, 3, H, W) in [0, 1] on 8-bit levels (what stimuli.npy keeps,
    so a resumed analysis shows the same), and `table`, one row an image: `image` (its id, `stimK`), `kind`,
    `source` and the analysis's own columns."""

    images: torch.Tensor
    table: pd.DataFrame

    @classmethod
    def of(cls, images: torch.Tensor, kind: str | Sequence[str], source: Sequence[str], **columns: Any) -> Stimuli:
        images = (images.detach().float().cpu().clamp(0, 1) * 255).round() / 255
        table = pd.DataFrame({"image": [f"stim{k}" for k in range(len(images))], "kind": kind, "source": list(source),
                              **columns})
        return cls(images, table)

    def __add__(self, other: Stimuli) -> Stimuli:
        if other.images.shape[1:] != self.images.shape[1:]:
            raise ValueError(f"stimuli of sizes {tuple(self.images.shape[1:])} and {tuple(other.images.shape[1:])}")
        table = pd.concat([self.table, other.table], ignore_index=True)
        table["image"] = [f"stim{k}" for k in range(len(table))]
        return Stimuli(torch.cat([self.images, other.images]), table)

    def __len__(self) -> int:
        return len(self.images)


class AnalysisFolder:
    """An analysis's folder (module docstring), held by this process while it writes."""

    def __init__(self, path: Path, record: dict[str, Any], lock: FolderLock):
        self.path, self.record, self.lock = path, record, lock

    @classmethod
    def open_or_create(cls, path: str | Path, record: dict[str, Any], stimuli: Callable[[], Stimuli],
                       neuron_states: dict[int, dict] | None = None) -> tuple[AnalysisFolder, Stimuli]:
        """The folder at `path`, continued where it holds the same `record` ({analysis, settings, neurons}), or
        made with the images `stimuli()` draws and the neurons starting from `neuron_states` ({index: a neuron's
        `state_dict`}: a rig continuing a run's session); BadInput where it holds another analysis."""
        path = Path(path)
        settings = record["settings"]
        if settings.get("noise"):
            Noise.parse(settings["noise"])  # a malformed spec is refused before anything is written
        if settings.get("missing", "represent") not in MISSING:
            raise BadInput(f"--missing {settings['missing']!r}: give one of {', '.join(MISSING)}.")
        if path.exists() and not path.is_dir():
            raise BadInput(f"--out {path} is a file; give a folder for the analysis (made if missing).")
        path.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(path).acquire("analysis folder")
        try:
            if (path / ANALYSIS_FILE).is_file():
                folder = cls(path, record, lock)
                folder._check_same(json.loads((path / ANALYSIS_FILE).read_text()))
                return folder, folder.stimuli()
            if any(p.name not in OWN_FILES for p in path.iterdir()):  # its own: a creation cut short, made again
                raise BadInput(f"{path} holds files but no {ANALYSIS_FILE}: it is not an analysis to continue. Give "
                               "an empty or new folder with --out.")
            made = stimuli()
            write_atomic(path / STIMULI_ARRAY, _npy(made.images))
            write_atomic(path / STIMULI_TABLE, made.table.to_csv(index=False).encode())
            header = (",".join(PRESENTATION_COLUMNS) + "\n").encode()
            write_atomic(path / PRESENTATIONS, header)
            starting = {str(k): {"neuron": state} for k, state in (neuron_states or {}).items()}
            write_atomic(path / STATE, json.dumps({"blocks": 0, "bytes": len(header), "neurons": starting}).encode())
            write_atomic(path / ANALYSIS_FILE, json.dumps(record, indent=2, default=str).encode())
            return cls(path, record, lock), made
        except BaseException:
            lock.release()
            raise

    def _check_same(self, recorded: dict[str, Any]) -> None:
        asked = json.loads(json.dumps(self.record, default=str))
        differs = [k for k in ("analysis", "settings", "neurons") if recorded.get(k) != asked.get(k)]
        if differs:
            raise BadInput(f"{self.path} holds another analysis (its {', '.join(differs)} differ from what was asked: "
                           f"recorded {json.dumps({k: recorded.get(k) for k in differs})[:600]}). Continue it with the "
                           "same command and options, or give a new folder with --out.")

    def stimuli(self) -> Stimuli:
        pixels = np.load(self.path / STIMULI_ARRAY, allow_pickle=False)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float() / 255  # laid out as made
        return Stimuli(images, pd.read_csv(self.path / STIMULI_TABLE, keep_default_na=False))

    def roll_back(self) -> dict[str, Any]:
        """The committed state, presentations.csv cut to its committed rows (a block killed half-written)."""
        state = committed_state(self.path)
        with open(self.path / PRESENTATIONS, "r+b") as table:
            table.truncate(state["bytes"])
        return state

    def commit(self, rows: pd.DataFrame, state: dict[str, Any]) -> None:
        """Append a block's `rows` and then commit `state` (its "bytes" set here)."""
        data = rows[list(PRESENTATION_COLUMNS)].to_csv(index=False, header=False, float_format=_exact).encode()
        with open(self.path / PRESENTATIONS, "ab") as table:
            table.write(data)
            table.flush()
            os.fsync(table.fileno())
            state["bytes"] = table.tell()
        write_atomic(self.path / STATE, json.dumps(state).encode())

    def presentations(self) -> pd.DataFrame:
        return read_presentations(self.path)

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        write_atomic(self.path / name, table.to_csv(index=False, float_format=_exact).encode())
        return self.path / name

    def close(self) -> None:
        self.lock.release()


def _exact(value: float) -> str:
    return repr(float(value))  # round-trips exactly


def committed_state(path: Path) -> dict[str, Any]:
    """state.json of the analysis folder `path`, checked against presentations.csv: BadInput where either cannot
    hold what the other says (edited, cut short, not an analysis's)."""
    try:
        state = json.loads((path / STATE).read_text())
        blocks, committed, kept = int(state["blocks"]), int(state["bytes"]), state["neurons"]
        size = (path / PRESENTATIONS).stat().st_size
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise BadInput(f"The analysis folder {path} cannot be continued: its {STATE} or {PRESENTATIONS} cannot be "
                       f"read ({type(err).__name__}: {err}). Its other files are intact; give a new folder with "
                       "--out.") from None
    if size < committed or blocks < 0 or not isinstance(kept, dict):
        raise BadInput(f"The analysis folder {path} cannot be continued: {PRESENTATIONS} holds {size} bytes, fewer "
                       f"than the {committed} its {STATE} committed (the table was cut or edited). Give a new folder "
                       "with --out.")
    return state


def read_presentations(path: str | Path) -> pd.DataFrame:
    """An analysis folder's committed presentations (PRESENTATION_COLUMNS)."""
    path = Path(path)
    with open(path / PRESENTATIONS, "rb") as table:
        data = table.read(committed_state(path)["bytes"])
    return pd.read_csv(io.BytesIO(data), dtype={"image": str})


def _npy(images: torch.Tensor) -> bytes:
    return npy_bytes((images * 255).round().byte().permute(0, 2, 3, 1).numpy())


def reader(neuron) -> Callable[[np.ndarray], np.ndarray]:
    """What a neuron's presented responses (n, columns) mean as one response an image (n,): a rig's chosen
    channels, else its one output."""
    if getattr(neuron, "outputs", 1) != 1:
        raise BadInput(f"The neuron {neuron.spec} answers with {neuron.outputs} units at once; an analysis shows "
                       "images to one unit at a time. Name each unit as a --neuron of its own.")
    if hasattr(neuron, "respond_channels"):
        return neuron.channels
    return lambda responses: responses[:, 0]


def present(folder: AnalysisFolder, neurons: Sequence, stimuli: Stimuli, repeats: int, seed: int = 0,
            noise: str | None = None, batch: int | None = None, missing: str = "represent",
            progress: bool = False) -> pd.DataFrame:
    """Show every image `repeats` times to each neuron, a block a repeat, and record each presentation in `folder`
    (continuing after its committed blocks); the presentations (PRESENTATION_COLUMNS) when all are recorded.
    Stopped by Ctrl-C or SIGTERM, it keeps the committed blocks and raises Interrupted."""
    state = folder.roll_back()
    ids = stimuli.table["image"].tolist()
    shown = Shown([], stimuli.images, batch, same_size=True)
    bar = tqdm(total=len(neurons) * repeats, initial=state["blocks"], desc="showing", unit="block",
               disable=not progress)
    try:
        for k, neuron in enumerate(neurons):
            _show_neuron(folder, state, k, neuron, shown, ids, repeats, seed, noise, missing, bar)
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted: {folder.path} holds {state['blocks']} finished block(s) of "
                          f"{len(neurons) * repeats}. Continue with the same command.") from None
    finally:
        bar.close()
    return folder.presentations()


def _show_neuron(folder: AnalysisFolder, state: dict[str, Any], k: int, neuron, shown: Shown, ids: list[str],
                 repeats: int, seed: int, noise: str | None, missing: str, bar) -> None:
    """Neuron `k`'s blocks that are not committed yet."""
    if state["blocks"] >= (k + 1) * repeats:
        return
    read, presenter = reader(neuron), Presenter(neuron, missing)
    simulated = Noise.parse(noise) if noise else None
    kept = state["neurons"].get(str(k), {})
    if "neuron" in kept and hasattr(neuron, "load_state_dict"):
        neuron.load_state_dict(kept["neuron"])
    if simulated is not None:
        simulated.state.update(kept.get("noise", {}))
    for repeat in range(state["blocks"] - k * repeats, repeats):
        block = k * repeats + repeat
        order = np.random.default_rng([seed, ORDER_SEED, block]).permutation(len(ids))
        responses, again = presenter.respond(shown, ids, order, [read])
        clean = read(responses)
        told = simulated(clean, np.random.default_rng([seed, NOISE_SEED, block])) if simulated else clean
        place = np.empty(len(ids), dtype=np.int64)
        place[order] = np.arange(len(ids))
        rows = pd.DataFrame({"neuron": k, "block": block, "repeat": repeat, "position": place, "image": ids,
                             "response": told, "response_clean": clean if simulated else np.nan,
                             "shown_again": again}).iloc[order]
        state["blocks"] = block + 1
        state["neurons"][str(k)] = {**({"neuron": neuron.state_dict()} if hasattr(neuron, "state_dict") else {}),
                                    **({"noise": dict(simulated.state)} if simulated else {})}
        folder.commit(rows, state)
        bar.update(1)


def mean_responses(presentations: pd.DataFrame, stimuli: pd.DataFrame) -> pd.DataFrame:
    """Each image's responses on each neuron: the told responses' count `n` (those that came back), `mean` and
    `sem` (s.d. / √n, NaN below 2), with the stimulus table's columns; one row a neuron and image."""
    grouped = presentations.groupby(["neuron", "image"], sort=False)["response"]
    table = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    table["sem"] = table.pop("sd") / np.sqrt(table["n"].where(table["n"] > 1))
    order = {name: i for i, name in enumerate(stimuli["image"])}
    table = table.sort_values(["neuron", "image"], key=lambda c: c.map(order) if c.name == "image" else c)
    return table.merge(stimuli, on="image", how="left").reset_index(drop=True)


def make_neurons(given: Sequence, weights: str | None = None, device: str = "auto", precision: str = "auto") -> list:
    """Neurons from specs (made with `weights`, `device` and `precision`) or neuron objects (as `evolver.run`
    takes them), each answering one response an image (`reader`)."""
    if not given:
        raise BadInput("Give at least one neuron (--neuron SPEC).")
    made = [as_neuron(n, weights=weights or "pretrained", device=device, precision=precision) for n in given]
    for neuron in made:
        reader(neuron)  # one response an image, or refused before a folder is made
    return made


def default_folder(analysis: str) -> Path:
    """Where an analysis goes when no folder is given: runs/<time>-<analysis>."""
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{analysis}"


def describe(neuron) -> dict[str, Any] | str:
    """How analysis.json names a neuron: its spec and weights."""
    return {"spec": neuron.spec, "weights": str(neuron.weights)}


def thumbnails(images: torch.Tensor, captions: Sequence[str], side: int = 96, columns: int | None = None) -> str:
    """HTML: `images` (n, 3, H, W) in [0, 1] as inline PNGs `side` pixels wide, each above its caption, in rows of
    `columns` (None: as many as the page holds)."""
    import base64
    import html

    from evolver_common.images import png_bytes, resize

    cells = []
    for image, caption in zip(images, captions):
        small = resize(image[None], (side, side))[0].clamp(0, 1) if image.shape[-1] > side else image
        data = base64.b64encode(png_bytes(small)).decode()
        cells.append(f'<figure style="display:inline-block;margin:4px;width:{side}px;vertical-align:top">'
                     f'<img src="data:image/png;base64,{data}" width="{side}" height="{side}" '
                     f'style="image-rendering:pixelated"><figcaption style="font:11px sans-serif;'
                     f'overflow-wrap:anywhere">{html.escape(caption)}</figcaption></figure>')
    layout = f"display:grid;grid-template-columns:repeat({columns},{side + 8}px);" if columns else ""
    return f'<div style="margin:8px;{layout}">{"".join(cells)}</div>'
