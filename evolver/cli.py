"""The `evolver` command line: thin wrappers over the library's functions."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from evolver_common import BadInput, RigError


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
        except BadInput as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)
        except RigError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(1)


@click.group(cls=BadInputAware, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Evolve images that drive a neuron: a CNN unit, a model neuron or a recorded one."""


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
@click.option("--optimizer", help="Optimizer name: cmaes (default; the separable sep-cmaes on codes over 1,024-d), ga "
              "(XDream's genetic algorithm and defaults), sep-cmaes, sphere-cma, random, gradient.")
@click.option("--param", "param_pairs", multiple=True, help="Optimizer parameter NAME=VALUE (repeatable).")
@click.option("--population", type=int, help="Codes per generation (the optimizer's population parameter).")
@click.option("--generations", type=int, help="Number of generations (default 200).")
@click.option("--seed", type=int, help="Seed of every random choice of the run (default 0).")
@click.option("--device", help="auto (default), cpu or cuda.")
@click.option("--precision", help="auto (default: bf16 where the hardware runs it natively), fp32 or bf16.")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the neuron's network: a compile of "
              "10-30 s at the start (cached for later runs), then ~1.3x faster (resnet50 on CPU); for long runs.")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default runs/<time>-<name>).")
@click.option("--noise", help="Noise model of a simulated neuron: poisson:max_rate=R[,reps=K], "
              "multiplicative:S or gaussian:sd=X.")
@click.option("--reference", help="Reference images scored once: a folder, or procedural:N[:SEED].")
@click.option("--images", type=int, help="Stop once this many images were shown.")
@click.option("--missing", help="Responses that did not come back (a recorded neuron): represent (default; the images "
              "are shown again, up to 2 more times) or skip (the optimizer learns from the others).")
@click.option("--interleave", type=int, help="Reference images shown in every generation's block (XDream's drift "
              "check); their responses go to references.csv. Needs --reference.")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(param_pairs, population, class_index, truncation, out, resume, quiet, **options) -> None:
    """Evolve codes for a neuron and record the run."""
    from evolver import experiment
    from evolver.optimizers import parse_params

    command = click.get_current_context().meta["command"]
    params = parse_params(param_pairs)
    if population is not None:
        params["population"] = population
    requested = {k: v for k, v in options.items() if v is not None}
    generator_options = {k: v for k, v in (("class_index", class_index), ("truncation", truncation)) if v is not None}
    if generator_options:
        requested["generator_options"] = generator_options
    if resume:
        if out:
            raise BadInput("--out and --resume do not go together: a resumed run stays in its own folder.")
        result = experiment.resume(resume, progress=not quiet, params=params or None, **requested)
    elif _is_unit_set(requested.get("neuron", "")):
        results = experiment.run_units(experiment.RunConfig(params=params, **requested), out=out, progress=not quiet,
                                       command=command)
        for result in results:
            click.echo(f"{result.path.name:>10}: best {result.best:.4g} (generation {result.best_generation}); "
                       f"first generation's best {result.first_best:.4g}")
        click.echo(f"\n{len(results)} runs, one a unit, in {results[0].path.parent}")
        return
    else:
        result = experiment.run(experiment.RunConfig(params=params, **requested), out=out, progress=not quiet,
                                command=command)
    _summarise(result)


def _is_unit_set(neuron: str) -> bool:
    """Whether `neuron` is a plain set of CNN units (run as one evolution per unit)."""
    from neurons.spec import UnitSpec

    try:
        return isinstance(UnitSpec.parse(neuron).unit, tuple)
    except BadInput:
        return False


def _summarise(result) -> None:
    # a ratio means nothing when the first best is zero or negative (a logit, a correlation)
    gain = f" ({result.best / result.first_best:.2f}x)" if result.first_best > 0 else ""
    click.echo(
        f"\nBest response {result.best:.4g} (generation {result.best_generation}); the first generation's "
        f"best was {result.first_best:.4g}{gain}.\n"
        f"Run folder: {result.path}\n"
        f"  trajectory.html   the response trajectory (open in a browser)\n"
        f"  best.png, best_code.npy   the best image and its code\n"
        f"  generations.csv, scores.csv, codes/, images/, config.json, state/"
    )
    for note in result.notes:
        click.echo(f"Note: {note}.")


