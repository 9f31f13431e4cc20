"""Two optimizers compared in one session (their images interleaved in each block) and in separate runs
(docs/sessions.md): the same ranking? and what the session costs in wall time.

    python benchmarks/session_vs_separate.py [--units 0-5] [--seeds 2] [--generations 100]
                                             [--noise multiplicative:0.5] [--out /tmp/session-bench] [--smoke]

For each unit of stimnet's classifier and each seed: a session of two threads (uh-cmaes and ga, on the bundled
DCGAN) and the same two optimizers as two separate runs, with the same seed and noise. A run's score is the
noise-free response of the image it returns. Printed: each cell's scores, the mean score per optimizer in
each mode, how many cells rank the optimizers alike, and the wall time of a session against its two runs.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

import evolver
from neurons.spec import index_set

OPTIMIZERS = ("uh-cmaes", "ga")
SMOKE = {"units": "0", "seeds": 1, "generations": 3}


def noise_free_best(path: Path) -> float:
    """The noise-free response of the image a run returns."""
    return float(evolver.open_run(path).best.clean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", default="0-5")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--noise", default="multiplicative:0.5")
    parser.add_argument("--out", type=Path, default=Path("/tmp/session-bench"))
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes, to check that the script runs.")
    args = parser.parse_args()
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    shutil.rmtree(args.out, ignore_errors=True)
    units = index_set(args.units, args.units, "--units takes unit numbers, e.g. 0-5")
    scores = {mode: {o: [] for o in OPTIMIZERS} for mode in ("session", "separate")}
    seconds = {"session": [], "separate": []}
    alike = 0
    evolver.run(neuron="stimnet:classifier:unit0", generations=2, out=args.out / "warm-up", progress=False)  # loads
    for unit in units:
        for seed in range(args.seeds):
            options = dict(neuron=f"stimnet:classifier:unit{unit}", generations=args.generations, seed=seed,
                           noise=args.noise, progress=False)
            started = time.perf_counter()
            threads = evolver.run(out=args.out / f"unit{unit}-seed{seed}-session",
                                  threads=[{"optimizer": o} for o in OPTIMIZERS], **options)
            seconds["session"].append(time.perf_counter() - started)
            started = time.perf_counter()
            runs = [evolver.run(out=args.out / f"unit{unit}-seed{seed}-{o}", optimizer=o, **options)
                    for o in OPTIMIZERS]
            seconds["separate"].append(time.perf_counter() - started)
            cell = {}
            for mode, results in (("session", threads), ("separate", runs)):
                cell[mode] = [noise_free_best(r.path) for r in results]
                for o, score in zip(OPTIMIZERS, cell[mode]):
                    scores[mode][o].append(score)
            same = np.argmax(cell["session"]) == np.argmax(cell["separate"])
            alike += bool(same)
            named = {mode: ", ".join(f"{o} {s:.2f}" for o, s in zip(OPTIMIZERS, cell[mode])) for mode in cell}
            print(f"unit {unit} seed {seed}: session {named['session']}; separate {named['separate']}; "
                  f"{'same' if same else 'other'} winner; {seconds['session'][-1]:.1f} s against "
                  f"{seconds['separate'][-1]:.1f} s", flush=True)
    cells = len(units) * args.seeds
    print(f"\n{cells} cells ({len(units)} units x {args.seeds} seeds, {args.generations} generations, "
          f"noise {args.noise}):")
    for mode in scores:
        means = ", ".join(f"{o} {np.mean(scores[mode][o]):.2f}" for o in OPTIMIZERS)
        wins = sum(a > b for a, b in zip(*scores[mode].values()))
        print(f"  {mode:>8}: mean noise-free best {means}; {OPTIMIZERS[0]} ahead in {wins} of {cells} cells")
    print(f"  the same winner in {alike} of {cells} cells")
    total = {m: sum(s) for m, s in seconds.items()}
    print(f"  wall time: sessions {total['session']:.1f} s, separate runs {total['separate']:.1f} s "
          f"(session / separate = {total['session'] / total['separate']:.2f})")


if __name__ == "__main__":
    main()
