"""`evolver watch`: the page that shows runs as they happen (docs/watch.md).

The fast tests check what the server reads and refuses without a browser; the `browser` tests drive
Debian's chromium headless through Selenium (.ci/run installs both) against a real watcher process."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from unittest.mock import ANY

import numpy as np
import pytest

import evolver
from conftest import evolver_cli
from evolver.checks.watching import free_port, headless_chromium, start_paced_run, start_watcher, wait_for
from evolver.watch_data import Feed, Feeds, Served, find_runs
from evolver_common import BadInput, FolderLock

def committed(loop) -> None:
    loop.writer.submit(lambda: None).result()  # the background writer (one thread) has written what came before


def test_the_served_folders_bound_what_a_page_may_name(finished_run, tmp):
    folder = tmp / "runs"
    shutil.copytree(finished_run, folder / "a")
    (tmp / "outside").mkdir()
    (folder / "link").symlink_to(tmp / "outside")
    (folder / ".hidden.x.creating").mkdir()
    served = Served([folder])
    assert [key for key, _ in served.runs()] == ["0/a"]  # links and runs being made are left out
    assert served.folder("0/a") == (folder / "a").resolve()
    for key, message in (("0/../outside", "outside the served folder"), ("0/link", "outside the served folder"),
                         ("0/nothing", "is not a run folder"), ("1/a", "names none of the served folders"),
                         ("x", "names none of the served folders")):
        with pytest.raises(BadInput, match=message):
            served.folder(key)
    assert served.file("0/a", "images/gen_0001.png").name == "gen_0001.png"
    for name in ("config.json", "images/../config.json", "../best.png"):
        with pytest.raises(BadInput, match="is not a picture"):
            served.file("0/a", name)
    (folder / "a" / "best.png").unlink()
    (folder / "a" / "best.png").symlink_to(tmp / "outside" / "secret.png")
    shutil.move(folder / "a" / "images", tmp / "outside" / "images")
    (folder / "a" / "images").symlink_to(tmp / "outside" / "images")
    for name in ("best.png", "images/gen_0001.png"):
        with pytest.raises(BadInput, match="is a link or not a plain file"):
            served.file("0/a", name)


def test_a_feed_reads_each_committed_row_once_as_the_run_goes_on(tmp):
    from evolver.watch import traces

    with evolver.start(generations=6, out=tmp / "run", retest="none", noise="multiplicative:0.5",
                       reference="procedural:4", interleave=2) as loop:
        assert [c for _, c in traces(Feed(tmp / "run"))] == ["best", "mean", "best_so_far", "returned",
                                                               "best_clean_so_far", "references"]  # before gen 0
        loop.step()
        committed(loop)
        feed = Feed(tmp / "run").update()
        assert feed.generation == 0 and feed.generations["gen"].tolist() == [0]
        first = feed.images
        for _ in range(3):
            loop.step()
        committed(loop)
        feed.update()
    run = evolver.open_run(tmp / "run")
    assert feed.generations["gen"].tolist() == [0, 1, 2, 3] and first == run.generations["n_images"].iloc[0]
    assert feed.images == len(run.scores) and feed.missing == 0
    assert feed.last_scores["gen"].unique().tolist() == [3]
    assert feed.references.index.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(feed.references.to_numpy(), run.references.groupby("gen")["score"].mean())
    rows, end = run.rows_after("scores.csv", 0)
    assert len(rows) == len(run.scores) and len(run.rows_after("scores.csv", end)[0]) == 0
    gen, shown = feed.shown()
    assert gen == 3 and len(shown) == len(feed.last_scores)
    assert [s.image_id for s in shown] == feed.last_scores["image_id"].tolist()
    assert all(s.src.startswith("data:image/png;base64,") for s in shown)


def test_a_runs_status_is_what_holds_it(finished_run, tmp):
    shutil.copytree(finished_run, tmp / "done")
    assert Feed(tmp / "done").status() == "finished"
    with evolver.start(generations=6, out=tmp / "set", neuron="stimnet:relu4:unit0-1", retest="none") as loop:
        loop.step()
        committed(loop)
        assert Feed(tmp / "set" / "unit0").update().status() == "running"  # its unit set holds it
    assert Feed(tmp / "set" / "unit0").update().status() == "interrupted"  # stopped at 1 of 6, held by nothing
    lock = FolderLock(tmp / "set" / "unit1").acquire()
    assert Feed(tmp / "set" / "unit1").update().status() == "running"
    lock.release()


def test_a_feed_follows_a_run_resumed_later_and_a_damaged_run_is_listed_as_failed(tmp):
    from evolver.watch import run_rows

    evolver.run(generations=3, out=tmp / "runs" / "a", retest="none", progress=False)
    feed = Feed(tmp / "runs" / "a").update()
    assert feed.status() == "finished" and feed.generations["gen"].tolist() == [0, 1, 2]
    evolver.resume(tmp / "runs" / "a", generations=5, progress=False)
    feed._status_at = -np.inf  # the next probe is due now, not in a second
    assert feed.update().generations["gen"].tolist() == [0, 1, 2, 3, 4] and feed.status() == "finished"
    assert feed.images == len(evolver.open_run(tmp / "runs" / "a").scores)
    shutil.copytree(tmp / "runs" / "a", tmp / "runs" / "b")
    (tmp / "runs" / "b" / "state" / "state.npz").write_bytes(b"not a state")
    served = Served([tmp / "runs"])
    rows = run_rows(served, Feeds(), served.runs())[1:]
    assert [row.children[1].children.children for row in rows] == ["finished", "failed"]


def test_a_probe_of_a_runs_lock_does_not_refuse_its_writer(tmp):
    (tmp / "run").mkdir()
    import fcntl

    fd = os.open(tmp / "run" / FolderLock.NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what a watcher's probe holds for a moment
    timer = __import__("threading").Timer(0.05, lambda: os.close(fd))
    timer.start()
    FolderLock(tmp / "run").acquire().release()  # waited out the probe instead of calling the run in use
    timer.join()


def test_a_token_is_asked_of_every_request_and_kept_in_a_cookie(finished_run):
    from evolver.watch import TOKEN_COOKIE, create_app

    client = create_app([finished_run], token="s3cret").server.test_client()
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    for path in ("/", "/files/0/best.png?run=", "/_dash-layout"):
        refused = client.get(path, environ_base=remote)
        assert refused.status_code == 401 and "needs its token" in refused.text
    assert client.get("/?token=wrong", environ_base=remote).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}, environ_base=remote).status_code == 200
    first = client.get("/?token=s3cret", environ_base=remote)
    assert first.status_code == 200 and TOKEN_COOKIE in first.headers["Set-Cookie"]
    assert "HttpOnly" in first.headers["Set-Cookie"]
    assert client.get("/files/0/best.png?run=", environ_base=remote).data[:4] == b"\x89PNG"  # the cookie


def test_the_page_loads_no_script_from_another_host_and_reads_no_other_file(finished_run):
    from evolver.watch import create_app

    client = create_app([finished_run]).server.test_client()
    page = client.get("/").text
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts and all(src.startswith("/") for src in scripts)
    for src in scripts:
        assert client.get(src).status_code == 200
    assert client.get("/files/0/best.png?run=").data[:4] == b"\x89PNG"
    for bad in ("/files/0/config.json?run=", "/files/0/best.png?run=..", "/files/3/best.png?run="):
        answer = client.get(bad)
        assert answer.status_code == 404 and "Traceback" not in answer.text
    assert client.post("/files/0/best.png?run=").status_code == 405  # nothing writes


def test_watch_refuses_an_open_host_without_a_token_and_a_missing_folder(finished_run, tmp):
    result = evolver_cli("watch", finished_run, "--host", "0.0.0.0")
    assert result.returncode == 2 and "--token-env" in result.stderr and "SSH tunnel" in result.stderr
    result = evolver_cli("watch", finished_run, "--host", "0.0.0.0", "--token-env", "EVOLVER_NO_SUCH_VARIABLE")
    assert result.returncode == 2 and "not set or empty" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = evolver_cli("watch", finished_run, "--port", taken.getsockname()[1])
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr and "Address already in use" in result.stderr
    result = evolver_cli("watch", tmp / "nothing" / "here")
    assert result.returncode == 2 and "is not a folder" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- in a real browser

@pytest.fixture
def watcher():
    """start(paths) -> the address of an `evolver watch` process serving them."""
    children = []

    def start(*paths) -> str:
        child, address = start_watcher(*paths)
        children.append(child)
        return address

    yield start
    for child in children:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=20)


@pytest.fixture
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def generations_shown(browser) -> int:
    return int(re.match(r"(\d+) of \d+ generations", browser.find_element("id", "counts").text).group(1))


def trajectory_points(browser) -> int:
    return browser.execute_script("const g = document.querySelector('#trajectory .js-plotly-plot');"
                                  "return g && g.data ? g.data[2].x.length : 0;")


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_of_a_running_run_advances_without_reloading(tmp, watcher, browser):
    run = start_paced_run(tmp / "run", 60, 0.25)
    try:
        wait_for(lambda: (tmp / "run" / "config.json").is_file())
        browser.get(watcher(tmp / "run"))
        done = wait_for(lambda: generations_shown(browser) >= 2 and generations_shown(browser))
        browser.execute_script("window.notReloaded = true;")
        points = wait_for(lambda: trajectory_points(browser) >= done and trajectory_points(browser))
        caption = browser.find_element("id", "best-caption").text
        later = wait_for(lambda: generations_shown(browser) >= done + 10 and generations_shown(browser))
        assert wait_for(lambda: trajectory_points(browser) >= later) and trajectory_points(browser) > points
        wait_for(lambda: browser.find_element("id", "best-caption").text != caption)
        assert browser.execute_script("return window.notReloaded === true;")
        assert "running" == browser.find_element("id", "status").text
        def pick() -> str:  # the images are drawn anew each generation: click until one click lands
            browser.find_elements("css selector", "#shown img")[1].click()
            time.sleep(0.1)
            return browser.find_element("id", "picked").text

        assert re.match(r"Image \d+, generation \d+: response [-\d.]+, code norm [\d.]+\.", wait_for(pick, every=0))
        assert run.wait(timeout=120) == 0
        wait_for(lambda: browser.find_element("id", "status").text == "finished", timeout=10)
        assert generations_shown(browser) == 60 and trajectory_points(browser) == 60
    finally:
        run.kill()


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_of_many_runs_lists_a_sweeps_runs_and_a_killed_one(tmp, watcher, browser):
    from evolver.sweep import sweep

    sweep({"grid": {"neuron": ["stimnet:relu4:unit1"], "optimizer": ["ga", "cmaes"], "seed": [0]},
           "run": {"generations": 4}}, tmp / "lab" / "sweep", "local", workers=1)
    killed = start_paced_run(tmp / "lab" / "killed", 200, 0.2)
    wait_for(lambda: Feed(tmp / "lab" / "killed").generation >= 2 if find_runs(tmp / "lab" / "killed") else False)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    browser.get(watcher(tmp / "lab"))
    rows = wait_for(lambda: len(browser.find_elements("css selector", "#runs tr")) == 4 and
                    [r.text for r in browser.find_elements("css selector", "#runs tr")[1:]])
    assert [row.split()[:2] for row in rows] == [["killed", "interrupted"], [ANY, "finished"], [ANY, "finished"]], rows
    assert all(row.startswith("sweep/runs/stimnet-relu4-unit1-") and "4 of 4" in row for row in rows[1:])
    # the list is drawn again every 2 s: a link found just before that is gone when clicked, so try again
    wait_for(lambda: browser.find_element("link text", "killed").click() or True)
    wait_for(lambda: "interrupted" == browser.find_element("id", "status").text)
    assert browser.find_element("tag name", "h2").text.startswith("killed")


@pytest.mark.slow
@pytest.mark.browser
def test_a_bad_path_or_one_outside_the_folder_gets_a_clear_page(finished_run, tmp, watcher, browser):
    shutil.copytree(finished_run, tmp / "runs" / "a")
    address = watcher(tmp / "runs")
    for path, message in (("/run/0/nothing", "is not a run folder"), ("/run/0/%2E%2E%2F%2E%2E", "outside the served"),
                          ("/nowhere", "There is no page at /nowhere")):
        browser.get(address + path)
        assert message in wait_for(lambda: browser.find_element("id", "error").text)
        assert "Traceback" not in browser.page_source


def test_images_shown_again_for_a_missing_response_are_counted_and_shown(tmp):
    from evolver.watch import counts

    presentations = []

    def flaky(images):  # each generation's first presentation misses its first 3 responses
        presentations.append(len(images))
        responses = images.mean(dim=(1, 2, 3)).double().numpy()
        if len(presentations) % 2 == 1:
            responses[:3] = np.nan
        return responses

    evolver.run(neuron=flaky, generations=3, out=tmp / "run", retest="none", progress=False)
    assert presentations[1::2] == [3, 3, 3]
    feed = Feed(tmp / "run").update()
    assert feed.run.state.represented == 9 and feed.missing == 0
    assert "9 shown again for a missing response · 0 responses missing" in counts(feed)


@pytest.mark.slow
def test_run_watch_serves_the_run_while_it_runs_and_stops_with_it(tmp):
    port = free_port()
    run = subprocess.Popen([sys.executable, "-m", "evolver", "run", "--generations", "400", "--out", str(tmp / "run"),
                            "--quiet", "--watch", str(port)], stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert run.stderr.readline().strip() == f"Watching {tmp / 'run'} at http://127.0.0.1:{port}/"
        page = wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/files/0/best.png?run=").read())
        assert page[:4] == b"\x89PNG"
        run.send_signal(signal.SIGKILL)  # the watcher goes with its run, however the run ends
        run.wait()
        wait_for(lambda: not port_open(port), timeout=15)
    finally:
        run.kill()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_sessions_threads_are_served_together(tmp):
    from evolver.watch_session import session_page, thread_keys

    evolver.run(out=tmp / "lab" / "session", generations=2, progress=False, retest="none",
                threads=[{"generator": "dcgan"}, {"generator": "stimuli", "optimizer": "ga"}])
    served = Served([tmp / "lab"])
    assert [key for key, _ in served.runs()] == ["0/session/thread0", "0/session/thread1"]
    assert thread_keys(served, "0/session") == ["0/session/thread0", "0/session/thread1"]
    with pytest.raises(BadInput, match="is not a session's folder"):
        served.session("0/session/thread0")
    page = str(session_page(served, Feeds(), "0/session"))
    assert "a session of 2 threads" in page and "thread1 (generator=stimuli, optimizer=ga): best so far" in page


@pytest.mark.slow
@pytest.mark.browser
def test_a_running_sessions_page_shows_its_threads_side_by_side(tmp, watcher, browser):
    session = subprocess.Popen([sys.executable, "-m", "evolver", "run", "--generations", "400", "--quiet",
                                "--thread", "generator=dcgan", "--thread", "generator=stimuli,optimizer=ga",
                                "--out", str(tmp / "session")], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_for(lambda: (tmp / "session" / "thread1" / "config.json").is_file())
        browser.get(watcher(tmp / "session"))
        columns = wait_for(lambda: len(browser.find_elements("css selector", "#session-threads h3")) == 2 and
                           browser.find_elements("css selector", "#session-threads h3"))
        assert [c.text for c in columns] == ["thread0 (generator=dcgan)", "thread1 (generator=stimuli, optimizer=ga)"]

        def points() -> list[int]:
            return browser.execute_script("const g = document.querySelector('#session-trajectory .js-plotly-plot');"
                                          "return g && g.data ? g.data.map(t => t.x.length) : [];")

        first = wait_for(lambda: min(points() or [0]) >= 2 and points())
        wait_for(lambda: min(points()) >= first[0] + 5)
        assert "running" in browser.find_element("id", "session-threads").text
        assert all(wait_for(lambda: i.get_property("naturalWidth") > 0) for i in
                   browser.find_elements("css selector", "#session-threads img"))
    finally:
        session.kill()
        session.wait()