@main.command()
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


@main.command()
@click.argument("model")
def layers(model) -> None:
    """List the layers of MODEL with their unit counts and spatial sizes."""
    from neurons import list_layers

    rows = list_layers(model)
    width = max(len(r.name) for r in rows)
    click.echo(f"{'layer':<{width}}  {'units':>6}  spatial")
    for r in rows:
        spatial = f"{r.spatial[1]}×{r.spatial[0]}" if r.spatial else "-"
        click.echo(f"{r.name:<{width}}  {r.units if r.units is not None else '-':>6}  {spatial}")
    click.echo(f"\n{len(rows)} layers. A container module's name reads its last layer; a unit is {model}:LAYER:UNIT.")


@main.command()
@click.option("--neuron", "neurons", multiple=True, required=True, help="A unit to evolve for (repeatable).")
@click.option("--optimizer", "optimizers", multiple=True, help="An optimizer (repeatable); default ga, cmaes, "
              "sphere-cma, random.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds 0..N-1 per cell.")
@click.option("--noise", "noises", multiple=True, help="A noise level (repeatable): none or a noise spec; "
              "default none and multiplicative:0.5.")
@click.option("--images", type=int, default=3000, show_default=True, help="Images shown per run.")
@click.option("--generator", default="dcgan", show_default=True)
@click.option("--generator-weights", default="pretrained", show_default=True)
@click.option("--weights", default="pretrained", show_default=True, help="The neurons' network weights.")
@click.option("--param", "param_pairs", multiple=True, help="OPTIMIZER:NAME=VALUE, e.g. ga:mutation_size=0.3.")
@click.option("--no-gradient", is_flag=True, help="Skip the white-box gradient reference.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Benchmark folder (re-run to finish).")
@click.option("--workers", type=int, default=1, show_default=True, help="Runs at once, each in its own process "
              "(1: one after another in this process).")
@click.option("--quiet", is_flag=True)
def bench(neurons, optimizers, seeds, noises, param_pairs, no_gradient, out, workers, quiet, **options) -> None:
    """Compare optimizers at a fixed image budget: normalised best noise-free response per unit."""
    from evolver.bench import BenchConfig, format_summary
    from evolver.bench import bench as run_bench
    from evolver.optimizers import parse_params

    params: dict[str, dict[str, str]] = {}
    for pair in param_pairs:
        optimizer, sep, rest = pair.partition(":")
        if not sep:
            raise BadInput(f"--param takes OPTIMIZER:NAME=VALUE in evolver bench (e.g. ga:mutation_size=0.3), got '{pair}'.")
        params.setdefault(optimizer, {}).update(parse_params((rest,)))
    config = BenchConfig(neurons=list(neurons), seeds=list(range(seeds)), params=params,
                         gradient_reference=not no_gradient, **options)
    if optimizers:
        config.optimizers = list(optimizers)
    if noises:
        config.noises = list(noises)
    _, summary = run_bench(config, out, progress=not quiet, workers=workers)
    click.echo(format_summary(summary))
    click.echo(f"\nTables: {out / 'bench.csv'}, {out / 'summary.csv'}; figure: {out / 'bench.html'}")


@main.command("generators")
def list_generators() -> None:
    """List the generators: code size, image size, where 'pretrained' looks for weights, and if found."""
    import generators

    for entry in generators.entries():
        if entry.plugin:
            click.echo(f"{entry.name:<16} plugin {entry.plugin}")
            continue
        where, found = entry.info["weights_location"]()
        size = entry.info["image_size"]
        click.echo(f"{entry.name:<16} code {entry.info['code_dim']:<24} image {size}×{size:<5} "
                   f"weights {'found' if found else 'MISSING'}: {where}")


@main.command("train-gan")
@click.option("--data", default="procedural", show_default=True,
              help="'procedural' (the stimulus corpus) or an image folder (ImageFolder layout).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Training folder.")
@click.option("--steps", type=int, default=3000, show_default=True, help="Generator updates.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--beta1", type=float, default=0.5, show_default=True)
@click.option("--d-steps", type=int, default=1, show_default=True, help="Discriminator updates per G update.")
@click.option("--ema", type=float, default=0.0, show_default=True,
              help="Decay of the moving average of G's weights (0 = off); the average is what is saved.")
