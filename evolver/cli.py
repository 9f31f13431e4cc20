"""The `evolver` command line: thin wrappers over the library's functions."""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path

import click
import numpy as np

from evolver.cli_analysis import COMMANDS as ANALYSES
from evolver.cli_lab import COMMANDS
from evolver_common import BadInput, Interrupted, RigError
from evolver_common.secrets import redact


INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as a user reads it: what happened, without the source line that raised it, on a line of
    its own above a progress bar."""
    from tqdm import tqdm

    kind = "" if category is UserWarning else f" ({category.__name__})"
    tqdm.write(redact(f"Warning{kind}: {message}"), file=file or sys.stderr)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's, `kill`) ends a run as Ctrl-C does: recorded, resumable


class BadInputAware(click.Group):
    """Bad input exits with status 2 and its one-paragraph message; no traceback. The command line as
    typed is kept in the context's meta["command"], for the run's config.json (in-process callers too)."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        command = [info_name or self.name, *args]
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta["command"] = command
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BadInput as err:  # a spec in the message may hold a rig's token: never printed
            click.echo(redact(f"Error: {err}"), err=True)
            ctx.exit(2)
        except RigError as err:
            click.echo(redact(f"Error: {err}"), err=True)
            ctx.exit(1)
        except Interrupted as err:
            click.echo(redact(str(err)), err=True)
            ctx.exit(INTERRUPTED)
        except KeyboardInterrupt:  # outside a run's loop or a sweep, which say what they recorded
            click.echo("Interrupted.", err=True)
            ctx.exit(INTERRUPTED)
        except OSError as err:  # the machine's fault, not the input's: a full disk, a read-only or vanished folder
            click.echo(redact(f"Error: {err.strerror or err} ({err.filename or 'a file'}): the operating system refused "
                       "a read or write. What was recorded before it is kept: free space or fix the folder's "
                       "permissions, then run again (`evolver run --resume RUN` continues a run)."), err=True)
            ctx.exit(1)


