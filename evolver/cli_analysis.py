"""The commands of what a lab does after an evolution (docs/analysis.md): `show`, `rf` and `landscape`, each a thin
wrapper over `evolver.show`, `evolver.receptive_field` and `evolver.landscape`."""
from __future__ import annotations

from pathlib import Path

import click

NEURON_HELP = "Neuron spec, as evolver run --neuron takes it (a model unit, a V1 cell, a rig such as folder:PATH)."


def _showing_options(function):
    """The options every analysis that shows images shares."""
    for option in reversed((
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the blocks' orders and noise."),
        click.option("--noise", help="Noise model of a simulated neuron, as evolver run --noise takes it."),
        click.option("--weights", help="Neuron weights: pretrained (default), random or a PATH."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
        click.option("--precision", default="auto", show_default=True, help="auto, fp32 or bf16."),
        click.option("--missing", default="represent", show_default=True,
                     help="Responses that did not come back: represent (shown again, up to 2 more times) or skip."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    )):
        function = option(function)
    return function


@click.command("show", short_help="Show chosen images again, with repeats, to one neuron or several.")
@click.argument("images", nargs=-1, required=True)
@click.option("--neuron", "neurons", multiple=True, required=True,
              help=NEURON_HELP + " Repeat it for a transfer table across neurons.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Times each image is shown to each neuron.")
@click.option("--reference", default="procedural:100", show_default=True,
              help="Images each neuron's responses are normalised by (its best mean among them), shown in the same "
                   "blocks: a folder, an array file, procedural:N[:SEED], or none.")
@click.option("--out", type=click.Path(path_type=Path), help="The analysis folder (default runs/<time>-show); the "
              "same command with the same folder continues it.")
@_showing_options
def show_command(images, neurons, repeats, reference, out, quiet, **options) -> None:
    """Show IMAGES (run folders: their returned image; RUN:gen=K; RUN:best=N; session folders; image files or
    folders) to each --neuron, interleaved and repeated, and write their responses."""
    from evolver.analysis.show import show

    result = show(images, neurons, out, repeats,
                  None if reference == "none" else reference, progress=not quiet, **options)
    columns = ["image", *[c for c in result.transfer if c.startswith(("mean_", "normalised_"))]]
    click.echo(result.transfer[columns].to_string(index=False))
    click.echo(f"\nAnalysis folder: {result.path}\n  page.html   the responses and the images\n"
               "  transfer.csv, responses.csv, presentations.csv, stimuli.csv")


@click.command("rf", short_help="Map a neuron's receptive field and fit a 2-D Gaussian.")
@click.option("--neuron", required=True, help=NEURON_HELP)
@click.option("--method", default="auto", show_default=True,
              help="gradient (a differentiable neuron: mean absolute gradient over random images), patches (any "
                   "neuron, a rig too: bright and dark squares on a grid) or auto (gradient where it can).")
@click.option("--size", type=int, default=128, show_default=True, help="Side of the images in pixels.")
@click.option("--grid", type=int, default=16, show_default=True, help="patches: grid cells a side.")
@click.option("--repeats", type=int, help="patches: times each image is shown (default 1, 5 for a noisy neuron).")
@click.option("--images", type=int, default=64, show_default=True, help="gradient: random images averaged.")
@click.option("--out", type=click.Path(path_type=Path), help="The analysis folder (default runs/<time>-rf).")
@_showing_options
def rf_command(neuron, out, quiet, **options) -> None:
    """Map where in the image --neuron looks: the centre and size of its receptive field."""
    from evolver.analysis.rf import receptive_field

    result = receptive_field(neuron, out, progress=not quiet, **options)
    field = result.field
    click.echo(f"Receptive field by {result.method}: centre x {field.x:.3f}, y {field.y:.3f} (fractions of the image), "
               f"size {field.size:.3f} of the width (s.d. {field.sigma_x:.3f} × {field.sigma_y:.3f}), "
               f"r² {field.r2:.2f}"
               f"\nAnalysis folder: {result.path}\n  page.html   the map and the fit\n  field.json, map.npy")


@click.command("landscape", short_help="Chart the tuning landscape around a run's evolved code.")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--neuron", help="Show the grid to this neuron instead of the run's own.")
@click.option("--grid", type=int, default=11, show_default=True, help="Grid points a side.")
@click.option("--span", type=float, default=90.0, show_default=True, help="Degrees from the evolved code to the edge.")
@click.option("--repeats", type=int, help="Times each image is shown (default 1, 5 for a noisy neuron).")
@click.option("--out", type=click.Path(path_type=Path), help="The analysis folder (default RUN-landscape beside it).")
@_showing_options
def landscape_command(run, neuron, noise, out, quiet, **options) -> None:
    """Show the images on a spherical grid around RUN's evolved code (a finished run or a session's thread) to its
    neuron, and fit the response map's peak (a Kent function)."""
    from evolver.analysis.landscape import landscape

    result = landscape(run, out, neuron, noise=noise or "run", progress=not quiet, **options)
    fit = result.fit
    click.echo(f"Largest mean response at az {result.peak[0]:g}°, el {result.peak[1]:g}° (the evolved code is at "
               f"0°, 0°); Kent peak at az {fit.az:.1f}°, el {fit.el:.1f}°, widths {fit.width_major:.1f}° × "
               f"{fit.width_minor:.1f}° (r² {fit.r2:.2f})\nAnalysis folder: {result.path}\n"
               "  page.html   the response map beside the images\n  fit.json, map.npy, responses.csv")


COMMANDS = (show_command, rf_command, landscape_command)
