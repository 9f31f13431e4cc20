"""`evolver show`: chosen images shown again, with repeats, to one neuron or several (docs/analysis.md).

A lab shows an evolution's best images again to confirm a preference with statistics, or to other neurons (held-out
models of the same neuron, as EGG judges its images; two models at once for "controversial" images). The images
are a run's returned image, a generation's best, a run's N best drawn again from their codes, a session's threads'
best, image files or folders; each neuron's responses are normalised by its best mean response to a reference set
(the procedural corpus by default) shown in the same blocks, so neurons of different scales compare.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from evolver.analysis import showing
from evolver.pages import write_page
from evolver.records import is_run_folder, is_session
from evolver.reference import load_reference
from evolver_common import BadInput
from evolver_common.images import IMAGE_SUFFIXES, read_image, resize

IMAGES_HELP = ("IMAGES are run folders (the image the run returned), RUN:gen=K (generation K's best image), "
               "RUN:best=N (the run's N images with the largest told responses, drawn again from their codes), a "
               "session's folder (each thread's returned image), image files or folders of images "
               f"({', '.join(IMAGE_SUFFIXES)}).")
DEFAULT_REFERENCE = "procedural:100"
TRANSFER = "transfer.csv"
LARGEST_SIDE = 512  # images are shown at the largest side among them, at most this


@dataclass(frozen=True)
class ShowResult:
    """An `evolver show` folder's outcome: `responses` (one row a neuron and image: n, mean, sem and the stimulus
    columns) and `transfer` (one row an image shown: each neuron's mean, s.e.m. and mean normalised by its best
    reference)."""

    path: Path
    responses: pd.DataFrame
    transfer: pd.DataFrame


def show(images: Sequence[str | Path], neurons: Sequence, out: str | Path | None = None, repeats: int = 5,
         reference: str | None = DEFAULT_REFERENCE, seed: int = 0, noise: str | None = None, weights: str | None = None,
         device: str = "auto", precision: str = "auto", batch: int | None = None, missing: str = "represent",
         progress: bool = False) -> ShowResult:
    """Show `images` (IMAGES_HELP) `repeats` times each, interleaved with the `reference` images (None: none), to
    every neuron (specs or objects, as `evolver.run` takes them), recorded in `out` (default runs/<time>-show;
    continued where it already holds this analysis); write responses.csv, transfer.csv and page.html there."""
    if not images:
        raise BadInput(f"Give at least one image to show. {IMAGES_HELP}")
    if not 1 <= repeats <= 1000:
        raise BadInput(f"--repeats {repeats}: show each image 1 to 1,000 times.")
    made = showing.make_neurons(neurons, weights, device, precision)
    settings = {"images": [str(i) for i in images], "repeats": repeats, "reference": reference, "seed": seed,
                "noise": noise, "missing": missing}
    record = {"analysis": "show", "settings": settings, "neurons": [showing.describe(n) for n in made]}
    folder, stimuli = showing.AnalysisFolder.open_or_create(out or showing.default_folder("show"), record,
                                                            lambda: gather(images, reference))
    try:
        presentations = showing.present(folder, made, stimuli, repeats, seed, noise, batch, missing, progress)
        responses = showing.mean_responses(presentations, stimuli.table)
        transfer = transfer_table(responses, len(made))
        folder.write_table(showing.RESPONSES, responses)
        folder.write_table(TRANSFER, transfer)
        _page(folder.path, stimuli, transfer, made)
    finally:
        folder.close()
    return ShowResult(folder.path, responses, transfer)


def gather(items: Sequence[str | Path], reference: str | None) -> showing.Stimuli:
    """The images `items` name (kind 'image') and the reference images (kind 'reference'), at one size."""
    found: list[tuple[torch.Tensor, str]] = []
    for item in items:
        found += _images_of(str(item))
    side = min(LARGEST_SIDE, max(min(image.shape[-2:]) for image, _ in found))  # the largest centre square
    shown = showing.Stimuli.of(torch.cat([resize(_square(x), (side, side)) for x, _ in found]).clamp(0, 1), "image",
                               [source for _, source in found])
    if reference is None:
        return shown
    try:
        references, names = load_reference(reference, side)
    except BadInput as err:
        raise BadInput(f"{err} (--reference none shows no reference images.)") from None
    return shown + showing.Stimuli.of(references, "reference", [f"{reference}:{n}" for n in names])


def _square(image: torch.Tensor) -> torch.Tensor:
    """The centre square of `image` (1, 3, H, W)."""
    h, w = image.shape[-2:]
    side = min(h, w)
    return image[..., (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]


def _images_of(item: str) -> list[tuple[torch.Tensor, str]]:
    """The images (1, 3, H, W) in [0, 1] one IMAGES item names, each with where it came from."""
    from evolver.runs import open_run, open_session

    match = re.fullmatch(r"(.+):(gen|best)=(\d+)", item)
    path = Path(match[1] if match else item)
    if match or is_run_folder(path):
        if not is_run_folder(path):
            raise BadInput(f"'{item}': {path} is not a run folder (no config.json and state/). {IMAGES_HELP}")
        run = open_run(path)
        if not match:
            return [_returned(run, item)]
        return [_generation_best(run, int(match[3]), item)] if match[2] == "gen" else _best(run, int(match[3]))
    if is_session(path):
        return [_returned(thread, f"{item}:thread{k}") for k, thread in enumerate(open_session(path).threads)]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInput(f"The folder {path} holds no image files, run or session. {IMAGES_HELP}")
        return [(read_image(p, "Image"), str(p)) for p in files]
    if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
        return [(read_image(path, "Image"), str(path))]
    raise BadInput(f"'{item}' is neither a run or session folder, an image file nor a folder of images. {IMAGES_HELP}")


def _pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _returned(run, source: str) -> tuple[torch.Tensor, str]:
    if run.best is None:
        raise BadInput(f"{source}: the run {run.path} has no finished generation, so no image to show yet.")
    return _pixels(run.best.image), f"{source} (returned image, generation {run.best.generation})"


def _generation_best(run, gen: int, source: str) -> tuple[torch.Tensor, str]:
    image = run.top_image(gen)
    if image is None:
        raise BadInput(f"{source}: no response came back in generation {gen}, so it has no best image.")
    return _pixels(image), source


def _best(run, n: int) -> list[tuple[torch.Tensor, str]]:
    """The run's `n` images with the largest told responses, drawn again from their codes: each presentation counts on
    its own (the luckiest of a noisy run's images among them: showing them again says which were luck), and an image
    shown again (a re-test) is taken once."""
    if not 1 <= n <= 1000:
        raise BadInput(f"'{run.path}:best={n}': give N from 1 to 1,000.")
    scores = run.scores.dropna(subset=["score"]).sort_values("score", ascending=False, kind="stable")
    found, codes = [], []
    for row in scores.itertuples():
        drawn = run.scores[run.scores.gen == row.gen].image_id.tolist()  # a generation's rows are its codes' rows
        code = run.codes(int(row.gen))[drawn.index(row.image_id)]
        if any(np.array_equal(code, kept) for kept in codes):
            continue
        codes.append(code)
        found.append((run.generator.render(code[None]).float().cpu(),
                      f"{run.path}:image {row.image_id} (generation {row.gen}, response {row.score:.4g})"))
        if len(found) == n:
            break
    return found


def transfer_table(responses: pd.DataFrame, neurons: int) -> pd.DataFrame:
    """One row an image shown (not the references): each neuron k's `mean_k`, `sem_k`, `normalised_k` (its mean over
    neuron k's best mean reference response; NaN without references, or where that best is not above 0) and
    `normalised_sem_k` (the s.e.m. on that scale)."""
    shown = responses[responses.kind == "image"]
    table = shown[shown.neuron == 0][["image", "source"]].reset_index(drop=True)
    for k in range(neurons):
        mine = shown[shown.neuron == k].set_index("image")
        best = responses[(responses.kind == "reference") & (responses.neuron == k)]["mean"].max()
        table[f"mean_{k}"] = table.image.map(mine["mean"])
        table[f"sem_{k}"] = table.image.map(mine["sem"])
        scale = 1 / best if np.isfinite(best) and best > 0 else np.nan
        table[f"normalised_{k}"] = table[f"mean_{k}"] * scale
        table[f"normalised_sem_{k}"] = table[f"sem_{k}"] * scale
    return table


def _page(path: Path, stimuli: showing.Stimuli, transfer: pd.DataFrame, neurons: list) -> Path:
    """page.html: each neuron's mean response (± s.e.m.) to each image, normalised where references were shown,
    and the images."""
    figure = go.Figure()
    labels = [f"{i}" for i in transfer.image]
    normalised = transfer[[f"normalised_{k}" for k in range(len(neurons))]].notna().all().all()
    for k, neuron in enumerate(neurons):
        value, sem = (f"normalised_{k}", f"normalised_sem_{k}") if normalised else (f"mean_{k}", f"sem_{k}")
        figure.add_bar(x=labels, y=transfer[value], error_y=dict(type="data", array=transfer[sem]),
                       name=f"{k}: {neuron.spec}")
    figure.update_layout(barmode="group", title="Responses to the images shown (mean ± s.e.m.)", height=460,
                         yaxis_title="mean / best reference mean" if normalised else "mean response",
                         xaxis_title="image", legend=dict(orientation="h", y=-0.25))
    shown = stimuli.table.kind == "image"
    captions = [f"{row.image}: {row.source}" for row in stimuli.table[shown].itertuples()]
    return write_page(figure, path / "page.html",
                      after=showing.thumbnails(stimuli.images[np.flatnonzero(shown.to_numpy()).tolist()], captions))
