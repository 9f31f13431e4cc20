"""Recorded neurons end to end: evolver in this process, the rig-sim in another, over a folder or a socket."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import stat
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

import neurons
from conftest import evolver_process, when_shown
from evolver import RunConfig, resume, run
from evolver.optimizers.uncertainty import PROOF
from evolver.rigsim import write_mat
from evolver_common import BadInput, RigError
from evolver_common.files import FILE_MODE
from generators.dcgan import bundled_code_dim
from neurons.recorded import Block, ChannelSelection
from neurons.rig_files import read_responses
from neurons.rig_folder import FolderRig

GENERATIONS = 20
SIM_NEURON = "stimnet:classifier:unit7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rig:
    """`evolver rig-sim` in its own process, as a lab runs it; `restart_on_crash` plays the lab restarting
    it. `in_process` plays it in a thread of this process instead (no faults that end a process)."""

    def __init__(self, tmp, protocol: str, *faults: str, restart_on_crash: bool = False, in_process: bool = False,
                 token: str | None = None):
        self.log = tmp / "rig.jsonl"
        if protocol == "zmq":
            self.address = f"tcp://127.0.0.1:{free_port()}"
            self.where = ["--connect", self.address]
            self.spec = f"zmq:{self.address}" + (f":token={token}" if token else "")
        else:
            self.folder = tmp / "exchange"
            self.folder.mkdir(exist_ok=True)
            self.where = ["--folder", str(self.folder), *(["--format", "mat"] if protocol == "mat" else [])]
            self.spec = f"folder:{self.folder}"
        self.protocol, self.token = protocol, token
        self.faults = list(faults)
        self.stopped = False
        if in_process:
            self._serve_in_a_thread()
            return
        self.process = self._start(self.faults)
        if restart_on_crash:
            threading.Thread(target=self._restart, daemon=True).start()

    def _serve_in_a_thread(self):
        from evolver.rigsim import Faults, RigSim, RigSimConfig, serve_folder, serve_zmq

        assert not self.faults, "faults are injected into a rig-sim process"
        sim = RigSim(RigSimConfig(neuron=SIM_NEURON, format="mat" if self.protocol == "mat" else "h5",
                                  log=str(self.log), idle_exit=5, token=self.token), Faults())
        serve = (lambda: serve_zmq(self.address, sim)) if self.protocol == "zmq" else \
            (lambda: serve_folder(self.folder, sim))
        threading.Thread(target=serve, daemon=True).start()
        self.process = None

    def _start(self, faults):
        return subprocess.Popen([sys.executable, "-m", "evolver", "rig-sim", *self.where, "--neuron", SIM_NEURON,
                                 "--log", str(self.log), "--idle-exit", "60", *faults],
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                                stderr=subprocess.PIPE, text=True)

    def _restart(self):
        self.process.wait()
        if not self.stopped:
            without_crash = [f for i, f in enumerate(self.faults) if f != "--crash-after" and
                             (i == 0 or self.faults[i - 1] != "--crash-after")]
            self.process = self._start(without_crash)

    def restart(self):
        self.process = self._start([])

    def sent(self, since: int = 0) -> dict[str, set[float]]:
        """Every response the rig sent, by image id (a set: a block served twice is answered twice), from
        line `since` of its log on."""
        sent: dict[str, set[float]] = {}
        for line in self.log.read_text().splitlines()[since:]:
            entry = json.loads(line)
            sent.setdefault(entry["id"], set()).add(entry["response"])
        return sent

    def stop(self):
        self.stopped = True
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def rig_factory(tmp):
    rigs = []

    def make(protocol, *faults, **options):
        rigs.append(Rig(tmp, protocol, *faults, **options))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.stop()


def assert_run_matches_rig(path, rig: Rig, allow_missing: bool = False, since: int = 0) -> pd.DataFrame:
    """Every score of the run is a response the rig sent for that very image id (from line `since` of the
    rig's log on, where the rig served earlier runs)."""
    scores = pd.read_csv(path / "scores.csv")
    sent = rig.sent(since)
    answered = scores[scores.score.notna()]
    assert allow_missing or len(answered) == len(scores)
    for image_id, score in zip(answered.image_id, answered.score):
        assert any(abs(score - s) < 1e-9 for s in sent[str(image_id)]), f"image {image_id}: {score} not sent"
    return scores


def evolve(rig: Rig, out, options: str = ":timeout=5:retries=2", generations: int = GENERATIONS, **config):
    """A run through the rig; without the re-test at the end unless `retest` is given (it has its own test)."""
    config.setdefault("retest", "none")
    return run(RunConfig(neuron=rig.spec + options, generations=generations, **config), out=out, progress=False)


@pytest.mark.parametrize("protocol", ["folder", "mat", "zmq"])
def test_every_score_is_what_the_rig_sent_for_that_image(rig_factory, tmp, protocol):
    rig = rig_factory(protocol, in_process=True)
    result = evolve(rig, tmp / "run", generations=4, retest="auto")  # a recorded neuron's answers are noisy
    assert result.generations == 4
    scores = assert_run_matches_rig(result.path, rig)
    population = int(4 + 3 * math.log(bundled_code_dim()))  # CMA-ES's default on the bundled DCGAN's codes
    # the default uh-cmaes shows 2 codes of each generation twice; the last generation re-shows the 10
    # best-answered images 4 times
    assert len(scores) == 3 * (population + 2) + 40
    best = json.loads((result.path / "best.json").read_text())
    presented = scores[(scores.image_id == best["image_id"]) | (scores.parent_ids == best["image_id"])]
    assert len(presented) == result.presentations == 5 and presented.score.mean() == pytest.approx(result.best)
    assert best["clean"] is None  # a recorded neuron's noise-free response is not known


@pytest.mark.slow  # a rig-sim process each: 5 s and more
@pytest.mark.parametrize("protocol", ["zmq", "folder"])
def test_a_rig_sim_process_answers_twenty_generations(rig_factory, tmp, protocol):
    rig = rig_factory(protocol)
    result = evolve(rig, tmp / "run")
    assert result.generations == GENERATIONS
    population = int(4 + 3 * math.log(bundled_code_dim()))
    # a noise-free rig: the default uh-cmaes shows 2 codes twice until it has answered alike PROOF times
    assert len(assert_run_matches_rig(result.path, rig)) == GENERATIONS * population + PROOF * 2


# Each fault as the rig-sim injects it, with the timeouts the run is given: a late rig answers after
# 0.6 s, past the run's 0.4 s, so each of its blocks times out once and is answered on the second wait.
FAULTS = {
    "drop a third": (("--drop", "0.33"), ":timeout=1:retries=4"),
    "answer late": (("--late", "0.6"), ":timeout=0.4:retries=4"),
    "answer twice": (("--twice",), ":timeout=1:retries=4"),
    "malformed first": (("--malformed", "2"), ":timeout=1:retries=4"),
    "reordered ids": (("--reorder",), ":timeout=1:retries=4"),
}
FAULT_GENERATIONS = 8


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["folder", "zmq"])
@pytest.mark.parametrize("fault", FAULTS)
def test_faults_complete_with_every_response_on_its_image(rig_factory, tmp, protocol, fault):
    flags, options = FAULTS[fault]
    rig = rig_factory(protocol, *flags)
    result = evolve(rig, tmp / "run", options, generations=FAULT_GENERATIONS)
    assert result.generations == FAULT_GENERATIONS
    assert_run_matches_rig(result.path, rig, allow_missing=fault == "drop a third")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["folder", "zmq"])
