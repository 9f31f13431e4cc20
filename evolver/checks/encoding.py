"""The measures behind scripts/check_encoding.py: an encoding model fitted to a simulated subject, and
evolutions for its ROIs against the best of its own dataset.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

import neurons
from evolver import RunConfig, run
from evolver.decoding import DecodeOptions
from evolver.encoding import (
    FitOptions,
    SubjectOptions,
    fit_encoder,
    pearson,
    simulate_subject,
    split,
    write_fit,
)
from evolver_common.images import read_image
from neurons.encoder import FeatureSpec


@dataclass(frozen=True)
class Sizes:
    """The simulated subjects and the fit; --smoke shrinks them to check that the script runs."""

    fit_images: int = 1000
    fit_voxels: int = 240
    pcs: int = 100
    decode_images: int = 2000
    decode_voxels: int = 1000
    decode_pcs: tuple[int, ...] = DecodeOptions().pcs


SMOKE = Sizes(fit_images=100, fit_voxels=12, pcs=5, decode_images=100, decode_voxels=20, decode_pcs=(5,))


def fit_figures(out: Path, sizes: Sizes) -> tuple[dict, Path, torch.Tensor]:
    subject = simulate_subject(SubjectOptions(images=sizes.fit_images, voxels=sizes.fit_voxels))
    started = time.time()
    model = fit_encoder(subject["images"], subject["responses"], FeatureSpec.parse("stimnet:relu2,relu3,relu4", pool=8),
                        subject["rois"], FitOptions(pcs=sizes.pcs))
    seconds = time.time() - started
    write_fit(model, out / "encoder")
    _, test = split(sizes.fit_images, 0.2, 0)
    truth_ceiling = pearson(subject["truth"][test].astype(float), subject["responses"].mean(0)[test].astype(float))
    rois = np.array(subject["rois"])
    r, ceiling = np.array(model.info["scores"]["r"]), np.array(model.info["scores"]["ceiling"])
    table = {roi: {"voxels": int((rois == roi).sum()), "mean_r": round(float(r[rois == roi].mean()), 3),
                   "ground_truth_ceiling": round(float(truth_ceiling[rois == roi].mean()), 3),
                   "repeat_ceiling": round(float(ceiling[rois == roi].mean()), 3)}
             for roi in dict.fromkeys(subject["rois"])}
    return {"fit_seconds": round(seconds, 1), "solver": model.info["fit"]["solver"], "per_roi": table}, out / "encoder", \
        subject["images"]


def evolution_figures(model: Path, images: torch.Tensor, generations: int, out: Path) -> dict:
    rows, tiles = {}, []
    for roi in ("early", "mid", "late"):
        neuron = neurons.create(f"encoder:{model}:roi={roi}")
        with torch.no_grad():
            dataset = np.concatenate([neuron(images[i:i + 250]) for i in range(0, len(images), 250)])
        result = run(RunConfig(neuron=f"encoder:{model}:roi={roi}", generations=generations), out=out / f"run-{roi}",
                     progress=False)
        top = np.argsort(-dataset)[:3]
        rows[roi] = {"best_evolved": round(result.best, 3), "best_of_dataset": round(float(dataset.max()), 3),
                     "ratio": round(result.best / float(dataset.max()), 2)}
        tiles += [read_image(result.path / "best.png")[0], *images[top]]
    save_image(torch.stack(tiles), out / "encoder_evolution.png", nrow=4, padding=2, pad_value=1.0)
    return rows
