"""Measure and draw docs/analysis.md's figures: receptive fields, tuning landscapes and images shown again.

    python scripts/analysis_figures.py [--out docs/images] [--work DIR] [--smoke]

Prints, and draws with matplotlib (`pip install -e ".[docs]"`):
- `analysis_rf.png`: model V1 cells at known positions and sizes mapped by the gradient and by patches, and a
  stimnet relu3 unit read at two positions, each map with its fitted Gaussian (1 s.d.);
- `analysis_landscape.png`: the tuning landscapes around the evolved codes of a stimnet classifier unit and a V1
  simple cell (100 generations each), with the images of the first;
- `analysis_show.png`: the returned images of three evolutions shown again (5 repeats, Poisson spike counts) to
  the three units they were evolved for, each normalised by the unit's best mean response to 100 corpus images.
--smoke: tiny sizes, to check that the script runs.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

import evolver

V1_CELLS = [(0.3, 0.6, 0.08, "simple", 8, 0), (0.7, 0.35, 0.12, "complex", 6, 45),
             (0.25, 0.25, 0.06, "complex", 10, 90),
            (0.6, 0.7, 0.15, "simple", 6, 30), (0.8, 0.8, 0.1, "simple", 5, 135)]
CNN_POSITIONS = ((4, 4), (11, 8))  # stimnet's relu3 is a 16 × 16 grid
UNITS = ("stimnet:classifier:unit3", "stimnet:classifier:unit5", "stimnet:classifier:unit7")
NOISE = "poisson:count=10"  # the images are shown again as to recorded neurons: 10 spikes for the median image


def receptive_fields(work: Path, smoke: bool) -> list[dict]:
    """Every V1 cell and CNN position by both methods: one dict a map (its spec, method, truth, result)."""
    cells = V1_CELLS[:1] if smoke else V1_CELLS
    size, grid = (64, 16) if smoke else (128, 16)
    found = []
    for x, y, sd, kind, sf, ori in cells:
        spec = f"v1:{kind}:x={x}:y={y}:size={sd}:sf={sf}:ori={ori}"
        for method in ("gradient", "patches"):
            result = evolver.receptive_field(spec, work / f"rf-{method}-{spec}", method=method, size=size, grid=grid)
            found.append({"spec": spec, "method": method, "truth": (x, y, sd), "result": result})
    for column, row in CNN_POSITIONS:
        spec = f"stimnet:relu3:unit5@{column},{row}"
        for method in ("gradient", "patches"):
            result = evolver.receptive_field(spec, work / f"rf-{method}-{spec}", method=method, size=size, grid=grid)
            found.append({"spec": spec, "method": method, "truth": ((column + 0.5) / 16, (row + 0.5) / 16, None),
                          "result": result})
    for entry in found:
        f, (x, y, sd) = entry["result"].field, entry["truth"]
        size_text = f"size {f.size:.3f}" + (f" (true {sd}, {f.size / sd - 1:+.1%})" if sd else "")
        print(f"rf {entry['method']:>8} {entry['spec']}: centre ({f.x:.3f}, {f.y:.3f}), true ({x:.3f}, {y:.3f}), "
              f"off by {math.hypot(f.x - x, f.y - y):.3f}; {size_text}; r² {f.r2:.2f}")
    for method in ("gradient", "patches"):
        first, second = (e["result"].field for e in found if e["method"] == method and e["spec"].startswith("stimnet"))
        print(f"rf {method:>8} stimnet:relu3:unit5 read at {CNN_POSITIONS[0]} then {CNN_POSITIONS[1]}: the centre "
              f"moved by ({second.x - first.x:.3f}, {second.y - first.y:.3f}); the positions are "
              f"({7 / 16:.3f}, {4 / 16:.3f}) apart")
    return found


def landscapes(work: Path, smoke: bool) -> list:
    generations, grid = (4, 5) if smoke else (100, 11)
    found = []
    for spec in ("stimnet:classifier:unit7", "v1:simple:ori=0:sf=4"):
        run = evolver.run(neuron=spec, generations=generations, out=work / f"run-{spec}", progress=False)
        result = evolver.landscape(run.path, grid=grid)
        fit = result.fit
        print(f"landscape {spec} after {generations} generations (best {run.best:.4g}): largest mean "
              f"{result.map.max():.4g} at az {result.peak[0]:g}°, el {result.peak[1]:g}° (the evolved code: "
              f"{result.map[grid // 2, grid // 2]:.4g} at 0°, 0°); Kent peak ({fit.az:.1f}°, {fit.el:.1f}°), "
              f"widths {fit.width_major:.1f}° × {fit.width_minor:.1f}°, κ {fit.kappa:.2f}, β {fit.beta:.2f}, "
              f"r² {fit.r2:.2f}; smallest mean {result.map.min():.4g}")
        found.append((spec, result))
    return found


def shown_again(work: Path, smoke: bool):
    generations = 4 if smoke else 100
    runs = [evolver.run(neuron=unit, generations=generations, out=work / f"evolved-{unit}", progress=False).path
            for unit in UNITS]
    result = evolver.show(runs, list(UNITS), out=work / "show", repeats=2 if smoke else 5,
                          reference="procedural:10" if smoke else "procedural:100", noise=NOISE)
    for k, unit in enumerate(UNITS):
        values = ", ".join(f"{v:.2f} ± {s:.2f}" for v, s in zip(result.transfer[f"normalised_{k}"],
                                                               result.transfer[f"normalised_sem_{k}"]))
        print(f"show: {unit} to the images evolved for {', '.join(u.split(':')[-1] for u in UNITS)}: {values} "
              "(mean over the best corpus mean ± s.e.m.)")
    return result


def draw_fields(found: list[dict], out: Path) -> None:
    from matplotlib import pyplot

    columns = len(found) // 2
    figure, axes = pyplot.subplots(2, columns, figsize=(2.1 * columns, 4.6), dpi=110, squeeze=False)
    for k, entry in enumerate(found):
        ax = axes[0 if entry["method"] == "gradient" else 1][k // 2]
        f = entry["result"].field
        ax.imshow(entry["result"].map, extent=(0, 1, 1, 0), cmap="viridis")
        turn = np.linspace(0, 2 * np.pi, 100)
        along, across = f.sigma_x * np.cos(turn), f.sigma_y * np.sin(turn)
        ax.plot(f.x + along * np.cos(f.theta) - across * np.sin(f.theta),
                f.y + along * np.sin(f.theta) + across * np.cos(f.theta), color="white", linewidth=1)
        x, y, sd = entry["truth"]
        if sd:
            ax.add_patch(pyplot.Circle((x, y), sd, fill=False, color="red", linestyle=":", linewidth=1))
        ax.plot([x], [y], "r+")
        name = entry["spec"].split(":")
        if entry["method"] == "gradient":
            ax.set_title(f"{name[0]}:{name[1]}\n{':'.join(name[2:4]) if name[0] == 'v1' else name[2]}", fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
        if k // 2 == 0:
            ax.set_ylabel(entry["method"])
    figure.suptitle("Receptive fields: fitted Gaussian (white, 1 s.d.), truth (red: centre, envelope s.d.)", fontsize=9)
    figure.tight_layout()
    figure.savefig(out)
    pyplot.close(figure)


def draw_landscapes(found: list, out: Path) -> None:
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 3, figsize=(13, 4.2), dpi=110, gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, (spec, result) in zip(axes[:2], found):
        shown = ax.imshow(result.map, origin="lower", cmap="viridis",
                          extent=(result.az[0] - 9, result.az[-1] + 9, result.el[0] - 9, result.el[-1] + 9))
        ax.plot([result.fit.az], [result.fit.el], "rx", label="Kent peak")
        ax.plot([result.peak[0]], [result.peak[1]], "ws", fillstyle="none", markersize=10, label="largest mean")
        ax.set_title(spec, fontsize=9)
        ax.set_xlabel("azimuth (°)")
        ax.set_ylabel("elevation (°)")
        ax.legend(fontsize=7, loc="lower right")
        figure.colorbar(shown, ax=ax, fraction=0.046)
    spec, result = found[0]
    images = np.load(result.path / "stimuli.npy")
    grid, side = len(result.az), images.shape[1]
    montage = np.ones((grid * (side + 2), grid * (side + 2), 3), dtype=np.uint8) * 255
    for k, image in enumerate(images):
        row, column = grid - 1 - k // grid, k % grid  # elevation up
        montage[row * (side + 2):row * (side + 2) + side, column * (side + 2):column * (side + 2) + side] = image
    axes[2].imshow(montage)
    axes[2].set_axis_off()
    axes[2].set_title(f"{spec}'s grid images (elevation up)", fontsize=9)
    figure.tight_layout()
    figure.savefig(out)
    pyplot.close(figure)


def draw_show(result, out: Path) -> None:
    from matplotlib import pyplot

    table = result.transfer
    figure, axes = pyplot.subplots(figsize=(6.4, 3.2), dpi=120)
    width = 0.8 / len(UNITS)
    for k, unit in enumerate(UNITS):
        axes.bar(np.arange(len(table)) + (k - 1) * width, table[f"normalised_{k}"], width,
                 yerr=table[f"normalised_sem_{k}"], label=unit.split(":")[-1])
    axes.axhline(1, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xticks(np.arange(len(table)), [f"evolved for\n{u.split(':')[-1]}" for u in UNITS])
    axes.set_ylabel("mean / best corpus mean")
    axes.legend(title="shown to", frameon=False, fontsize=8)
    figure.tight_layout()
    figure.savefig(out)
    pyplot.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--work", type=Path, help="where the analyses' folders go (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        args.out.mkdir(parents=True, exist_ok=True)
        draw_fields(receptive_fields(work, args.smoke), args.out / "analysis_rf.png")
        draw_landscapes(landscapes(work, args.smoke), args.out / "analysis_landscape.png")
        draw_show(shown_again(work, args.smoke), args.out / "analysis_show.png")
        print(f"wrote {args.out / 'analysis_rf.png'}, {args.out / 'analysis_landscape.png'} and "
              f"{args.out / 'analysis_show.png'}")


if __name__ == "__main__":
    main()