def test_a_rig_restarted_after_a_crash_is_picked_up(rig_factory, tmp, protocol):
    rig = rig_factory(protocol, "--crash-after", "3", restart_on_crash=True)
    result = evolve(rig, tmp / "run", ":timeout=3:retries=5", generations=FAULT_GENERATIONS)
    assert result.generations == FAULT_GENERATIONS
    assert_run_matches_rig(result.path, rig)


@pytest.mark.slow
def test_a_rig_that_stays_down_stops_the_run_which_resumes(rig_factory, tmp):
    rig = rig_factory("folder", "--crash-after", "3")
    with pytest.raises(RigError, match="--resume"):
        evolve(rig, tmp / "run", ":timeout=0.5:retries=1", generations=FAULT_GENERATIONS)
    recorded = pd.read_csv(tmp / "run" / "generations.csv")
    assert len(recorded) == 3
    rig.restart()
    result = resume(tmp / "run", progress=False)
    assert result.generations == FAULT_GENERATIONS
    assert_run_matches_rig(result.path, rig)


@pytest.mark.slow
def test_one_rig_process_serves_a_run_an_interrupted_run_its_resumption_and_another_run(rig_factory, tmp):
    """A lab's day: the rig program starts first and is never restarted. Each evolver process finds it by
    its heartbeat, and answers it queued for a killed session are told apart by their session."""
    rig = rig_factory("zmq", "--delay", "0.2")
    spec = rig.spec + ":timeout=10:connect_timeout=30"
    lines = lambda: len(rig.log.read_text().splitlines()) if rig.log.exists() else 0  # noqa: E731
    first = run(RunConfig(neuron=spec, generations=3, retest="none"), out=tmp / "first", progress=False)
    assert first.generations == 3
    assert_run_matches_rig(first.path, rig)
    before = lines()
    started = time.monotonic()
    second = subprocess.Popen([sys.executable, "-m", "evolver", "run", "--neuron", spec, "--generations", "12",
                               "--retest", "none", "--quiet", "--out", str(tmp / "second")],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    table = tmp / "second" / "generations.csv"
    while not (table.exists() and len(table.read_text().splitlines()) > 3) and second.poll() is None:
        time.sleep(0.1)
    second.send_signal(signal.SIGINT)
    _, stderr = second.communicate(timeout=60)
    assert second.returncode == 130 and f"evolver run --resume {tmp / 'second'}" in stderr, stderr
    resumed = resume(tmp / "second", progress=False)
    assert resumed.generations == 12
    assert_run_matches_rig(resumed.path, rig, since=before)
    before = lines()
    third = run(RunConfig(neuron=spec, generations=3, retest="none"), out=tmp / "third", progress=False)
    assert third.generations == 3 and time.monotonic() - started < 120  # no waits for a rig that never says hello
    assert_run_matches_rig(third.path, rig, since=before)
    assert rig.process.poll() is None  # one rig process throughout
    sessions = {json.loads(line)["session"] for line in rig.log.read_text().splitlines()}
    assert len(sessions) == 4  # one per evolver process


@pytest.mark.slow
def test_missing_responses_are_skipped_when_asked(rig_factory, tmp):
    rig = rig_factory("folder", "--drop", "0.5")
    result = evolve(rig, tmp / "run", ":timeout=2", generations=FAULT_GENERATIONS, missing="skip")
    scores = assert_run_matches_rig(result.path, rig, allow_missing=True)
    assert scores.score.isna().mean() > 0.3  # half dropped: measured 0.5
    assert json.loads((result.path / "config.json").read_text())["run"]["missing"] == "skip"


def test_reference_images_are_interleaved_in_every_block(rig_factory, tmp):
    rig = rig_factory("folder", in_process=True)
    result = evolve(rig, tmp / "run", generations=6, reference="procedural:6", interleave=2)
    references = pd.read_csv(result.path / "references.csv")
    assert len(references) == 2 * 6 and references.image.nunique() == 6
    sent = rig.sent()
    names = pd.read_csv(result.path / "reference.csv").image.tolist()
    for name, score in zip(references.image, references.score):
        assert score in sent[f"ref{names.index(name)}"]


# ------------------------------------------------------------------------------------------- the socket

def test_listening_beyond_loopback_needs_a_token():
    with pytest.raises(BadInput, match="needs a shared secret"):
        neurons.create(f"zmq:tcp://0.0.0.0:{free_port()}")
    rig = neurons.create(f"zmq:tcp://0.0.0.0:{free_port()}:token=s3cret")
    rig.close()
    with pytest.raises(BadInput, match="token_env=RIG_SECRET names an environment variable that is not set"):
        neurons.create(f"zmq:tcp://0.0.0.0:{free_port()}:token_env=RIG_SECRET")


def _dealer(address: str):
    import zmq

    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(address)
    return dealer


def _answer_once(message: dict | bytes, padding: int = 0, max_bytes: int | None = None, token: bytes = b"abc",
                 frames: int = 0) -> dict:
    """What a NetworkRig accepts when its rig, after hello, answers block 0 with `message` (+ padding bytes,
    + `frames` extra frames of 100 kB each)."""
    port = free_port()
    limit = f":max_bytes={max_bytes}" if max_bytes else ""
    rig = neurons.create(f"zmq:tcp://127.0.0.1:{port}:timeout=0.5:retries=0:connect_timeout=0.5:token=abc{limit}")
    dealer = _dealer(f"tcp://127.0.0.1:{port}")
    dealer.send_multipart([b"abc", json.dumps({"type": "hello"}).encode()])

    def answer():
        dealer.recv_multipart()  # the block
        body = message if isinstance(message, bytes) else json.dumps(
            {"type": "responses", "block": 0, "ids": ["x"], "responses": [[1.0]], "padding": "x" * padding,
             **message}).encode()
        dealer.send_multipart([token, body, *[b"x" * 100_000] * frames])

    threading.Thread(target=answer, daemon=True).start()
    try:
        return rig.exchange(Block(0, torch.zeros(1, 3, 8, 8), ["x"]))
    finally:
        rig.close()
        dealer.close()


def test_messages_over_the_size_limit_are_refused():
    assert _answer_once({}, padding=100, max_bytes=4096)["x"].tolist() == [1.0]
    assert _answer_once({}, padding=10_000)["x"].tolist() == [1.0]  # the default limit is 1 MiB
    with pytest.warns(UserWarning, match="no responses"), pytest.raises(RigError):
        _answer_once({}, padding=10_000, max_bytes=4096)
    with pytest.warns(UserWarning, match="dropped unread"), pytest.raises(RigError):
        _answer_once({}, frames=40)  # 4 MB in frames each under the limit: the message's total counts


def test_messages_without_the_token_are_ignored_unparsed():
    with pytest.warns(UserWarning, match="wrong or missing token"), pytest.raises(RigError):
        _answer_once({}, token=b"nope")
    with pytest.warns(UserWarning, match="wrong or missing token"), pytest.raises(RigError):
        _answer_once(b"[" * 200_000, token=b"nope")


@pytest.mark.parametrize("body", [b"[" * 200_000, b"\x80\x81", b'{"type": "bye"}', b'{"type": "responses", '
                                  b'"block": 0, "ids": ["x"], "responses": [[1]], "extra": ' + b"{" * 20 + b"}" * 20 + b"}"],
                         ids=["deep", "not utf-8", "unknown type", "nested"])
def test_malformed_messages_are_ignored_never_raised(body):
    with pytest.warns(UserWarning), pytest.raises(RigError, match="answered no responses"):
        _answer_once(body)


def test_a_5000_digit_number_is_missing():
    body = b'{"type": "responses", "block": 0, "ids": ["x"], "responses": [[' + b"9" * 5000 + b"]]}"
    assert np.isnan(_answer_once(body)["x"]).all()


def test_a_run_with_a_token_records_none_and_resumes_with_it_given_again(rig_factory, tmp):
    rig = rig_factory("zmq", in_process=True, token="s3cret")
    result = evolve(rig, tmp / "run", generations=2)
    recorded = (result.path / "config.json").read_text()
    assert "s3cret" not in recorded and "token=REDACTED" in recorded
    with pytest.raises(BadInput, match="kept out of the records"):
        resume(result.path, progress=False)
    resumed = resume(result.path, progress=False, neuron=rig.spec + ":timeout=5:retries=2")  # the secret matches
    assert resumed.generations == 2 and "s3cret" not in (result.path / "config.json").read_text()


def test_a_literal_token_is_kept_out_of_the_records(tmp, monkeypatch):
    monkeypatch.setenv("RIG_SECRET", "s3cret")
    rig = neurons.create(f"zmq:tcp://0.0.0.0:{free_port()}:token_env=RIG_SECRET")
    assert rig.token == "s3cret"
    rig.close()
    from evolver_common.secrets import redact

    assert redact("zmq:tcp://h:1:token=s3cret:channel=2") == "zmq:tcp://h:1:token=REDACTED:channel=2"
    assert redact("zmq:tcp://h:1:token_env=RIG_SECRET") == "zmq:tcp://h:1:token_env=RIG_SECRET"
    with pytest.raises(BadInput, match="kept out of the records"):
        neurons.create(f"zmq:tcp://0.0.0.0:{free_port()}:token=REDACTED")


# ------------------------------------------------------------------------------------------- the folder

def test_mat_files_are_read_and_rig_names_never_used_as_paths(tmp):
    def answer():
        write_mat(tmp / "block000.mat", ["block000_000_7", "../../etc/passwd", "block000_001_8"],
                  np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]))

    rig = FolderRig(f"folder:{tmp}:channel=1:timeout=2:connect_timeout=2")
    when_shown(tmp, 0, answer)
    with pytest.warns(UserWarning, match="did not show"):
        answered = rig.respond(torch.zeros(2, 3, 8, 8), ["7", "8"])
    assert answered.tolist() == [10.0, 30.0] and rig.log.unknown_ids == 1
    ids, values = read_responses(tmp / "block000.mat", ["7", "8"])
    assert ids[0] == "block000_000_7" and values.shape == (3, 2)


