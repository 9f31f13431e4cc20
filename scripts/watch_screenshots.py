"""The screenshots of docs/watch.md, taken in headless chromium from real runs being watched.

    python scripts/watch_screenshots.py [--out docs/images] [--smoke]

A folder holds a small sweep (2 optimizers x 2 seeds), a run killed part-way, a run paced like a rig
session (noise, reference images interleaved in every block) and a session of two threads (the bundled DCGAN
and `stimuli` with the GA). `evolver watch` serves the folder; the run's page is taken while the paced run is
under way (watch_run.png), the session's while its threads go on (watch_session.png), then the page of all
runs (watch_runs.png).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from evolver.checks.watching import headless_chromium, start_paced_run, start_watcher, wait_for
from evolver.records import is_run_folder
from evolver.sweep import sweep
from evolver.watch_data import Feed

FULL = {"sweep_generations": 30, "session": 150, "shot_at": 50, "threads": 2000, "threads_shot_at": 60}
SMOKE = {"sweep_generations": 2, "session": 12, "shot_at": 3, "threads": 400, "threads_shot_at": 3}


def generation(folder: Path) -> int:
    return Feed(folder).generation if is_run_folder(folder) else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--smoke", action="store_true", help="tiny runs: checks that the script runs")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    lab = Path(tempfile.mkdtemp(prefix="watch-shots-"))
    sweep({"grid": {"neuron": ["stimnet:relu4:unit1"], "optimizer": ["ga", "cmaes"], "seed": [0, 1]},
           "run": {"generations": sizes["sweep_generations"]}}, lab / "sweep-relu4", "local", workers=2)
    killed = start_paced_run(lab / "killed", 200, 0.1)
    wait_for(lambda: generation(lab / "killed") >= 2, timeout=120)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    session = start_paced_run(lab / "session", sizes["session"], 0.25, noise="multiplicative:0.5",
                              reference="procedural:8", interleave=2)
    threads = subprocess.Popen([sys.executable, "-m", "evolver", "run", "--generations", str(sizes["threads"]),
                                "--quiet", "--out", str(lab / "threads"), "--thread", "generator=dcgan",
                                "--thread", "generator=stimuli,optimizer=ga"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    watcher, address = start_watcher(lab)
    driver = headless_chromium(1300, 1500)
    try:
        wait_for(lambda: generation(lab / "session") >= sizes["shot_at"], timeout=300)
        driver.get(f"{address}/run/0/session")
        wait_for(lambda: driver.find_elements("css selector", "#shown img"), timeout=60)
        args.out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out / "watch_run.png"))
        wait_for(lambda: generation(lab / "threads" / "thread1") >= sizes["threads_shot_at"], timeout=300)
        driver.get(f"{address}/session/0/threads")
        wait_for(lambda: len(driver.find_elements("css selector", "#session-threads img")) == 2, timeout=60)
        driver.set_window_size(1300, 900)
        driver.save_screenshot(str(args.out / "watch_session.png"))
        driver.get(address)
        wait_for(lambda: len(driver.find_elements("css selector", "#runs tr")) == 10, timeout=60)
        driver.set_window_size(1300, 680)
        driver.save_screenshot(str(args.out / "watch_runs.png"))
    finally:
        driver.quit()
        session.kill()
        threads.kill()
        watcher.send_signal(signal.SIGTERM)
        watcher.wait()
    print(f"wrote {args.out / 'watch_run.png'}, {args.out / 'watch_session.png'} and {args.out / 'watch_runs.png'} "
          f"from the runs in {lab}")


if __name__ == "__main__":
    main()
