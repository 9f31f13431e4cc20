"""Sessions: several threads on one neuron, their images interleaved in one block a generation (evolver.session)."""
import filecmp
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import evolver
import neurons
from conftest import evolver_process
from evolver.rigsim import Faults, RigSim, RigSimConfig, serve_folder, serve_zmq
from evolver.session import Thread
from evolver.track import Records
from evolver_common import BadInput

NEURON = "stimnet:classifier:unit7"
TWO = [{"generator": "dcgan"}, {"generator": "stimuli", "optimizer": "ga"}]  # 112-d and 25-d codes


def session(out, threads=TWO, generations=4, **options):
    options = {"neuron": NEURON, "precision": "fp32", "retest": "none", **options}
    return evolver.run(out=out, threads=threads, generations=generations, progress=False, **options)


def same_records(a, b, threads: int = 2) -> None:
    """The two sessions' files are equal, but for the seconds each generation took."""
    assert filecmp.cmp(a / "blocks.csv", b / "blocks.csv", shallow=False)
    for k in range(threads):
        one, two = a / f"thread{k}", b / f"thread{k}"
        assert filecmp.cmp(one / "scores.csv", two / "scores.csv", shallow=False)
        assert pd.read_csv(one / "generations.csv").drop(columns="seconds").equals(
            pd.read_csv(two / "generations.csv").drop(columns="seconds"))
        codes = sorted(p.name for p in (one / "codes").iterdir())
        assert codes == sorted(p.name for p in (two / "codes").iterdir())
        assert all(filecmp.cmp(one / "codes" / c, two / "codes" / c, shallow=False) for c in codes)


def test_every_block_holds_every_threads_images_in_a_random_order_and_each_is_told_its_own(tmp):
    results = session(tmp / "s")
    assert [r.path.name for r in results] == ["thread0", "thread1"]
    recorded = evolver.open_session(tmp / "s")
    blocks = recorded.blocks
    neuron = neurons.create(NEURON, precision="fp32")
    for k, run in enumerate(recorded.threads):
        scores = run.scores
        for gen in range(4):
            shown = blocks[(blocks.gen == gen) & (blocks.thread == k)].image_id
            mine = scores[scores.gen == gen]
            assert sorted(shown) == sorted(f"{k}:{i}" for i in mine.image_id)  # every image, once
            responses = neuron(run.images(gen))  # the images again, through the neuron alone
            assert np.allclose(mine.score, responses, rtol=1e-4, atol=1e-4)
    for gen in range(4):
        threads = blocks[blocks.gen == gen].thread.tolist()
        assert set(threads) == {0, 1} and threads != sorted(threads)  # interleaved, not one thread then the other
    assert (tmp / "s" / "trajectory.html").is_file()


@pytest.mark.slow  # an outcome check
@pytest.mark.pinned
def test_a_thread_may_end_before_the_others(tmp):
    threads = [{"generations": 2}, {"optimizer": "ga"}]
    first, second = session(tmp / "s", threads, generations=4)
    assert (first.generations, second.generations) == (2, 4)
    blocks = evolver.open_session(tmp / "s").blocks
    assert set(blocks[blocks.gen >= 2].thread) == {1}


def test_a_session_killed_between_its_commit_and_a_threads_resumes_as_if_never_killed(tmp, monkeypatch):
    session(tmp / "whole", generations=5, noise="multiplicative:0.5")
    commits = []
    commit = Records.commit

    def killed_after_the_sessions_commit(records, tree=None):
        commits.append(records.directory.path.name)
        if len(commits) == 6:  # generation 2: thread0's is committed, the session's too; thread1's never is
            raise OSError("the disk is full")
        commit(records, tree)

    monkeypatch.setattr(Records, "commit", killed_after_the_sessions_commit)
    with pytest.raises(OSError, match="disk is full"):
        session(tmp / "killed", generations=5, noise="multiplicative:0.5")
    monkeypatch.setattr(Records, "commit", commit)
    assert evolver.open_run(tmp / "killed" / "thread1").generation == 1  # its own state lags the session's
    results = evolver.resume(tmp / "killed", progress=False)
    assert [r.generations for r in results] == [5, 5]
    same_records(tmp / "whole", tmp / "killed")


