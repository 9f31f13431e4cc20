"""Draw the figures of the image spaces and print the tables of a bench of image spaces × optimizers.

    python scripts/image_space_figures.py [--out docs/images] [--bench FOLDER] [--unit SPEC] [--smoke]

Writes `image_spaces.png` (six codes of each space's prior; rows pixel, fourier, maco). With `--bench`, a
finished `evolver bench` folder of several generators, also `bench_spaces.png` (the image each noise-free
run of seed 0 returned for `--unit`: a row a generator, a column an optimizer) and prints, as markdown:
the mean normalised score per generator × optimizer, noise-free and under noise; XDream's first comparison
(the GA in pixels over the GA in the DCGAN, per layer); and its second (FDGD and NES over the GA, per
generator, noise-free and under noise). `--smoke` runs a tiny bench of its own to draw from.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.utils import save_image

import generators
from evolver.aggregate import aggregate
from evolver.bench import BenchConfig, bench

SPACES = ("pixel", "fourier", "maco")
ENLARGE = 2


def priors(out: Path) -> None:
    rows = [generators.create(name).render(generators.create(name).sample(6, np.random.default_rng(3)))
            for name in SPACES]
    save_image(torch.cat(rows), out / "image_spaces.png", nrow=6, padding=2, pad_value=1.0)
    print(f"priors of {', '.join(SPACES)}: {out / 'image_spaces.png'}")


def mean_sem(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.sem():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def score_table(runs: pd.DataFrame) -> str:
    """Mean normalised score ± s.e.m. per generator × optimizer, a column a noise level."""
    noises = sorted(runs["noise"].unique(), key=lambda n: (n != "none", n))
    lines = [f"| generator | optimizer | {' | '.join(noises)} |", "|---|---|" + "---|" * len(noises)]
    for (generator, optimizer), group in runs.groupby(["generator", "optimizer"]):
        cells = [mean_sem(group.loc[group["noise"] == n, "normalised"]) if (group["noise"] == n).any() else "—"
                 for n in noises]
        lines.append(f"| `{generator}` | `{optimizer}` | {' | '.join(cells)} |")
    return "\n".join(lines)


def ratio_of_means(runs: pd.DataFrame, mask_a, mask_b, by: str) -> pd.DataFrame:
    """Per value of `by`: mean best of the runs in mask_a over those in mask_b, paired by unit and seed
    (each unit's ratio of means over seeds, then the median over units), with the mean normalised scores."""
    rows = []
    for value, group in runs.groupby(by):
        a, b = group[mask_a(group)], group[mask_b(group)]
        per_unit = (a.groupby("neuron")["best"].mean() / b.groupby("neuron")["best"].mean()).dropna()
        rows.append({by: value, "a": a["normalised"].mean(), "b": b["normalised"].mean(),
                     "ratio": per_unit.median(), "units": len(per_unit)})
    return pd.DataFrame(rows)


def xdream_tables(runs: pd.DataFrame, space: str = "pixel", reference: str = "dcgan") -> str:
    clean = runs[runs["noise"] == "none"]
    first = ratio_of_means(clean, lambda g: (g["generator"] == space) & (g["optimizer"] == "ga"),
                           lambda g: (g["generator"] == reference) & (g["optimizer"] == "ga"), "layer")
    lines = [f"GA noise-free, {space} against {reference}, per layer:",
             f"| layer | {space} | {reference} | median ratio |", "|---|---|---|---|"]
    lines += [f"| {r.layer} | {r.a:.3f} | {r.b:.3f} | {r.ratio:.2f} |" for r in first.itertuples()]
    for estimator in ("fdgd", "nes"):
        for noise in sorted(runs["noise"].unique(), key=lambda n: (n != "none", n)):
            noisy = runs[runs["noise"] == noise]
            second = ratio_of_means(noisy, lambda g, e=estimator: g["optimizer"] == e,
                                    lambda g: g["optimizer"] == "ga", "generator")
            lines += ["", f"{estimator} against the GA, noise {noise}:", "| generator | "
                      f"{estimator} | ga | median ratio |", "|---|---|---|---|"]
            lines += [f"| `{r.generator}` | {r.a:.3f} | {r.b:.3f} | {r.ratio:.2f} |" for r in second.itertuples()]
    return "\n".join(lines)


def returned_images(folder: Path, runs: pd.DataFrame, unit: str, out: Path) -> None:
    chosen = runs[(runs["neuron"] == unit) & (runs["seed"] == 0) & (runs["noise"] == "none")]
    names = sorted(chosen["optimizer"].unique())
    spaces = list(dict.fromkeys(chosen["generator"]))
    side = 64 * ENLARGE
    sheet = Image.new("RGB", (len(names) * (side + 4) - 4, len(spaces) * (side + 4) - 4), "white")
    for row, space in enumerate(spaces):
        for column, name in enumerate(names):
            found = chosen[(chosen["generator"] == space) & (chosen["optimizer"] == name)]
            if len(found):
                image = Image.open(folder / found["run"].iloc[0] / "best.png").convert("RGB")
                sheet.paste(image.resize((side, side), Image.NEAREST), (column * (side + 4), row * (side + 4)))
    sheet.save(out / "bench_spaces.png")
    print(f"returned images of {unit} (rows {', '.join(spaces)}; columns {', '.join(names)}): "
          f"{out / 'bench_spaces.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--bench", type=Path, help="a finished bench folder of several generators")
    parser.add_argument("--unit", default="stimnet:classifier:unit7")
    parser.add_argument("--smoke", action="store_true", help="a tiny bench of its own, 40 images a run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    priors(args.out)
    folder = args.bench
    if args.smoke:
        folder = Path(tempfile.mkdtemp()) / "bench"
        bench(BenchConfig(neurons=[args.unit], generators=["dcgan", "pixel"], optimizers=["ga", "fdgd", "nes"],
                          seeds=[0], noises=["none", "poisson:count=5"], images=40), folder, progress=False)
    if folder is None:
        return
    runs = aggregate(folder).runs
    print(score_table(runs))
    print()
    print(xdream_tables(runs))
    returned_images(folder, runs, args.unit, args.out)


if __name__ == "__main__":
    main()