def write_h5(path, scores, indices=None):
    import h5py

    with h5py.File(path, "w") as f:
        f["scores"] = np.asarray(scores, dtype=np.float64)
        if indices is not None:
            f["indices"] = np.asarray(indices)


def test_blocks_of_another_session_are_refused_and_a_resumed_runs_own_moved_aside(tmp):
    write_h5(tmp / "block000.h5", [5.0, 6.0])  # left by yesterday's session
    with pytest.raises(BadInput, match=r"holds block files of another session \(block000.h5\)"):
        FolderRig(f"folder:{tmp}:timeout=1:connect_timeout=1").respond(torch.zeros(2, 3, 8, 8), ["a", "b"])
    (tmp / "block000.h5").unlink()
    rig = FolderRig(f"folder:{tmp}:timeout=2:connect_timeout=2")
    when_shown(tmp, 0, lambda: write_h5(tmp / "block000.h5", [1.0, 2.0]))
    assert rig.respond(torch.zeros(2, 3, 8, 8), ["a", "b"]).tolist() == [1.0, 2.0]
    state = rig.state_dict()
    write_h5(tmp / "block001.h5", [9.0])  # block 1 was shown, answered, and the run stopped before its record
    resumed = FolderRig(f"folder:{tmp}:timeout=2:connect_timeout=2")
    resumed.load_state_dict(state)
    when_shown(tmp, 1, lambda: write_h5(tmp / "block001.h5", [3.0]))
    assert resumed.respond(torch.zeros(1, 3, 8, 8), ["c"]).tolist() == [3.0]
    assert (tmp / "stale" / "block001.h5").is_file(), "the interrupted block's answer is kept, out of the way"


