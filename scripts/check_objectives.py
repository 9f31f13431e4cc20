"""Measure the objectives beyond one unit on the bundled DCGAN.

    python scripts/check_objectives.py [--optimizer cmaes] [--v1-optimizers sphere-cma cmaes] [--generations 100]
                                       [--smoke]

1. V1 cells: complex cells at 6 orientations (0°–150°) × 3 spatial frequencies; each evolved best
   image's dominant Fourier orientation against the cell's preference (pass: within ±15°), and the
   best code's norm over the prior's mean norm. One table per optimizer of `--v1-optimizers`:
   CMA-ES lets codes grow to several times the prior's norm, where the DCGAN draws saturated
   tiles rather than gratings; `sphere-cma` keeps every code at the prior's norm.
2. Template: a corpus stimulus as pixel target; the pixel correlation and SSIM of the evolved best
   image, beside the best of the first generation.
3. Population (one-hot) control: onehot(stimnet:relu4:unit0-15, 6): the target unit and the mean of
   the other 15 for the best image, beside their means over the first generation.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from evolver.checks.objectives import (
    FREQUENCIES,
    ORIENTATIONS,
    population_figures,
    template_figures,
    v1_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", default="cmaes")
    parser.add_argument("--v1-optimizers", nargs="+", default=["sphere-cma", "cmaes"])
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--smoke", action="store_true",
                        help="2 generations and one V1 cell: checks that the script runs; its figures mean nothing")
    args = parser.parse_args()
    generations, cells = (2, (ORIENTATIONS[:1], FREQUENCIES[:1])) if args.smoke else \
        (args.generations, (ORIENTATIONS, FREQUENCIES))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for optimizer in args.v1_optimizers:
            rows = v1_table(folder, optimizer, generations, *cells)
            within = sum(r["error"] <= 15 for r in rows)
            print(f"V1, {optimizer}: {within}/{len(rows)} evolved images within ±15° of the cell's orientation; "
                  f"best codes {np.median([r['code_norm_over_prior'] for r in rows]):.1f}× the prior's norm (median)")
        print("template:", template_figures(folder, args.optimizer, generations))
        print("population:", population_figures(folder, args.optimizer, generations))


if __name__ == "__main__":
    main()
