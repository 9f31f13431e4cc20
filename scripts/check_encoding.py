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
from pathlib import Path

from evolver.checks.encoding import SMOKE, Sizes, evolution_figures, fit_figures
from evolver.decoding import DecodeOptions, decode
from evolver.encoding import (
    SubjectOptions,
    simulate_subject,
)


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