def test_a_response_file_written_in_place_is_read_only_once_whole(tmp):
    import h5py

    def write_slowly():  # as a rig's h5py.File(path, "w") does: the file exists, unreadable, for a while
        with h5py.File(tmp / "responses" / "block000.h5", "w") as f:
            f.flush()
            time.sleep(0.3)
            f["scores"] = np.array([4.0, 5.0])

    (tmp / "responses").mkdir()
    rig = FolderRig(f"folder:{tmp}:scores={tmp / 'responses'}:timeout=3:connect_timeout=3")
    when_shown(tmp, 0, write_slowly)
    assert rig.respond(torch.zeros(2, 3, 8, 8), ["a", "b"]).tolist() == [4.0, 5.0]
    assert rig.log.malformed == 0 and not list(tmp.glob("**/*.malformed"))
    image = next(tmp.glob("block000_*.png"))
    assert stat.S_IMODE(image.stat().st_mode) == FILE_MODE, "images readable as the user's umask says"


@pytest.mark.parametrize("content, readable", [
    ({"tEvokedResp": np.float64(3.0), "stimulusID": np.array([[1]], dtype=np.uint64)}, False),  # scalar, uint64 id
    ({"tEvokedResp": np.array([[1.0]]), "stimulusID": np.array([[]], dtype=np.uint16)}, True),  # no ids: no answer
    ({"scores": np.array([1.0]), "indices": np.array([2**62], dtype=np.uint64)}, False),  # beyond the block
])
def test_malformed_response_files_are_set_aside_or_answer_nothing(tmp, content, readable):
    import h5py

    suffix = "h5" if "scores" in content else "mat"
    rig = FolderRig(f"folder:{tmp}:timeout=1.5:connect_timeout=1.5:retries=0")

    def answer():
        with h5py.File(tmp / f"block000.{suffix}", "w") as f:
            for name, value in content.items():
                f[name] = value

    when_shown(tmp, 0, answer)
    if readable:
        assert np.isnan(rig.respond(torch.zeros(1, 3, 8, 8), ["a"])).all()
        return
    with pytest.warns(UserWarning, match="could not be read"), pytest.raises(RigError, match="answered no responses"):
        rig.respond(torch.zeros(1, 3, 8, 8), ["a"])
    assert (tmp / f"block000.{suffix}.malformed").is_file()


