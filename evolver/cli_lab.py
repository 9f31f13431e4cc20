"""The `evolver` commands for a lab's other work: training the GAN, simulating and fitting fMRI encoding
models, decoding, and the rig simulator; thin wrappers like the rest of `evolver.cli`."""
from __future__ import annotations

from pathlib import Path

import click

from evolver_common import BadInput


@click.command("train-gan", short_help="Train the DCGAN on images or the stimulus corpus.")
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


@click.command("simulate-fmri", short_help="Write a simulated fMRI subject.")
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


@click.command("fit-encoder", short_help="Fit a voxel-wise encoding model (features → ridge).")
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


@click.command(short_help="Decode generator codes from responses (ridge).")
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
    click.echo(f"\nmetrics.csv, summary.json and montage.png (columns: stimulus, its code rendered, decoded) in {out}.")


@click.command("rig-sim", short_help="Play a rig (folder or ZeroMQ), with faults on command.")
@click.option("--folder", type=click.Path(path_type=Path), help="Play an XDream file-exchange rig in this folder.")
@click.option("--connect", help="Play a ZeroMQ rig connecting to evolver at this address (tcp://127.0.0.1:PORT).")
@click.option("--neuron", default="stimnet:classifier:unit7", show_default=True, help="The simulated neuron.")
@click.option("--noise", help="Its noise model (as evolver run --noise).")
@click.option("--delay", type=float, default=0.0, show_default=True, help="Seconds a block takes to present.")
@click.option("--format", "fmt", default="h5", show_default=True, help="Folder rig's response files: h5 or mat.")
@click.option("--token", help="The shared token evolver was given (ZeroMQ).")
@click.option("--token-env", help="The environment variable holding that token (kept off the command line).")
@click.option("--log", type=click.Path(path_type=Path), help="JSON-lines file of every response sent.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--channels", type=int, default=1, show_default=True, help="Play an array of this many channels: the "
              "neuron's unit and the next ones of its layer (stimnet:relu4:unit0 with 16: units 0-15).")
@click.option("--silent", type=int, help="Channels of the array that answer zero, chosen by --seed (default: a quarter).")
@click.option("--idle-exit", type=float, default=0.0, show_default=True,
              help="Stop after this many seconds without a block (0: never).")
@click.option("--crash-after", type=int, default=0, show_default=True, help="Fault: exit (status 3) after N blocks.")
@click.option("--drop", type=float, default=0.0, show_default=True, help="Fault: share of responses left out.")
@click.option("--late", type=float, default=0.0, show_default=True, help="Fault: seconds to wait before answering.")
@click.option("--twice", is_flag=True, help="Fault: send every answer twice.")
@click.option("--malformed", type=int, default=0, show_default=True, help="Fault: the first N answers are garbage.")
@click.option("--reorder", is_flag=True, help="Fault: answer the ids in a shuffled order.")
@click.option("--in-place", is_flag=True, help="Folder rig: write each h5 response file in place, slowly (as "
              "MATLAB's save and h5py do), instead of through a renamed temporary file.")
@click.option("--scores", type=click.Path(path_type=Path), help="Folder rig: write responses to this folder "
              "(XDream's separate score folder; evolver's neuron then takes :scores=DIR).")
def rig_sim(folder, connect, fmt, log, crash_after, drop, late, twice, malformed, reorder, in_place, scores,
            **options) -> None:
    """Play the rig for a recorded neuron (folder:PATH or zmq:ADDRESS), with faults on command."""
    from evolver.rigsim import Faults, RigSim, RigSimConfig, serve_folder, serve_zmq

    if (folder is None) == (connect is None):
        raise BadInput("rig-sim plays one rig: give --folder DIR (file exchange) or --connect tcp://HOST:PORT (ZeroMQ).")
    if fmt not in ("h5", "mat"):
        raise BadInput(f"--format {fmt}: valid formats are h5 and mat.")
    from neurons.rig_zmq import rig_token

    options["token"] = rig_token(options["token"], options.pop("token_env"), "rig-sim --token")
    if in_place and fmt != "h5":
        raise BadInput("--in-place writes h5 response files; give --format h5.")
    sim = RigSim(RigSimConfig(format=fmt, log=str(log) if log else None, scores=str(scores) if scores else None,
                              **options),
                 Faults(crash_after, drop, late, twice, malformed, reorder, in_place))
    serve_folder(folder, sim) if folder else serve_zmq(connect, sim)


@click.command("watch", short_help="Serve a live page of runs: a run, a unit set, a sweep or a folder of runs.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than a loopback one needs --token-env.")
@click.option("--port", type=int, default=8050, show_default=True)
@click.option("--token-env", help="The environment variable holding the token every request must carry "
              "(?token=… once; the page keeps it in a cookie).")
@click.option("--until-stdin-closes", is_flag=True, hidden=True)  # `evolver run --watch`'s child: ends with its run
def watch(paths, host, port, token_env, until_stdin_closes) -> None:
    """Serve a page that shows runs as they happen (default: the runs/ folder), read-only, until Ctrl-C."""
    import os

    from evolver.watch import serve

    paths = list(paths) or [Path("runs")]
    if not until_stdin_closes:  # the run that starts its own watcher makes its folder after
        missing = [str(p) for p in paths if not p.is_dir() and not (p.parent.is_dir() and not p.exists())]
        if missing:
            raise BadInput(f"evolver watch: {', '.join(missing)} is not a folder. Give run folders, a unit set's or "
                           "a sweep's folder, or a folder of runs (default runs/); a folder not made yet, inside "
                           "one that is, is waited for.")
    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise BadInput(f"--token-env {token_env}: the variable is not set or empty; set it to a secret first.")
    serve(paths, host, port, token, until_stdin_closes, announce=lambda line: click.echo(line, err=True),
          yield_to_runs=True)


COMMANDS = (train_gan, simulate_fmri, fit_encoder, decode, rig_sim, watch)
