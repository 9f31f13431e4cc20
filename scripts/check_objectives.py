"""Measure the objectives beyond one unit on the bundled DCGAN.

    python scripts/check_objectives.py [--optimizer cmaes] [--generations 100] [--smoke]

1. Template: a corpus stimulus as pixel target; the pixel correlation and SSIM of the evolved best
   image, beside the best of the first generation.
2. Population (one-hot) control: onehot(stimnet:relu4:unit0-15, 6): the target unit and the mean of
   the other 15 for the best image, beside their means over the first generation.

V1 cells, whose best stimulus is known, are measured by `evolver check ground-truth`
(evolver/checks/ground_truth.py): each run's best response over the cell's optimum.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evolver.checks.objectives import population_figures, template_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", default="cmaes")
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--smoke", action="store_true",
                        help="2 generations: checks that the script runs; its figures mean nothing")
    args = parser.parse_args()
    generations = 2 if args.smoke else args.generations
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("template:", template_figures(folder, args.optimizer, generations))
        print("population:", population_figures(folder, args.optimizer, generations))


if __name__ == "__main__":
    main()
