"""64 units of one layer evolved in one run (one batch a generation) against 64 single-unit runs one
after another: images/s and wall time.

    python benchmarks/many_units.py [--units stimnet:relu4:unit0-63] [--generations 30]
                                  [--weights W] [--device auto] [--smoke]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from evolver import RunConfig, run
from neurons.spec import UnitSpec


def images_shown(paths) -> int:
    return sum(sum(int(line.split(",")[1]) for line in list(open(p / "generations.csv"))[1:]) for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", default="stimnet:relu4:unit0-63")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--weights", default=None, help="e.g. random, for a model whose weights are not here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="3 units, 2 generations: checks that the benchmark runs; "
                        "its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.units, args.generations = "stimnet:relu4:unit0-2", 2
    unit_set = UnitSpec.parse(args.units)
    settings = {"device": args.device, **({"weights": args.weights} if args.weights else {})}
    singles_of = [RunConfig(neuron=str(UnitSpec(unit_set.model, unit_set.layer, u, unit_set.position)),
                            generations=args.generations, **settings) for u in unit_set.units]
    with tempfile.TemporaryDirectory() as tmp:
        # the bf16 verdict cached and the first kernels run before either side is timed
        run(dataclasses.replace(singles_of[0], generations=2), out=Path(tmp) / "warm", progress=False)
        started = time.perf_counter()
        together = run(RunConfig(neuron=args.units, generations=args.generations, **settings),
                             Path(tmp) / "set", progress=False)
        set_seconds = time.perf_counter() - started
        set_images = images_shown(r.path for r in together)
        started = time.perf_counter()
        singles = [run(config, out=Path(tmp) / f"single{i}", progress=False) for i, config in enumerate(singles_of)]
        single_seconds = time.perf_counter() - started
        single_images = images_shown(r.path for r in singles)
    print(f"{len(together)} units, {args.generations} generations each")
    print(f"one run, one batch a generation: {set_seconds:.1f} s, {set_images / set_seconds:.0f} images/s")
    print(f"{len(singles)} single-unit runs one after another: {single_seconds:.1f} s, "
          f"{single_images / single_seconds:.0f} images/s")
    print(f"wall time {set_seconds / single_seconds:.2f}x; images/s {set_images / set_seconds / (single_images / single_seconds):.2f}x")


if __name__ == "__main__":
    main()