def _versions() -> str:
    """evolver's version and torch's, read from the installed packages' metadata (no torch imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"evolver {of('evolver')} (torch {of('torch')}, torchvision {of('torchvision')}, Python {sys.version.split()[0]})"


def _print_versions(ctx: click.Context, _, given: bool) -> None:
    if given:
        click.echo(_versions())
        ctx.exit()


@click.group(cls=BadInputAware, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_versions,
              help="Print evolver's version and torch's, and exit.")
def main() -> None:
    """Evolve images that drive a neuron: a CNN unit, a model neuron or a recorded one."""
    warnings.showwarning = _show_warning
    if threading.current_thread() is threading.main_thread():  # signals are the main thread's to handle
        signal.signal(signal.SIGTERM, _interrupt)


@main.command()
@click.option("--neuron", help="Neuron spec, e.g. resnet50:layer4:unit12 (MODEL:LAYER:UNIT[@X,Y|@mean]), "
              "v1:complex:ori=45, template:IMAGE[:MODEL:LAYER], or an expression such as "
              "'resnet50:layer4:unit12 - 0.5*resnet50:layer4:unit13' or 'onehot(resnet50:layer4:unit0-63, 12)'; "
              "default stimnet:classifier:unit7, the bundled classifier's 'star' unit.")
@click.option("--minimize", is_flag=True, default=None,
              help="Find the least preferred stimulus: the objective (and the recorded scores) become -(neuron).")
@click.option("--weights", help="Neuron weights: pretrained (default), random, or a .safetensors/.pth PATH.")
@click.option("--generator", help="Generator name (`evolver generators`); default dcgan.")
@click.option("--generator-weights", help="Generator weights: pretrained (default: the bundled ones), random or PATH.")
@click.option("--class", "class_index", type=int, help="BigGAN: fix this ImageNet class and evolve only the noise.")
@click.option("--truncation", type=float, help="Truncation of the generator's codes (BigGAN default 0.7).")
@click.option("--image-size", type=int, help="Side of the images in pixels, for generators that draw at any size "
              "(stimuli; default 64).")
@click.option("--optimizer", help="Optimizer name: uh-cmaes (the default: CMA-ES that shows a few images twice to "
              "measure the neuron's noise and widens its step under it; racing-cmaes for the stimuli generator), "
              "cmaes (the separable sep-cmaes on codes over 1,024-d), ga (XDream's genetic algorithm and defaults), "
              "racing-cmaes, sep-cmaes, sphere-cma, fdgd and nes (XDream's), random, gradient, and nevergrad:NAME for "
              "any of nevergrad's (nevergrad:NGOpt).")
@click.option("--param", "param_pairs", multiple=True, help="Optimizer parameter NAME=VALUE (repeatable).")
@click.option("--population", type=int, help="Codes per generation (the optimizer's population parameter).")
@click.option("--generations", type=int, help="Number of generations (default 200).")
@click.option("--seed", type=int, help="Seed of every random choice of the run (default 0).")
@click.option("--device", help="auto (default), cpu or cuda.")
@click.option("--precision", help="auto (default: bf16 where the hardware runs it natively), fp32 or bf16.")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the neuron's network: a compile of "
              "10-30 s at the start (cached for later runs), then ~1.3x faster (resnet50 on CPU); for long runs.")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default runs/<time>-<name>).")
@click.option("--noise", help="Noise model of a simulated neuron: poisson:count=C[,overdispersion=F][,baseline=B] "
              "(spike counts: the median first-generation image drives C spikes), poisson:max_rate=R[,reps=K], "
              "multiplicative:S or gaussian:sd=X.")
@click.option("--reference", help="Reference images scored once: a folder, or procedural:N[:SEED].")
@click.option("--images", type=int, help="Stop once this many images were shown.")
@click.option("--missing", help="Responses that did not come back (a recorded neuron): represent (default; the images "
              "are shown again, up to 2 more times) or skip (the optimizer learns from the others).")
@click.option("--interleave", type=int, help="Reference images shown in every generation's block (XDream's drift "
              "check); their responses go to references.csv. Needs --reference.")
@click.option("--retest", help="Name the best image from noisy responses: auto (default: where responses are noisy, "
              "--noise or a recorded neuron, the last generation shows the 10 best-answered images 4 more times "
              "each, counted as images, and the best mean is returned), none, or KxR.")
@click.option("--thread", "thread_texts", multiple=True, help="Make the run a session of several threads on the "
              "neuron, their images shown in one block a generation (repeat for each thread): KEY=VALUE fields, "
              "commas between, of generator, generator_weights, optimizer (NAME[:PARAM=VALUE...]), seed, channel and "
              "generations; fields left out are the run's. E.g. --thread generator=dcgan --thread generator=stimuli.")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run (or session) in this folder.")
@click.option("--force", multiple=True, help="With --resume: continue although this differs from the record "
              "(device, precision, weights, generator-weights, versions); the change is recorded.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--watch", "watch_port", type=int, is_flag=False, flag_value=8050, default=None,
              help="Serve the run's live page (evolver watch) while it runs, on port 8050 or the one given.")
def run(param_pairs, population, class_index, truncation, image_size, out, resume, force, quiet, watch_port,
        thread_texts, **options) -> None:
    """Evolve codes for a neuron and record the run."""
    from evolver import experiment
    from evolver.optimizers import parse_params
    from evolver.session import Thread

    command = click.get_current_context().meta["command"]
    params = parse_params(param_pairs)
    if population is not None:
        params["population"] = population
    requested = {k: v for k, v in options.items() if v is not None}
    generator_options = {k: v for k, v in (("class_index", class_index), ("truncation", truncation),
                                           ("image_size", image_size)) if v is not None}
    if generator_options:
        requested["generator_options"] = generator_options
    if force and not resume:
        raise BadInput("--force goes with --resume: it accepts a difference from a run's record.")
    if resume and out:
        raise BadInput("--out and --resume do not go together: a resumed run stays in its own folder.")
    if resume and thread_texts:
        raise BadInput("--thread and --resume do not go together: a session continues with the threads it began with.")
    threads = [Thread.parse(text) for text in thread_texts] or None
    config = None if resume else experiment.RunConfig(params=params, **requested)
    out = resume or out or experiment.default_run_path(config)
    with _watched(out, watch_port):
        if resume:
            result = experiment.resume(resume, progress=not quiet, params=params or None, force=force, **requested)
        else:
            result = experiment.run(config, out=out, progress=not quiet, command=command, threads=threads)
    if isinstance(result, list):  # a unit set (one run a unit) or a session (one a thread)
        for one in result:
            click.echo(f"{one.path.name:>10}: best {one.best:.4g} (generation {one.best_generation}); "
                       f"first generation's best {one.first_best:.4g}")
        kind = "a thread" if result[0].path.name.startswith("thread") else "a unit"
        click.echo(f"\n{len(result)} runs, one {kind}, in {result[0].path.parent}")
    else:
        _summarise(result)


def _watched(path: Path, port: int | None):
    if port is None:
        return contextlib.nullcontext()
    from evolver.watch import beside

    return beside(path, port)


def _summarise(result) -> None:
    if not np.isfinite(result.best):  # every response missing: there is no best image to point at
        click.echo(f"\nNo response came back in any generation, so there is no best image. Run folder: "
                   f"{result.path} (generations.csv and scores.csv hold what was shown).")
    else:
        # a ratio means nothing when the first best is zero or negative (a logit, a correlation)
        gain = f" ({result.best / result.first_best:.2f}x)" if result.first_best > 0 else ""
        shown = f"mean of {result.presentations} presentations, " if result.presentations > 1 else ""
        click.echo(
            f"\nBest response {result.best:.4g} ({shown}generation {result.best_generation}); the first generation's "
            f"best was {result.first_best:.4g}{gain}.\n"
            f"Run folder: {result.path}\n"
            f"  trajectory.html   the response trajectory (open in a browser)\n"
            f"  best.png, best_code.npy, best.json   the best image, its code and how it was chosen\n"
            f"  generations.csv, scores.csv, codes/, images/, config.json, state/"
        )
    for note in result.notes:
        click.echo(f"Note: {note}.")


@main.command(short_help="Plot runs' response trajectories (HTML).")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="HTML file (default: trajectory.html in the "
              "run folder for one run, comparison.html in the current folder for several).")
@click.option("--generations", help="Generations whose best image to show, e.g. 0,10,50 (default: 6 spread).")
def plot(runs, out, generations) -> None:
    """Plot the response trajectory of one or more runs (overlaid) as interactive HTML."""
    from evolver.plots import write_trajectory

    try:
        wanted = [int(g) for g in generations.split(",")] if generations else None
    except ValueError:
        raise BadInput(f"--generations takes comma-separated integers, e.g. 0,10,50; got '{generations}'.") from None
    out = out or (runs[0] / "trajectory.html" if len(runs) == 1 else Path("comparison.html"))
    click.echo(f"Wrote {write_trajectory(runs, out, wanted)}")


@main.command(short_help="List a model's layers and their unit counts.")
@click.argument("model")
@click.option("--all", "show_all", is_flag=True, help="Also list the layers no unit can be read from (a "
              "transformer's attention internals: windows folded into the batch, token mixing).")
def layers(model, show_all) -> None:
    """List the layers of MODEL with their unit counts and spatial sizes."""
    from neurons import list_layers

    found = list_layers(model)
    rows = found if show_all else [r for r in found if r.layout]
    width = max([len(r.name) for r in rows] + [5])
    click.echo(f"{'layer':<{width}}  {'units':>6}  grid (X×Y) or tokens")
    for r in rows:
        layout = r.layout.describe() if r.layout else "no unit can be read here"
        click.echo(f"{r.name:<{width}}  {r.units if r.units is not None else '-':>6}  {layout}")
    hidden = len(found) - len(rows)
    click.echo(f"\n{len(rows)} layers" + (f" ({hidden} more where no unit can be read: --all lists them)" if hidden else "")
               + f". A container module's name reads its last layer; a unit is {model}:LAYER:UNIT.")


@main.command(short_help="Compare optimizers and image spaces at a fixed image budget.")
@click.option("--neuron", "neurons", multiple=True, required=True, help="A unit to evolve for (repeatable).")
@click.option("--optimizer", "optimizers", multiple=True, help="An optimizer (repeatable); default uh-cmaes, "
              "cmaes, ga, sphere-cma, random.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds 0..N-1 per cell.")
@click.option("--noise", "noises", multiple=True, help="A noise level (repeatable): none or a noise spec; "
              "default none and multiplicative:0.5.")
@click.option("--images", type=int, default=3000, show_default=True, help="Images shown per run.")
@click.option("--generator", "generators_", multiple=True, help="An image space (repeatable), e.g. dcgan, pixel, "
              "fourier, maco, stimuli; default dcgan.")
@click.option("--generator-weights", default="pretrained", show_default=True)
@click.option("--weights", default="pretrained", show_default=True, help="The neurons' network weights.")
@click.option("--param", "param_pairs", multiple=True, help="OPTIMIZER:NAME=VALUE, e.g. ga:mutation_size=0.3 "
              "(nevergrad:NGOpt:population=40).")
@click.option("--no-gradient", is_flag=True, help="Skip the white-box gradient reference.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Benchmark folder (re-run to finish).")
@click.option("--workers", type=int, default=1, show_default=True, help="Runs at once, each in its own process "
              "(1: one after another in this process).")
@click.option("--quiet", is_flag=True)
def bench(neurons, optimizers, generators_, seeds, noises, param_pairs, no_gradient, out, workers, quiet,
          **options) -> None:
    """Compare optimizers and image spaces at a fixed image budget: normalised best noise-free response per
    unit."""
    from evolver.bench import BenchConfig, format_summary
    from evolver.bench import bench as run_bench
    from evolver.optimizers import parse_params

    params: dict[str, dict[str, str]] = {}
    for pair in param_pairs:
        named, equals, value = pair.partition("=")
        optimizer, sep, name = named.rpartition(":")  # the optimizer's own name may hold a colon (nevergrad:NGOpt)
        if not sep or not optimizer or not equals:
            raise BadInput(f"--param takes OPTIMIZER:NAME=VALUE in evolver bench (e.g. ga:mutation_size=0.3), got '{pair}'.")
        params.setdefault(optimizer, {}).update(parse_params((f"{name}{equals}{value}",)))
    config = BenchConfig(neurons=list(neurons), seeds=list(range(seeds)), params=params,
                         gradient_reference=not no_gradient, **options)
    if optimizers:
        config.optimizers = list(optimizers)
    if generators_:
        config.generators = list(generators_)
    if noises:
        config.noises = list(noises)
    _, summary = run_bench(config, out, progress=not quiet, workers=workers)
    click.echo(format_summary(summary))
    click.echo(f"\nTables: {out / 'bench.csv'}, {out / 'summary.csv'}; figure: {out / 'bench.html'}")


@main.group("check")
def check() -> None:
    """Measure how close evolution gets to known ground truth."""


@check.command("ground-truth")
@click.option("--target", "targets", multiple=True, help="v1-complex, v1-simple or classes (repeatable; default all).")
@click.option("--generator", "generators_", multiple=True, help="A generator (repeatable); default stimuli, dcgan.")
@click.option("--optimizer", "optimizers", multiple=True, help="An optimizer (repeatable); default racing-cmaes, "
              "cmaes, ga.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds 0..N-1 per cell.")
@click.option("--images", type=click.IntRange(min=1), default=3000, show_default=True, help="Images shown per run.")
@click.option("--quick", is_flag=True, help="One orientation, frequency and position (67.5°, 4 cycles, centre).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder of the runs (re-run to finish).")
@click.option("--workers", type=int, default=1, show_default=True, help="Runs at once, each in its own process.")
@click.option("--quiet", is_flag=True)
def check_ground_truth(targets, generators_, optimizers, seeds, images, quick, out, workers, quiet) -> None:
    """Evolve for V1 cells (analytic optimum) and stimnet's class units (best of 10,000 corpus images) and
    report the best response each run found over the optimum: median and worst per generator and optimizer."""
    from evolver.checks.ground_truth import GroundTruthConfig, format_summary, ground_truth

    config = GroundTruthConfig(seeds=list(range(seeds)), images=images)
    for name, given in (("targets", targets), ("generators", generators_), ("optimizers", optimizers)):
        if given:
            setattr(config, name, list(given))
    if quick:
        config.orientations, config.frequencies, config.positions = (67.5,), (4,), ((0.5, 0.5),)
    _, summary = ground_truth(config, out, workers=workers, progress=not quiet)
    click.echo(format_summary(summary))
    click.echo(f"\nTables: {out / 'ground_truth.csv'} (one row a run), {out / 'summary.csv'}")


@main.command("generators", short_help="List the generators and where their weights are.")
def list_generators() -> None:
    """List the generators: code size, image size, where 'pretrained' looks for weights, and if found (and
    the optimizer a run gets where it is not the default)."""
    import generators

    for entry in generators.entries():
        if entry.plugin:
            click.echo(f"{entry.name:<16} plugin {entry.plugin}")
            continue
        where, found = entry.info["weights_location"]()
        size = entry.info["image_size"]
        optimizer = f"; runs {entry.info['optimizer']} unless told otherwise" if entry.info.get("optimizer") else ""
        click.echo(f"{entry.name:<16} code {entry.info['code_dim']:<24} image {size}×{size:<5} "
                   f"weights {'found' if found else 'not here'}: {where}{optimizer}")


@main.command("sweep", short_help="Run every combination of a SPEC.toml grid.")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Sweep folder (default runs/sweeps/<spec name>).")
@click.option("--executor", default="local", show_default=True,
              help="local (a process pool), slurm (submitit job arrays) or submitit-local (submitit on this machine).")
@click.option("--workers", type=int, help="local: processes (default: one a core).")
@click.option("--partition", help="slurm: the partition.")
@click.option("--time", "time_minutes", type=int, default=60, show_default=True, help="slurm: minutes a job may run.")
@click.option("--gpus", type=int, default=0, show_default=True, help="slurm: GPUs a job.")
@click.option("--cpus", type=int, default=1, show_default=True, help="slurm: CPUs a job (its torch threads).")
@click.option("--mem", "mem_gb", type=float, default=4.0, show_default=True, help="slurm: GB of memory a job.")
@click.option("--runs-per-job", type=int, default=8, show_default=True, help="slurm: runs in each array task.")
@click.option("--parallel-jobs", type=int, default=64, show_default=True, help="slurm: array tasks at once.")
@click.option("--requeues", type=click.IntRange(min=0), default=3, show_default=True,
              help="slurm: times a task that reaches its time limit is queued again to go on.")
@click.option("--no-wait", is_flag=True, help="slurm: submit and return; re-run the command later to finish.")
@click.option("--status", "show_status", is_flag=True, help="Print how many runs are finished, running, pending, "
              "failed and not started (from the folder and squeue), the images shown and the share done, and the "
              "running sweep's pace and time left; do nothing else.")
@click.option("--quiet", is_flag=True, help="No plan and no progress line.")
def sweep_command(spec, out, executor, workers, no_wait, show_status, quiet, **resources) -> None:
    """Run every combination of a SPEC.toml grid: neurons × generators × optimizers (and their parameter
    grids) × noise × seeds, one run folder each. Re-running skips finished runs and resumes killed ones.

    \b
    [grid]
    neuron = ["stimnet:relu4:unit1", "stimnet:relu4:unit6"]
    optimizer = ["cmaes", "ga"]
    seed = [0, 1]
    noise = ["none", "multiplicative:0.5"]     # optional, as generator
    [params.ga]                                # optional parameter grids
    mutation_size = [0.3, 0.5]
    [run]                                      # optional fixed run options
    generations = 50
    """
    from evolver.sweep import Resources, load_spec, sweep, watch
    from evolver.sweep_progress import last_report

    folder = out or Path("runs") / "sweeps" / spec.stem
    if show_status:
        click.echo(watch(folder).progress().describe())
        reported = last_report(folder)
        click.echo(f"The sweep process reports: {reported}" if reported else
                   "No sweep process reports progress now (none runs here, or it was started with --quiet).")
        return
    try:
        counts = sweep(load_spec(spec), folder, executor, workers, Resources(**resources), wait=not no_wait,
                       progress=not quiet)
    except Interrupted as err:
        raise Interrupted(f"{err} The command: {shlex.join(click.get_current_context().meta['command'])}") from None
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items() if k != "jobs"))
    if "jobs" in counts:
        click.echo(f"Submitted jobs {', '.join(map(str, counts['jobs']))}; logs in {folder / 'logs'}.")
    click.echo(f"Sweep folder: {folder}. Read it with: evolver report {folder}")


@main.command("report", short_help="Aggregate a sweep's runs into tables and a report.")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="HTML file (default FOLDER/report.html).")
def report_command(folder, out) -> None:
    """Aggregate a sweep's runs (runs.parquet, trajectories.parquet) and write its interactive report."""
    from evolver.report import report

    path, summary = report(folder, out)
    click.echo(summary.to_string(index=False))
    click.echo(f"\nReport: {path}; tables: {folder / 'runs.parquet'}, {folder / 'trajectories.parquet'}")


# the training, encoding-model and rig-simulator commands (evolver.cli_lab), and the analyses after an evolution
for command in (*COMMANDS, *ANALYSES):
    main.add_command(command)