@pytest.mark.slow  # an outcome check
@pytest.mark.pinned
def test_a_session_stopped_part_way_resumes_to_the_same_records(tmp, monkeypatch):
    session(tmp / "whole", generations=5, noise="multiplicative:0.5", reference="procedural:6", interleave=2)
    monkeypatch.setenv("EVOLVER_MAX_GENERATIONS", "2")
    with pytest.warns(UserWarning, match="EVOLVER_MAX_GENERATIONS"):
        session(tmp / "parts", generations=5, noise="multiplicative:0.5", reference="procedural:6", interleave=2)
    monkeypatch.delenv("EVOLVER_MAX_GENERATIONS")
    evolver.resume(tmp / "parts", progress=False)
    same_records(tmp / "whole", tmp / "parts")
    references = pd.read_csv(tmp / "parts" / "thread1" / "references.csv")
    blocks = evolver.open_session(tmp / "parts").blocks
    assert len(references) == 2 * 5 and blocks.thread.isna().sum() == 2 * 5  # each reference shown once a block


def test_a_unit_set_session_records_every_unit_as_a_channel_and_each_thread_follows_its_own(tmp):
    results = session(tmp / "s", [{"channel": 1}, {"channel": 3, "optimizer": "ga"}], generations=3,
                      neuron="stimnet:classifier:unit4-7")
    neuron = neurons.create("stimnet:classifier:unit4-7", precision="fp32")
    for result, column in zip(results, (1, 3)):
        run = evolver.open_run(result.path)
        assert run.config["run"]["neuron"] == f"stimnet:classifier:unit{4 + column}"
        channels = run.channels(2)
        assert list(channels.columns[2:]) == [f"channel_{k}" for k in range(4)]
        assert np.allclose(channels.to_numpy()[:, 2:].astype(float), neuron(run.images(2)), rtol=1e-4, atol=1e-4)
        assert np.allclose(channels[f"channel_{column}"], run.scores[run.scores.gen == 2].score)
        every = run.channels()  # every generation's
        assert len(every) == len(run.scores) and every.gen.tolist() == run.scores.gen.tolist()


def test_threads_of_several_image_sizes_are_shown_each_at_its_own_size_or_resized_for_a_rig():
    import generators
    from evolver.presenting import Shown
    from evolver_common.images import resize

    small, large = generators.create("stimuli:image_size=32"), generators.create("stimuli:image_size=48")
    rng = np.random.default_rng(0)
    parts = [(small, small.sample(3, rng)), (large, large.sample(2, rng))]
    order = np.array([4, 0, 3, 1, 2])
    pieces = list(Shown(parts, None, None).chunks(order))
    assert sorted(tuple(x.shape[-2:]) for _, x in pieces) == [(32, 32), (48, 48)]
    assert sorted(np.concatenate([p for p, _ in pieces]).tolist()) == list(range(5))
    (positions, images), = list(Shown(parts, None, None, same_size=True).chunks(order))
    assert positions.tolist() == list(range(5)) and images.shape == (5, 3, 48, 48)
    assert torch.allclose(images[0], large.render(parts[1][1][1:2])[0], atol=1e-6)  # row 4: large's second image
    assert torch.allclose(images[1], resize(small.render(parts[0][1][:1]), (48, 48)).clamp(0, 1)[0], atol=1e-6)


def test_bad_threads_are_refused_before_any_folder_is_made(tmp):
    for threads, message in (
            ([{"chanel": 1}], "unknown option chanel"),
            ([{"channel": 2}], "gives one response per image"),
            ([{"channel": -1}], "counts from 0"),
            ([{"optimizer": "nope"}], "Unknown optimizer"),
            (["dcgan"], "a dict of its fields"),
            ([], "at least one thread")):
        with pytest.raises(BadInput, match=message):
            session(tmp / "s", threads)
        assert not (tmp / "s").exists()
    with pytest.raises(BadInput, match="set of 4 units"):
        session(tmp / "s", [{}], neuron="stimnet:classifier:unit0-3")


def test_thread_texts_of_the_command_line():
    thread = Thread.parse("generator=stimuli:families=bar,blob,optimizer=ga:population=20:mutation_size=0.3,seed=3")
    assert thread.generator == "stimuli:families=bar,blob" and thread.optimizer == "ga" and thread.seed == 3
    assert thread.params == {"population": "20", "mutation_size": "0.3"}
    nevergrad = Thread.parse("optimizer=nevergrad:NGOpt:population=8,generator=pixel")
    assert (nevergrad.optimizer, nevergrad.params, nevergrad.generator) == ("nevergrad:NGOpt", {"population": "8"}, "pixel")
    assert Thread.parse("optimizer=nevergrad:TwoPointsDE").optimizer == "nevergrad:TwoPointsDE"
    with pytest.raises(BadInput, match="not KEY=VALUE"):
        Thread.parse("dcgan")
    with pytest.raises(BadInput, match="with its name"):
        Thread.parse("params=population:20")