def test_channel_selection():
    responses = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 4.0, np.nan, np.nan]])  # the second image: 2 channels answered
    assert ChannelSelection({"channel": "2"}, "s")(responses)[0] == 3.0
    assert ChannelSelection({"channels": "0,3"}, "s")(responses)[0] == 3.5
    assert ChannelSelection({"channels": "1-3"}, "s")(responses)[0] == pytest.approx(11 / 3)
    assert ChannelSelection({"channels": "all"}, "s")(responses).tolist() == [3.0, 3.0]
    assert np.isnan(ChannelSelection({"channel": "9"}, "s")(responses)).all()
    assert ChannelSelection({"channel": "1"}, "s")(responses)[1] == 4.0
    assert np.isnan(ChannelSelection({"channel": "2"}, "s")(responses)[1])
    with pytest.raises(BadInput, match="not both"):
        ChannelSelection({"channel": "1", "channels": "2"}, "s")


@pytest.mark.parametrize("spec, message", [
    ("folder:/no/such/folder", "does not exist"),
    ("folder:{tmp}:colour=red", "unknown option colour"),
    ("folder:{tmp}:timeout=soon", r"timeout='soon' \(a finite number\)"),
    ("zmq:udp://127.0.0.1:5", "must be tcp://HOST:PORT"),
])
def test_bad_rig_specs(tmp, spec, message):
    with pytest.raises(BadInput, match=message):
        neurons.create(spec.format(tmp=tmp))