@click.option("--ortho-init", is_flag=True, help="Orthogonal initialisation of the conv weights.")
@click.option("--ortho-reg", type=float, default=0.0, show_default=True, help="Orthogonal regularisation weight.")
@click.option("--loss", default="bce", show_default=True, help="bce (the DCGAN recipe) or hinge (SNGAN, BigGAN).")
@click.option("--spectral-norm", is_flag=True, help="Spectrally normalise D's convs and drop its batch norm (SNGAN).")
@click.option("--minibatch-std", is_flag=True, help="Give D a minibatch standard-deviation map (ProGAN).")
@click.option("--guidance", type=float, default=0.0, show_default=True,
              help="Weight in G's loss of a corpus classifier's say on the fakes (procedural data; 0 = off): "
                   "its log Inception score of each batch (against mode dropping: families confidently drawn and "
                   "evenly spread); with --conditional its cross-entropy against each fake's class weights.")
@click.option("--guide-steps", type=int, default=800, show_default=True,
              help="Training steps of the guide classifier (--guidance), trained at the start.")
@click.option("--guide-radius", type=float, default=0.0, show_default=True,
              help="Train the guide adversarially within this L2 radius (pixel units, images in [0, 1]) so that its "
                   "gradients draw what it names rather than patterns that fool it (0 = plain training).")
@click.option("--conditional", is_flag=True,
              help="A conditional DCGAN (as AC-GAN): G takes class weights beside its noise (the corpus's families, "
                   "the folder's classes), a class head on D learns to name real images and G to have its fakes "
                   "named as asked; codes gain one logit per class.")
@click.option("--conditioning", default="acgan", show_default=True,
              help="How D takes the classes with --conditional: acgan (a class head named above) or projection "
                   "(Miyato & Koyama 2018: D scores image and class together, matching each class's images; the "
                   "same head's rows are the class embedding).")
@click.option("--mode-seeking", type=float, default=0.0, show_default=True,
              help="Weight in G's loss of MSGAN's mode-seeking term (Mao et al. 2019; 0 = off): pairs of codes that "
                   "ask for the same class must give images as different as their noise, against each class being "
                   "drawn as a few images.")
@click.option("--init-from", default="",
              help="Start G, D and the average G from another training's checkpoint.pt, or G and its average from "
                   "a saved generator (generator.safetensors, the bundled weights) with D afresh.")
@click.option("--init-d-from", default="",
              help="Then take D (and its class head) from another training's checkpoint.pt, so that a generator "
                   "from --init-from meets a trained D rather than a fresh one.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weights, noise and corpus.")
@click.option("--sample-every", type=int, default=250, show_default=True, help="Steps between sample grids.")
@click.option("--checkpoint-every", type=int, default=250, show_default=True, help="Steps between checkpoints.")
@click.option("--precision", default="auto", show_default=True, help="auto, fp32 or bf16.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Processes preparing the training images (0: the training process); the images are the same.")
@click.option("--max-minutes", type=float, default=0.0, show_default=True,
              help="Stop after the step that passes this wall time (0: no limit); the step reached is saved and recorded.")