def test_a_thread_resumed_alone_is_refused(tmp):
    session(tmp / "s", generations=1)
    with pytest.raises(BadInput, match="continue together"):
        evolver.resume(tmp / "s" / "thread0", progress=False)


@pytest.mark.slow  # three processes
@pytest.mark.pinned
def test_a_session_from_the_command_line_resumed_and_plotted(tmp):
    out = tmp / "s"
    done = evolver_process("run", "--generations", "2", "--thread", "generator=dcgan", "--thread",
                           "generator=stimuli,optimizer=ga:population=12", "--precision", "fp32", "--quiet",
                           "--out", out, check=True)
    assert "2 runs, one a thread" in done.stdout
    assert len(pd.read_csv(out / "thread1" / "scores.csv").query("gen == 0")) == 12
    refused = evolver_process("run", "--resume", out / "thread0")
    assert refused.returncode == 2 and "continue together" in refused.stderr and "Traceback" not in refused.stderr
    plotted = evolver_process("plot", out, check=True)
    assert str(out / "trajectory.html") in plotted.stdout


# ------------------------------------------------------------------------------------------------ rigs

def start_rig(tmp, protocol, channels=1, **options):
    """rig-sim in a thread of this process: (the neuron's spec, its log)."""
    log = tmp / "rig.jsonl"
    options.setdefault("neuron", "stimnet:relu4:unit0" if channels > 1 else NEURON)
    sim = RigSim(RigSimConfig(channels=channels, log=str(log), idle_exit=5, **options), Faults())
    if protocol == "zmq":
        from test_recorded import free_port

        address = f"tcp://127.0.0.1:{free_port()}"
        serve, spec = (lambda: serve_zmq(address, sim)), f"zmq:{address}"
    else:
        folder = tmp / "exchange"
        folder.mkdir()
        serve, spec = (lambda: serve_folder(folder, sim)), f"folder:{folder}"
    import threading

    threading.Thread(target=serve, daemon=True).start()
    return spec + ":timeout=10", log, sim