# ------------------------------------------------------------------------------------------- plugins

PLUGIN = {
    "setup.cfg": """
        [metadata]
        name = evolver-testrig
        version = 0.1
        [options]
        py_modules = testrig
        [options.entry_points]
        evolver.neurons =
            brightness = testrig:BrightnessRig
        evolver.generators =
            flat = testrig:FlatGenerator
        """,
    "setup.py": "from setuptools import setup\nsetup()\n",
    "testrig.py": """
        import numpy as np
        import torch
        from generators.base import Generator
        from neurons.recorded import RecordedNeuron

        class BrightnessRig(RecordedNeuron):
            kind = "brightness"

            def exchange(self, block):
                return {i: np.array([float(im.mean()), 0.0]) for i, im in zip(block.ids, block.images)}

        class FlatGenerator(Generator):
            code_dim, image_size = 3, 16

            def __init__(self, **options):
                self.weights, self.device = "none", torch.device("cpu")

            def sample(self, n, rng):
                return rng.standard_normal((n, 3)).astype(np.float32)

            def differentiable(self, codes):
                return torch.sigmoid(codes)[:, :, None, None].expand(-1, 3, 16, 16)
        """,
}


@pytest.mark.slow  # pip installs a package: 6 s
def test_a_lab_plugin_package_adds_a_neuron_and_a_generator(tmp):
    source = tmp / "plugin"
    source.mkdir()
    for name, text in PLUGIN.items():
        (source / name).write_text(textwrap.dedent(text))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    result = evolver_process("run", "--neuron", "brightness:lab:channel=0", "--generator", "flat", "--generations", 8,
                             "--out", tmp / "run", "--quiet", env=env, check=True)
    assert "Best response" in result.stdout
    generations = pd.read_csv(tmp / "run" / "generations.csv")
    assert generations.best_so_far.iloc[-1] > generations.best.iloc[0]
