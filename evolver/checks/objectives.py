"""The outcome measures behind scripts/check_objectives.py: template reconstruction and one-hot
population targets (V1 cells: evolver.checks.ground_truth).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

import generators
import neurons
from evolver import RunConfig, run
from evolver_common.images import read_image
from generators.corpus import stimuli
from neurons.template import reconstruction_quality


def best_image(path: Path) -> torch.Tensor:
    return read_image(path / "best.png")


def template_figures(folder: Path, optimizer: str, generations: int) -> dict:
    target = stimuli(1, 11).images
    path = folder / "target.png"
    save_image(target[0], path)
    result = run(RunConfig(neuron=f"template:{path}", optimizer=optimizer, generations=generations),
                 out=folder / "template", progress=False)
    first = generators.create("dcgan").render(np.load(result.path / "codes" / "gen_0000.npy"))
    before, after = reconstruction_quality(first, target), reconstruction_quality(best_image(result.path), target)
    return {"first_generation_best_pixel_correlation": round(float(before["pixel_correlation"].max()), 3),
            "first_generation_best_ssim": round(float(before["ssim"].max()), 3),
            "evolved_pixel_correlation": round(float(after["pixel_correlation"][0]), 3),
            "evolved_ssim": round(float(after["ssim"][0]), 3)}


def population_figures(folder: Path, optimizer: str, generations: int) -> dict:
    population, target = "stimnet:relu4:unit0-15", 6
    result = run(RunConfig(neuron=f"onehot({population}, {target})", optimizer=optimizer, generations=generations),
                 out=folder / "onehot", progress=False)
    dcgan, units = generators.create("dcgan"), neurons.create(population)
    first = units(dcgan.render(np.load(result.path / "codes" / "gen_0000.npy")))
    best = units(dcgan.render(np.load(result.path / "best_code.npy")[None]))[0]
    return {"target_first_generation_mean": round(float(first[:, target].mean()), 3),
            "target_first_generation_max": round(float(first[:, target].max()), 3),
            "target_best_image": round(float(best[target]), 3),
            "others_first_generation_mean": round(float(np.delete(first, target, axis=1).mean()), 3),
            "others_best_image_mean": round(float(np.delete(best, target).mean()), 3)}
