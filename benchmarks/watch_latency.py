"""What a watcher costs and how fast its page follows a run (`evolver watch`, docs/watch.md).

    python benchmarks/watch_latency.py [--generations 100] [--pace 0.3] [--long-generations 2000]
                                       [--speed-generations 300] [--repeats 3] [--out /tmp/watch-bench] [--smoke]

(a) Latency: a run whose neuron takes --pace seconds a generation is watched in headless chromium (Debian's,
    through Selenium); the page's generation counter is timed in the page (a MutationObserver) and each
    generation's commit by the time its state file was written. Printed: the median, 90th percentile and
    largest delay over --generations generations, and the bytes the page fetched a generation.
(b) A long run: the page of a run past --long-generations generations (on the bundled defaults, still
    running): the time to draw its whole trajectory, and the bytes each update fetches after that.
(c) Cost: `evolver run` on the bundled defaults for --speed-generations generations, alone and with a
    watcher with no page open, and with a watcher serving it to a page open in headless chromium on this
    machine, alternated --repeats times: images/s of each, from the run folder's
    making to its last commit (the process's start-up left out).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from evolver.checks.watching import headless_chromium, start_paced_run, start_watcher, wait_for

SMOKE = {"generations": 4, "pace": 0.3, "speed_generations": 5, "repeats": 1, "long_generations": 10}


def commits(state: Path, times: list[float], stop: threading.Event) -> None:
    """Appends the time each new state file was written (a commit, one a generation), polled every 2 ms."""
    seen = None
    while not stop.is_set():
        try:
            stat = state.stat()
            now = (stat.st_mtime_ns, stat.st_ino)
            if now != seen:
                seen = now
                times.append(stat.st_mtime_ns / 1e9)
        except OSError:
            pass
        time.sleep(0.002)


OBSERVE = """
window.seen = [];
const counts = document.getElementById('counts');
new MutationObserver(() => window.seen.push([Date.now() / 1000, counts.textContent])).observe(
    counts, {childList: true, characterData: true, subtree: true});
"""


UPDATES = ("return performance.getEntriesByType('resource')"
           ".filter(e => e.name.includes('_dash-update-component')).map(e => e.encodedBodySize);")
POINTS = ("const g = document.querySelector('#trajectory .js-plotly-plot');"
          "return g && g.data ? g.data[2].x.length : 0;")


def latency(out: Path, generations: int, pace: float) -> None:
    """The page is opened on the run's folder before the run starts (it waits, then follows the run)."""
    committed, stop = [], threading.Event()
    watcher, address = start_watcher(out)
    driver = headless_chromium()
    driver.get(address)
    thread = threading.Thread(target=commits, args=(out / "state" / "state.npz", committed, stop), daemon=True)
    thread.start()
    run = start_paced_run(out, 100_000, pace)  # stopped once the page has followed `generations` of them
    try:
        wait_for(lambda: driver.find_element("id", "counts").text, timeout=120)  # the run's page, once made
        driver.execute_script(OBSERVE)
        first = int(re.match(r"(\d+) of", driver.find_element("id", "counts").text).group(1))
        wait_for(lambda: len(committed) > first + generations, timeout=generations * pace * 4 + 60)
        time.sleep(2)
        stop.set()
        seen = driver.execute_script("return window.seen;")
        fetched = driver.execute_script(UPDATES)
    finally:
        run.kill()
        driver.quit()
        watcher.send_signal(signal.SIGTERM)
        watcher.wait()
    shown = [(int(re.match(r"(\d+) of", text).group(1)), at) for at, text in seen]
    # committed[k] is generation k's commit; the page has drawn it once it shows k + 1 generations done or more
    # (two commits within one of its requests are drawn together)
    delays = np.array([next(at for done, at in shown if done >= k + 1) - committed[k]
                       for k in range(first, len(committed)) if any(done >= k + 1 for done, _ in shown)])
    delays = delays[:generations]
    print(f"(a) latency over {len(delays)} generations (one every ~{pace} s): median {np.median(delays):.3f} s, "
          f"90th percentile {np.percentile(delays, 90):.3f} s, largest {delays.max():.3f} s")
    print(f"    update requests: {len(fetched)}, median {np.median(fetched):,.0f} bytes, "
          f"largest {max(fetched):,} bytes (the first sends the whole trajectory)")


