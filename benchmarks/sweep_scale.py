"""How long a sweep of 1,000 finished small runs takes to plan (and find every run finished) and to
aggregate and report.

    python benchmarks/sweep_scale.py [--runs-root /tmp/sweep-scale] [--smoke]

The 1,000 run folders are copies of one real 20-generation run (stimnet, CMA-ES), each given the
configuration of its cell: reading them costs what reading 1,000 real runs costs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from evolver import RunConfig, run
from evolver.report import report
from evolver.aggregate import aggregate
from evolver.sweep import check_spec, sweep, write_plan

UNITS, GENERATIONS = 50, 20  # 50 units x 4 optimizers x 5 seeds: 1,000 runs
SMOKE_UNITS, SMOKE_GENERATIONS = 1, 2


def sweep_spec(units: int, generations: int) -> dict:
    return {"grid": {"neuron": [f"stimnet:relu4:unit{u}" for u in range(units)],
                     "optimizer": ["cmaes", "ga", "random", "sphere-cma"], "seed": [0, 1, 2, 3, 4]},
            "run": {"generations": generations}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-root", type=Path, default=Path("/tmp/sweep-scale"))
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_UNITS * 20} runs of {SMOKE_GENERATIONS} "
                        "generations: checks that the benchmark runs; its figures mean nothing")
    args = parser.parse_args()
    units, generations = (SMOKE_UNITS, SMOKE_GENERATIONS) if args.smoke else (UNITS, GENERATIONS)
    shutil.rmtree(args.runs_root, ignore_errors=True)
    template = run(RunConfig(neuron="stimnet:relu4:unit0", generations=generations), out=args.runs_root / "template",
                   progress=False).path
    folder = args.runs_root / "sweep"
    folder.mkdir(parents=True)
    spec = check_spec(sweep_spec(units, generations))
    for planned in write_plan(spec, folder):
        shutil.copytree(template, folder / planned.path)
        config = json.loads((folder / planned.path / "config.json").read_text())
        config["run"] = planned.config
        (folder / planned.path / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    counts = sweep(spec, folder)
    planning = time.perf_counter() - started
    started = time.perf_counter()
    found = aggregate(folder)
    aggregating = time.perf_counter() - started
    started = time.perf_counter()
    report(folder)
    reporting = time.perf_counter() - started
    print(f"runs: {counts['planned']} planned, {counts['skipped']} found finished")
    print(f"plan + status of every run: {planning:.2f} s")
    print(f"aggregate ({len(found.runs)} runs, {len(found.trajectories)} trajectory rows, parquet written): "
          f"{aggregating:.2f} s")
    print(f"report (aggregate again + the HTML page): {reporting:.2f} s")
    print(f"plan + aggregate: {planning + aggregating:.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()