@click.option("--resume", is_flag=True, help="Continue the training in --out from its checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_gan(out, resume, quiet, **options) -> None:
    """Train the DCGAN generator on an image folder or the procedural stimulus corpus."""
    from evolver.training.gan import GANTrainingConfig
    from evolver.training.gan import train_gan as train

    weights = train(GANTrainingConfig(**options), out, resume=resume, progress=not quiet)
    click.echo(f"Generator weights: {weights}\nUse them with: evolver run --generator-weights {weights} …")


@main.command("simulate-fmri")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the subject's files.")
@click.option("--images", type=int, default=1000, show_default=True, help="Stimuli shown.")
@click.option("--voxels", type=int, default=240, show_default=True, help="Voxels, split evenly over the ROIs.")
@click.option("--snr", type=float, default=1.0, show_default=True, help="Signal sd / noise sd of one repeat.")
@click.option("--repeats", type=int, default=2, show_default=True, help="Repeats of every stimulus.")
@click.option("--model", default="stimnet", show_default=True, help="The CNN whose features the voxels pool.")
@click.option("--layers", default="relu2,relu3,relu4", show_default=True, help="One layer a ROI.")
@click.option("--rois", default="early,mid,late", show_default=True, help="ROI names, one a layer.")
@click.option("--source", default="corpus", show_default=True,
              help="corpus (procedural stimuli) or dcgan (rendered from codes written to codes.npy, for decode).")
@click.option("--format", "fmt", default="npy", show_default=True, help="npy or h5.")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_fmri(out, layers, rois, fmt, **options) -> None:
    """Write a simulated fMRI subject: images, responses (repeats × images × voxels), ROI labels, ground truth."""
    from evolver.encoding import SubjectOptions, write_subject

    described = write_subject(SubjectOptions(layers=tuple(layers.split(",")), rois=tuple(rois.split(",")),
                                             format=fmt, **options), out)
    click.echo(f"Simulated subject in {out}: {', '.join(described['files'])}.")
    if described["reference"]:
        click.echo(f"Its images as evolution references: --reference {described['reference']}")


@main.command("fit-encoder")
@click.option("--images", "images_path", required=True, type=click.Path(path_type=Path),
              help="A folder of images, or an N×H×W×3 array (.npy, .h5).")
@click.option("--responses", "responses_path", required=True, type=click.Path(path_type=Path),
              help="N × voxels or repeats × N × voxels (.npy, .h5, .csv).")
@click.option("--rois", "rois_path", type=click.Path(path_type=Path), help="One ROI label a voxel (.txt, .json, .npy).")
@click.option("--features", required=True, help="MODEL:LAYER[,LAYER...], e.g. stimnet:relu3,relu4 or resnet50:layer2,layer3.")
@click.option("--pool", type=int, default=8, show_default=True, help="Average-pool each feature map to N×N (0: none).")
@click.option("--weights", default="pretrained", show_default=True, help="The feature model's weights.")
@click.option("--pcs", type=int, default=100, show_default=True, help="Principal components a layer (0: no PCA).")
@click.option("--test-fraction", type=float, default=0.2, show_default=True, help="Held-out share of the images.")
@click.option("--images-key", help="The array's name in an HDF5 images file.")
@click.option("--responses-key", help="The array's name in an HDF5 responses file.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the model and its report.")
def fit_encoder(images_path, responses_path, rois_path, features, pool, weights, images_key, responses_key, out,
                **options) -> None:
    """Fit a voxel-wise encoding model: CNN features → PCA → z-scores → ridge (himalaya), scored on held-out images."""
    from evolver.datasets import load_images, load_responses, load_rois
    from evolver.encoding import FitOptions, roi_summary, write_fit
    from evolver.encoding import fit_encoder as fit
    from neurons.encoder import FeatureSpec

    spec = FeatureSpec.parse(features, pool=pool, weights=weights)
    responses = load_responses(responses_path, responses_key)
    rois = load_rois(rois_path, responses.shape[2]) if rois_path else None
    model = fit(load_images(images_path, images_key), responses, spec, rois, FitOptions(**options))
    write_fit(model, out)
    click.echo(roi_summary(model.info).to_string(index=False))
    click.echo(f"\nFitted in {model.info['fit']['seconds']} s ({model.info['fit']['solver']}). Model, scores.csv, "
               f"rois.csv and report.html in {out}.\nEvolve for it: evolver run --neuron encoder:{out}:roi=NAME "
               "(or :voxel=N, :voxels=A-B)")


@main.command()
@click.option("--responses", "responses_path", required=True, type=click.Path(path_type=Path),
              help="N × voxels or repeats × N × voxels (.npy, .h5, .csv).")
@click.option("--codes", "codes_path", required=True, type=click.Path(path_type=Path),
              help="The generator's codes of the N stimuli (N × code_dim, .npy or .h5).")
@click.option("--images", "images_path", type=click.Path(path_type=Path),
              help="The stimuli, if they are not the codes' renders (folder, .npy, .h5).")
@click.option("--generator", default="dcgan", show_default=True)
@click.option("--generator-weights", default="pretrained", show_default=True)
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for metrics.csv, summary.json, montage.png.")
def decode(responses_path, codes_path, images_path, out, **options) -> None:
    """The brain reader: decode generator codes from responses by ridge regression, render and score them."""
    from evolver.datasets import load_array, load_images, load_responses
    from evolver.decoding import DecodeOptions
    from evolver.decoding import decode as run_decode

    images = load_images(images_path) if images_path else None
    summary = run_decode(load_responses(responses_path), load_array(codes_path, "The codes", (2,)), images, out,
                         DecodeOptions(**options))
    click.echo(summary.T.to_string(header=False))
    click.echo(f"\nmetrics.csv, summary.json and montage.png (stimulus | its code's render | decoded) in {out}.")


@main.command("sweep")
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
@click.option("--no-wait", is_flag=True, help="slurm: submit and return; re-run the command later to finish.")
def sweep_command(spec, out, executor, workers, no_wait, **resources) -> None:
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
    from evolver.sweep import Resources, load_spec, sweep

    folder = out or Path("runs") / "sweeps" / spec.stem
    counts = sweep(load_spec(spec), folder, executor, workers, Resources(**resources), wait=not no_wait)
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items() if k != "jobs"))
    if "jobs" in counts:
        click.echo(f"Submitted jobs {', '.join(map(str, counts['jobs']))}; logs in {folder / 'logs'}.")
    click.echo(f"Sweep folder: {folder}. Read it with: evolver report {folder}")


