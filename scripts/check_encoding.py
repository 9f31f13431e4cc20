"""Measure the fMRI side on simulated subjects: encoding-model fit, evolution for an ROI, decoding.

    python scripts/check_encoding.py [--out runs/check-encoding] [--generations 200] [--smoke]

1. A subject of 1,000 corpus images × 240 voxels (3 ROIs pooling stimnet's relu2/relu3/relu4, SNR 1,
   2 repeats): `evolver fit-encoder` on stimnet:relu2,relu3,relu4 (8×8 pooling, 100 PCs a layer);
   held-out r per ROI against the ground-truth ceiling (r of the noise-free responses with the
   measured ones on the same held-out images) and against the ceiling estimated from the repeats.
2. For each ROI, an evolution through the bundled DCGAN on `encoder:MODEL:roi=ROI`; its best
   predicted response against the best of the subject's 1,000 images (NeuroGen's comparison).
   Writes OUT/encoder_evolution.png: per ROI the evolved image, then the dataset's top 3.
3. A subject of 2,000 DCGAN images from known codes × 1,000 voxels: `evolver decode` (held-out
   20%), all metrics, and OUT/decoded/montage.png.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

import neurons
from evolver import RunConfig, run
from evolver.decoding import DecodeOptions, decode
from evolver.encoding import FitOptions, SubjectOptions, fit_encoder, pearson, simulate_subject, split, write_fit
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/check-encoding"))
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny subjects and 2 generations: checks that the script runs; its figures mean nothing")
    args = parser.parse_args()
    sizes, generations = (SMOKE, 2) if args.smoke else (Sizes(), args.generations)
    fit, model, images = fit_figures(args.out, sizes)
    print("fit:", json.dumps(fit, indent=1), flush=True)
    print("evolution:", json.dumps(evolution_figures(model, images, generations, args.out), indent=1), flush=True)
    subject = simulate_subject(SubjectOptions(images=sizes.decode_images, voxels=sizes.decode_voxels, source="dcgan"))
    summary = decode(subject["responses"], subject["codes"], None, args.out / "decoded",
                     DecodeOptions(pcs=sizes.decode_pcs))
    print("decoding:\n" + summary.T.to_string(header=False))


if __name__ == "__main__":
    main()