def long_run(out: Path, generations: int) -> None:
    """The page of a run past `generations` generations: how long it takes to draw the whole trajectory while
    the run goes on at full speed (both cores busy) and what each update then fetches; and, the run stopped,
    how long a reload takes."""
    from evolver.records import is_run_folder
    from evolver.watch_data import Feed

    run = subprocess.Popen([sys.executable, "-m", "evolver", "run", "--generations", str(3 * generations), "--out",
                            str(out), "--quiet", "--retest", "none"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                           stdout=subprocess.DEVNULL)
    watcher = driver = None
    try:
        wait_for(lambda: is_run_folder(out) and Feed(out).generation >= generations, timeout=generations + 120)
        watcher, address = start_watcher(out)
        driver = headless_chromium()
        drawn, points = draw(driver, address, generations)
        loaded = len(driver.execute_script(UPDATES))
        time.sleep(5)
        fetched = driver.execute_script(UPDATES)[loaded:]
        still = run.poll() is None
        run.kill()
        run.wait()
        again, total = draw(driver, address, Feed(out).generation + 1)
    finally:
        run.kill()
        if driver is not None:
            driver.quit()
        if watcher is not None:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait()
    print(f"(b) a run at {points:,} generations{' and going on' if still else ''}: its page drawn in {drawn:.2f} s; "
          f"then {len(fetched)} updates in 5 s, median {np.median(fetched):,.0f} bytes, largest {max(fetched):,} bytes")
    print(f"    stopped at {total:,} generations: the page reloaded and drawn in {again:.2f} s")


def draw(driver, address: str, generations: int) -> tuple[float, int]:
    """Seconds from opening the page to a trajectory of at least `generations` points, and the points."""
    started = time.monotonic()
    driver.get(address)
    points = wait_for(lambda: driver.execute_script(POINTS) >= generations and driver.execute_script(POINTS),
                      timeout=120)
    return time.monotonic() - started, points


def speed(out: Path, generations: int, repeats: int) -> None:
    results = {"alone": [], "watcher, no page open": [], "watched": []}
    for repeat in range(repeats):
        for how in results:
            folder = out / f"speed-{how.split(',')[0]}-{repeat}"
            command = [sys.executable, "-m", "evolver", "run", "--generations", str(generations), "--out", str(folder),
                       "--quiet", "--retest", "none"]
            driver = watcher = None
            if how != "alone":  # the page is open before the run starts, and follows it once its folder is made
                watcher, address = start_watcher(folder)
            if how == "watched":
                driver = headless_chromium()
                driver.get(address)
            subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
            # from the folder's making to the last commit: the evolution, not the start-up of the process
            seconds = (folder / "state" / "state.npz").stat().st_mtime - (folder / "config.json").stat().st_mtime
            images = sum(1 for _ in open(folder / "scores.csv")) - 1
            results[how].append(images / seconds)
            if driver is not None:
                driver.quit()
            if watcher is not None:
                watcher.send_signal(signal.SIGTERM)
                watcher.wait()
    for how, rates in results.items():
        print(f"(c) evolver run, {generations} generations, {how}: "
              f"{', '.join(f'{r:,.0f}' for r in rates)} images/s (mean {np.mean(rates):,.0f})")
    print(f"    watched / alone: {np.mean(results['watched']) / np.mean(results['alone']):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--pace", type=float, default=0.3)
    parser.add_argument("--speed-generations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-generations", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/watch-bench"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    print(json.dumps({k: str(v) for k, v in vars(args).items()}))
    latency(args.out / "paced", args.generations, args.pace)
    long_run(args.out / "long", args.long_generations)
    speed(args.out, args.speed_generations, args.repeats)


if __name__ == "__main__":
    main()
