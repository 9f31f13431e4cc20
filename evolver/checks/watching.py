"""What the watch page's tests, its benchmark and its screenshots share: a run paced like a rig's, a
watcher process, and headless chromium (Debian's, through Selenium's chromedriver).

    python -m evolver.checks.watching OUT GENERATIONS PACE [RUN OPTIONS as JSON]   # a paced run
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def paced_run(out: str | Path, generations: int, pace: float, **options: Any) -> None:
    """A run of the bundled stimnet unit behind a neuron that takes at least `pace` seconds a generation,
    as a rig's block does."""
    import evolver
    import neurons

    unit = neurons.create("stimnet:classifier:unit7")

    def paced(images):
        time.sleep(pace)
        return unit.respond(images, [str(i) for i in range(len(images))])

    evolver.run(neuron=paced, generations=generations, out=out, progress=False, **{"retest": "none", **options})


def start_paced_run(out: Path, generations: int, pace: float, **options: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evolver.checks.watching", str(out), str(generations), str(pace),
                             json.dumps(options)], env={**os.environ, "HF_HUB_OFFLINE": "1"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_watcher(*paths: Path) -> tuple[subprocess.Popen, str]:
    """An `evolver watch` process serving `paths` on a free port, and its address."""
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "evolver", "watch", *map(str, paths), "--port", str(port)],
                             stderr=subprocess.PIPE, text=True)
    line = child.stderr.readline()
    if not line.startswith("Watching"):
        child.wait()
        raise RuntimeError(f"the watcher did not start: {line}{child.stderr.read()}")
    return child, f"http://127.0.0.1:{port}"


def headless_chromium(width: int = 1300, height: int = 1100):
    """A Selenium driver of Debian's chromium, headless (tests/browser/install.sh installs it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def wait_for(what, timeout: float = 60.0, every: float = 0.1):
    """The first true value of what(), polled every `every` s (an exception counts as not yet: an element not
    drawn yet); TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = what()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"not seen within {timeout} s")


if __name__ == "__main__":
    paced_run(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), **json.loads(sys.argv[4] if len(sys.argv) > 4 else "{}"))
