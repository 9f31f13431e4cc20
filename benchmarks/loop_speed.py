"""How fast the loop runs against the speed of its forward passes, in one run on one machine.

    python benchmarks/loop_speed.py [--model resnet50] [--layer layer4] [--cut-layer layer2]
                                    [--generations 200] [--population 40] [--device auto]
                                    [--rss-generations 1000] [--compile] [--smoke]

Prints, for the bundled DCGAN → MODEL (random weights) LAYER, centre unit 0:
  (a) images/s of the raw generator + neuron forward at the run's batch size (CMA-ES's population,
      40 as in Wang & Ponce 2022);
  (b) images/s of `evolver run` end to end (ask, render, respond, tell, records);
  (c) images/s of a naive loop in the style of the anchors: fp32, NCHW, the full network, the whole
      population in one batch, scores pulled to numpy every generation;
  the cut network against the full one for a unit of CUT_LAYER; and (d) the resident memory of an
  `evolver run` subprocess of RSS_GENERATIONS generations (a small run: DCGAN → stimnet), at
  generation 100 (or half-way, in a shorter run) and at the end. Ratios beside the absolute figures. With --compile, (a), (b) and the
  cut comparison run the neuron compiled (`evolver run --compile`); the naive loop never is.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import generators
import neurons
from evolver import RunConfig, run
from evolver import optimizers
from evolver_common import resolve_device
from neurons.models import build_model


def images_per_second(step, images_per_step: int, seconds: float = 8.0) -> float:
    step()  # warm-up: lazy initialisation, first-call kernels
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += images_per_step
    return done / (time.perf_counter() - started)


def model_neuron(spec: str, device: str, compiled: bool) -> neurons.Neuron:
    neuron = neurons.create(spec, weights="random", device=device)
    if compiled:
        neuron.compile()
    return neuron


def raw_forward(spec: str, device: str, batch: int, compiled: bool, seconds: float) -> float:
    generator = generators.create("dcgan", device=device)
    neuron = model_neuron(spec, device, compiled)
    codes = generator.sample(batch, np.random.default_rng(0))
    return images_per_second(lambda: neuron(generator.render(codes)), batch, seconds)


def end_to_end(spec: str, device: str, generations: int, population: int,
               compiled: bool) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(neuron=spec, weights="random", generations=2, device=device, compile=compiled,
                           params={"population": population})
        run(config, out=Path(tmp) / "warm", progress=False)  # caches, first kernels
        config.generations = generations
        started = time.perf_counter()
        result = run(config, out=Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - started
        rows = np.loadtxt(result.path / "generations.csv", delimiter=",", skiprows=1, usecols=(1, 6))
    # generations.csv's `seconds`: ask to tell of each generation, so the second figure leaves out the
    # run's setup, the first generation (a compile happens there) and the closing plot
    shown, steady = rows[:, 0].sum(), rows[1:, 0].sum() / rows[1:, 1].sum()
    return shown / seconds, steady, int(shown) // generations


def naive_loop(model: str, layer: str, device: str, population: int, seconds: float) -> float:
    """The anchors' way: fp32, NCHW, the whole network, numpy scores each generation."""
    generator = generators.create("dcgan", device=device, precision="fp32")
    generator.network = generator.network.to(memory_format=torch.contiguous_format)
    network, _, _ = build_model(model, "random")
    network = network.eval().to(device)
    captured = {}
    dict(network.named_modules())[layer].register_forward_hook(lambda module, args, out: captured.__setitem__("out", out))
    optimizer = optimizers.create("cmaes", code_dim=generator.code_dim, sample=generator.sample, rng=np.random.default_rng(0),
                                  population=population)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def generation():
        codes = optimizer.ask()
        with torch.no_grad():
            images = generator.differentiable(torch.as_tensor(codes, device=device))
            images = torch.nn.functional.interpolate(images, size=224, mode="bilinear", align_corners=False)
            network((images - mean) / std)  # the whole network, though only `layer` is read
        out = captured["out"]
        scores = out[:, 0, out.shape[2] // 2, out.shape[3] // 2].cpu().numpy()
        optimizer.tell(codes, scores.astype(np.float64))

    return images_per_second(generation, len(optimizer.ask()), seconds)


def cut_against_full(model: str, layer: str, final_layer: str, device: str, batch: int,
                     compiled: bool, seconds: float) -> tuple[float, float]:
    images = torch.rand(batch, 3, 64, 64)
    cut = model_neuron(f"{model}:{layer}:unit0", device, compiled)
    deepest = model_neuron(f"{model}:{final_layer}:unit0", device, compiled)
    return images_per_second(lambda: cut(images), batch, seconds), images_per_second(lambda: deepest(images), batch,
                                                                                     seconds)


def resident_memory(generations: int) -> tuple[int, float, float, float]:
    """The generation of the first figure (100, or half a shorter run) and the RSS (MB) of an `evolver run`
    there and at the end, and its peak, sampled from /proc."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        process = subprocess.Popen([sys.executable, "-m", "evolver", "run", "--neuron", "stimnet:relu4:unit1",
                                    "--generations", str(generations), "--out", str(out), "--quiet"],
                                   stdout=subprocess.DEVNULL)
        samples = []  # (generations done, RSS MB)
        while process.poll() is None:
            try:
                rss = next(int(line.split()[1]) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS")) / 1024
                done = max(0, sum(1 for _ in open(out / "generations.csv")) - 1) if (out / "generations.csv").exists() else 0
            except (FileNotFoundError, StopIteration, ProcessLookupError):
                break
            samples.append((done, rss))
            time.sleep(0.05)
    early = min(100, generations // 2)
    at_early = next(rss for done, rss in samples if done >= early)
    # the last generations, before the trajectory figure is drawn (plotly's import is ~80 MB)
    late = [rss for done, rss in samples if generations - 50 <= done < generations]
    return early, at_early, late[-1], max(rss for _, rss in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--cut-layer", default="layer2")
    parser.add_argument("--final-layer", default="fc")
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--population", type=int, default=40, help="CMA-ES population: the batch of every pass")
    parser.add_argument("--rss-generations", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="the neuron compiled, as `evolver run --compile`")
    parser.add_argument("--seconds", type=float, default=8.0, help="time each images/s figure is measured over")
    parser.add_argument("--smoke", action="store_true", help="resnet18, 4 images a generation, tiny runs: checks "
                        "that the benchmark runs; its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.layer, args.cut_layer, args.final_layer = "resnet18", "layer2", "layer1", "fc"
        args.generations, args.population, args.rss_generations, args.seconds = 3, 4, 60, 0.1
    spec = f"{args.model}:{args.layer}:unit0"
    device = str(resolve_device(args.device))
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"neuron {'compiled' if args.compile else 'not compiled'}")
    e2e, steady, batch = end_to_end(spec, device, args.generations, args.population, args.compile)
    raw = raw_forward(spec, device, batch, args.compile, args.seconds)
    naive = naive_loop(args.model, args.layer, device, args.population, args.seconds)
    print(f"(a) raw DCGAN + {spec} forward, batch {batch}: {raw:.1f} images/s")
    print(f"(b) evolver run end to end: {e2e:.1f} images/s = {e2e / raw:.2f}x the raw forward; generations after "
          f"the first, ask to tell: {steady:.1f} images/s = {steady / raw:.2f}x")
    print(f"(c) naive loop (fp32, NCHW, full network): {naive:.1f} images/s; evolver run is {e2e / naive:.2f}x it")
    cut, full = cut_against_full(args.model, args.cut_layer, args.final_layer, device, args.population, args.compile,
                                 args.seconds)
    print(f"    {args.model}:{args.cut_layer} cut there: {cut:.1f} images/s; through {args.final_layer}: {full:.1f} "
          f"images/s ({cut / full:.2f}x)")
    if args.rss_generations:
        early, at_early, at_end, peak = resident_memory(args.rss_generations)
        print(f"(d) RSS of a {args.rss_generations}-generation run: {at_early:.0f} MB at generation {early}, {at_end:.0f} "
              f"MB at the end (growth {at_end - at_early:+.0f} MB), peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