@main.command("report")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="HTML file (default FOLDER/report.html).")
def report_command(folder, out) -> None:
    """Aggregate a sweep's runs (runs.parquet, trajectories.parquet) and write its interactive report."""
    from evolver.report import report

    path, summary = report(folder, out)
    click.echo(summary.to_string(index=False))
    click.echo(f"\nReport: {path}; tables: {folder / 'runs.parquet'}, {folder / 'trajectories.parquet'}")


@main.command("rig-sim")
@click.option("--folder", type=click.Path(path_type=Path), help="Play an XDream file-exchange rig in this folder.")
@click.option("--connect", help="Play a ZeroMQ rig connecting to evolver at this address (tcp://127.0.0.1:PORT).")
@click.option("--neuron", default="stimnet:classifier:unit7", show_default=True, help="The simulated neuron.")
@click.option("--noise", help="Its noise model (as evolver run --noise).")
@click.option("--delay", type=float, default=0.0, show_default=True, help="Seconds a block takes to present.")
@click.option("--format", "fmt", default="h5", show_default=True, help="Folder rig's response files: h5 or mat.")
@click.option("--token", help="The shared token evolver was given (ZeroMQ).")
@click.option("--log", type=click.Path(path_type=Path), help="JSON-lines file of every response sent.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--idle-exit", type=float, default=0.0, show_default=True,
              help="Stop after this many seconds without a block (0: never).")
@click.option("--crash-after", type=int, default=0, show_default=True, help="Fault: exit (status 3) after N blocks.")
@click.option("--drop", type=float, default=0.0, show_default=True, help="Fault: share of responses left out.")
@click.option("--late", type=float, default=0.0, show_default=True, help="Fault: seconds to wait before answering.")
@click.option("--twice", is_flag=True, help="Fault: send every answer twice.")
@click.option("--malformed", type=int, default=0, show_default=True, help="Fault: the first N answers are garbage.")
@click.option("--reorder", is_flag=True, help="Fault: answer the ids in a shuffled order.")
def rig_sim(folder, connect, fmt, log, crash_after, drop, late, twice, malformed, reorder, **options) -> None:
    """Play the rig for a recorded neuron (folder:PATH or zmq:ADDRESS), with faults on command."""
    from evolver.rigsim import Faults, RigSim, RigSimConfig, serve_folder, serve_zmq

    if (folder is None) == (connect is None):
        raise BadInput("rig-sim plays one rig: give --folder DIR (file exchange) or --connect tcp://HOST:PORT (ZeroMQ).")
    if fmt not in ("h5", "mat"):
        raise BadInput(f"--format {fmt}: valid formats are h5 and mat.")
    sim = RigSim(RigSimConfig(format=fmt, log=str(log) if log else None, **options),
                 Faults(crash_after, drop, late, twice, malformed, reorder))
    serve_folder(folder, sim) if folder else serve_zmq(connect, sim)


if __name__ == "__main__":
    sys.exit(main())
