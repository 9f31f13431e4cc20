"""Draw the README's two pictures from the main job (`evolver run` on the bundled defaults).

    python scripts/readme_figures.py [--out docs/images] [--run RUN] [--smoke]

Runs the main job (or reads the finished run RUN) and writes:
- `main_job_best.png`: the best image of generations 1, 10, 25, 50, 100 and 200, enlarged 3×, in a row;
- `main_job_trajectory.png`: the best, mean and best-so-far response of each generation.
Needs matplotlib (`pip install -e ".[docs]"`).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import evolver

STRIP_GENERATIONS = (0, 9, 24, 49, 99, 199)  # generations 1, 10, 25, 50, 100, 200 (numbered from 0 on disk)
ENLARGE = 3


def best_strip(run: Path, generations: tuple[int, ...]) -> Image.Image:
    """The best image of each of `generations`, side by side, enlarged without smoothing."""
    opened = evolver.open_run(run)
    images = [Image.fromarray(opened.top_image(g)) for g in generations]
    width, height = images[0].size
    strip = Image.new("RGB", (len(images) * (width * ENLARGE + 4) - 4, height * ENLARGE), "white")
    for i, image in enumerate(images):
        strip.paste(image.resize((width * ENLARGE, height * ENLARGE), Image.NEAREST), (i * (width * ENLARGE + 4), 0))
    return strip


def trajectory_figure(run: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    table = evolver.open_run(run).generations
    figure, axes = pyplot.subplots(figsize=(6.4, 3.2), dpi=120)
    axes.plot(table["gen"] + 1, table["best_so_far"], label="best so far", color="black")
    axes.plot(table["gen"] + 1, table["best"], label="best of the generation", color="tab:red", linewidth=0.8)
    axes.plot(table["gen"] + 1, table["mean"], label="mean of the generation", color="tab:blue", linewidth=0.8)
    axes.set_xlabel("generation")
    axes.set_ylabel("response of stimnet:classifier:unit7")
    axes.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(out)
    pyplot.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--run", type=Path, help="a finished main-job run to draw instead of running it")
    parser.add_argument("--smoke", action="store_true", help="a 6-generation run: checks that the script runs")
    args = parser.parse_args()
    generations = tuple(range(6)) if args.smoke else STRIP_GENERATIONS
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or evolver.run(generations=generations[-1] + 1, out=Path(tmp) / "main", progress=False).path
        args.out.mkdir(parents=True, exist_ok=True)
        best_strip(run, generations).save(args.out / "main_job_best.png")
        trajectory_figure(run, args.out / "main_job_trajectory.png")
        table = evolver.open_run(run).generations
        print(f"best response by generation {[g + 1 for g in generations]}: "
              f"{np.round(table['best'].iloc[list(generations)].to_numpy(), 2).tolist()}")
        print(f"wrote {args.out / 'main_job_best.png'} and {args.out / 'main_job_trajectory.png'}")


if __name__ == "__main__":
    main()