def sent(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.slow  # an outcome check
@pytest.mark.pinned
@pytest.mark.parametrize("protocol", ["folder", "zmq"])
def test_a_two_thread_session_through_a_rig_interleaves_every_block(tmp, protocol):
    spec, log, _ = start_rig(tmp, protocol)
    session(tmp / "s", generations=3, neuron=spec)
    answers = sent(log)
    for block in {a["block"] for a in answers}:
        threads = [a["id"].split(":")[0] for a in answers if a["block"] == block]
        assert set(threads) == {"0", "1"} and threads != sorted(threads)
    by_id = {a["id"]: a["response"] for a in answers}
    for k, run in enumerate(evolver.open_session(tmp / "s").threads):
        scores = run.scores
        assert len(scores) and all(by_id[f"{k}:{i}"] == s for i, s in zip(scores.image_id, scores.score))


@pytest.mark.slow  # an outcome check
@pytest.mark.pinned
def test_an_array_of_16_channels_is_recorded_whole_and_two_threads_each_drive_their_own(tmp):
    spec, log, sim = start_rig(tmp, "zmq", channels=16, noise="multiplicative:0.2", seed=4)
    assert not {3, 7} & set(sim.silent.tolist())
    first, second = session(tmp / "s", [{"channel": 3}, {"channel": 7}], generations=12, neuron=spec,
                            retest="auto")
    channels = {a["id"]: a["channels"] for a in sent(log)}
    for k, (result, channel) in enumerate(((first, 3), (second, 7))):
        run = evolver.open_run(result.path)
        assert run.config["run"]["neuron"].endswith(f":channel={channel}")
        for gen in range(12):
            recorded = run.channels(gen)
            assert recorded.shape[1] == 2 + 16
            assert np.array_equal(recorded.iloc[:, 2:].to_numpy(dtype=float),
                                  [channels[f"{k}:{i}"] for i in recorded.image_id])
            assert (recorded[f"channel_{channel}"].to_numpy() == run.scores[run.scores.gen == gen].score).all()
        means = run.generations["mean"]
        assert means.iloc[-3:].mean() > 1.5 * means.iloc[:3].mean()  # its own channel rises
    assert all(np.allclose(np.asarray(c)[sim.silent], 0) for c in channels.values())


@pytest.mark.slow
@pytest.mark.pinned
@pytest.mark.parametrize("protocol", ["folder", "zmq"])
def test_a_session_killed_mid_block_resumes_to_an_uninterrupted_sessions_files(tmp, protocol):
    """evolver in a process of its own, killed (SIGKILL) while the rig presents a block; resumed against the
    same rig-sim process, the session's files equal those of a session never killed."""
    from test_recorded import Rig

    for name in ("whole", "killed"):
        (tmp / name).mkdir()
    rigs = {name: Rig(tmp / name, protocol, "--delay", "0.3") for name in ("whole", "killed")}
    try:
        def args(name):
            return ["run", "--neuron", rigs[name].spec + ":timeout=20", "--generations", "6", "--precision", "fp32",
                    "--retest", "none", "--quiet", "--thread", "generator=dcgan", "--thread",
                    "generator=stimuli,optimizer=ga", "--out", tmp / name / "session"]

        evolver_process(*args("whole"), check=True)
        killed = subprocess.Popen([sys.executable, "-m", "evolver", *map(str, args("killed"))],
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
        blocks, deadline = tmp / "killed" / "session" / "blocks.csv", time.monotonic() + 120

        def presenting() -> bool:  # generation 2 committed, and generation 3's block out to the rig
            if not (blocks.is_file() and "\n2," in blocks.read_text()):
                return False
            return protocol == "zmq" or any((tmp / "killed" / "exchange").glob("block003_*.png"))

        while time.monotonic() < deadline and not presenting():
            time.sleep(0.01)
        time.sleep(0.1 if protocol == "zmq" else 0.0)  # into the block, which the rig takes 0.3 s to present
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert pd.read_csv(blocks).gen.max() == 2  # generation 3 was being shown, not recorded
        evolver.resume(tmp / "killed" / "session", progress=False)
        same_records(tmp / "whole" / "session", tmp / "killed" / "session")
    finally:
        for rig in rigs.values():
            rig.stop()


def test_a_damaged_session_is_refused_by_name_and_nothing_is_written(tmp):
    from evolver.records import read_state, state_bytes

    session(tmp / "s", generations=2)
    state = tmp / "s" / "state" / "session.npz"
    good = state.read_bytes()
    tree = read_state(state)
    blocks, record = (tmp / "s" / "blocks.csv").read_bytes(), (tmp / "s" / "session.json").read_text()
    for damage, message in (
            (lambda: state.write_bytes(state_bytes({**tree, "schema_version": 2})), "does not hold a session's commit"),
            (lambda: state.write_bytes(b"not a state"), "is damaged"),
            (lambda: (tmp / "s" / "blocks.csv").write_bytes(blocks[:40]), "shorter than the session's commit"),
            (lambda: (tmp / "s" / "session.json").write_text("{"), "session.json is damaged")):
        snapshot = {p: p.read_bytes() for p in (tmp / "s").rglob("*.csv")}
        damage()
        with pytest.raises(BadInput, match=message):
            evolver.resume(tmp / "s", progress=False, generations=4)
        assert all(p.read_bytes() == data for p, data in snapshot.items() if p.name != "blocks.csv")
        if "json" in message:
            with pytest.raises(BadInput, match=message):
                evolver.open_session(tmp / "s")
        state.write_bytes(good)
        (tmp / "s" / "blocks.csv").write_bytes(blocks)
        (tmp / "s" / "session.json").write_text(record)
    assert [r.generations for r in evolver.resume(tmp / "s", progress=False, generations=4)] == [4, 4]


def test_threads_may_not_share_an_optimizer_object(tmp):
    from evolver import optimizers
    from generators.dcgan import bundled_code_dim

    dim = bundled_code_dim()
    shared = optimizers.create("ga", code_dim=dim, sample=lambda n, rng: rng.standard_normal((n, dim)),
                               rng=np.random.default_rng(0))
    with pytest.raises(BadInput, match="share an optimizer object"):
        session(tmp / "s", [{}, {}], optimizer=shared)
