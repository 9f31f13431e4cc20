"""Property-based fuzzing of everything that reads outside input: spec strings, expressions, noise and
optimizer parameters, sweep specs, rig messages and files, and run state files. Whatever comes in, the
answer is a result or a BadInput with its message, never another exception (a traceback for the user).

Each test tries `EXAMPLES` inputs (hypothesis's `max_examples`), drawn around the valid grammar so that
most reach deep into the parsers rather than failing at the first character.
"""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evolver import optimizers
from evolver.records import read_state, state_bytes
from evolver.sweep import check_spec, plan
from evolver_common import BadInput
from neurons.noise import Noise
from neurons.objective import parse
from neurons.recorded import Block
from neurons.rig_folder import FolderRig
from neurons.rig_zmq import parse_message
from neurons.spec import UnitSpec
from neurons.v1 import V1Cell

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                              HealthCheck.function_scoped_fixture])

# pieces of valid input, recombined with noise
NUMBERS = st.one_of(st.integers(-10, 10**12).map(str), st.sampled_from(["nan", "inf", "-inf", "1e999", "9" * 5000,
                                                                        "0x10", "", "-", "1.5", "007"]))
WORDS = st.sampled_from(["stimnet", "relu4", "unit", "resnet18", "layer4", "v1", "simple", "complex", "ori", "sf",
                         "template", "encoder", "mean", "max", "min", "onehot", "folder", "zmq", "cls"])
PUNCT = st.sampled_from([":", "-", "+", "*", "(", ")", ",", "[", "]", "@", "=", " ", "(" * 100, "-" * 300, "mean(" * 80])
PIECES = st.lists(st.one_of(NUMBERS, WORDS, PUNCT, st.text(max_size=5)), max_size=24).map("".join)
# specs and expressions built by the grammar, with hostile numbers in their places
INDICES = st.one_of(st.integers(0, 2000).map(str), NUMBERS)
UNITS = st.one_of(INDICES.map(lambda u: f"unit{u}"), INDICES,
                  st.tuples(INDICES, INDICES).map(lambda r: f"unit{r[0]}-{r[1]}"),
                  st.lists(st.one_of(INDICES, st.tuples(INDICES, INDICES).map("-".join)), max_size=4)
                  .map(lambda items: "unit[" + ",".join(items) + "]"))
SPECS = st.builds(lambda model, layer, units, where: f"{model}:{layer}:{units}{where}",
                  st.sampled_from(["stimnet", "resnet18", "m"]), st.sampled_from(["relu4", "layer4", "classifier"]),
                  UNITS, st.one_of(st.sampled_from(["", "@mean", "@cls", "@", "@1"]),
                                   st.tuples(INDICES, INDICES).map(lambda xy: f"@{xy[0]},{xy[1]}")))
EXPRESSIONS = st.recursive(SPECS, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from([" + ", " - ", "-", "+"]), inner).map("".join),
    st.tuples(NUMBERS, inner).map(lambda n: f"{n[0]}*{n[1]}"),
    inner.map(lambda e: f"({e})"), inner.map(lambda e: f"-{e}"),
    st.tuples(st.sampled_from(["mean", "max", "min", "onehot", "sum"]), inner).map(lambda c: f"{c[0]}({c[1]})"),
    st.tuples(inner, INDICES, st.sampled_from(["", ", max", ", mean", ", 3"]))
    .map(lambda c: f"onehot({c[0]}, {c[1]}{c[2]})")), max_leaves=12)


def refused_or_fine(call, *args):
    """Run `call(*args)`: a result, or BadInput (its message non-empty); anything else fails the test."""
    try:
        return call(*args)
    except BadInput as err:
        assert str(err).strip()
        return None


@FUZZ
@given(st.one_of(PIECES, SPECS))
def test_unit_specs(text):
    refused_or_fine(UnitSpec.parse, text)


@FUZZ
@given(st.one_of(PIECES, EXPRESSIONS))
def test_expressions(text):
    refused_or_fine(parse, text)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["v1:simple", "v1:complex", "ori=", "sf=", "x=", "y=", "size=", "phase=",
                                           ":"]), NUMBERS), max_size=10).map("".join))
def test_v1_specs(text):
    refused_or_fine(V1Cell.parse, text)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["generator=", "optimizer=", "seed=", "channel=", "generations=", "params=",
                                           "generator_weights=", "ga", "dcgan", "stimuli:layers=", ":population=",
                                           ",", ":", "="]), NUMBERS), max_size=10).map("".join))
def test_thread_texts(text):
    from evolver.session import Thread

    refused_or_fine(Thread.parse, text)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["poisson:", "multiplicative:", "gaussian:", "max_rate=", "reps=", "sd=",
                                           ","]), NUMBERS), max_size=8).map("".join))
def test_noise_specs(text):
    noise = refused_or_fine(Noise.parse, text)
    if noise is not None:
        responses = np.array([0.0, 1.0, 1e30, np.nan, -3.0, np.inf])
        assert noise(responses, np.random.default_rng(0)).shape == responses.shape


@FUZZ
@given(st.sampled_from(sorted(optimizers.REGISTRY.available())),
       st.dictionaries(st.sampled_from(["population", "sigma0", "start", "selectivity", "mutation_rate", "lr",
                                        "angle_start", "n_conserve", "heritability", "nonsense"]), NUMBERS, max_size=3))
def test_optimizer_params(name, params):
    def build():
        sample = lambda n, rng: rng.standard_normal((n, 8)).astype(np.float32)  # noqa: E731
        optimizer = optimizers.create(name, 8, sample, np.random.default_rng(0), **params)
        codes = optimizer.ask()
        optimizer.tell(codes, np.arange(len(codes), dtype=float))

    refused_or_fine(build)


TOML_VALUES = st.one_of(st.integers(-5, 10**20), st.text(max_size=8), st.booleans(), st.floats(allow_nan=True),
                        st.lists(st.one_of(st.integers(-2, 5), st.text(max_size=6),
                                           st.sampled_from(["stimnet:relu4:unit1", "cmaes", "ga", "none", "cmaez"])),
                                 max_size=3))


@FUZZ
@given(st.dictionaries(st.sampled_from(["grid", "params", "run", "extra"]),
                       st.dictionaries(st.sampled_from(["neuron", "optimizer", "seed", "noise", "generator",
                                                        "generations", "images", "ga", "colour"]), TOML_VALUES,
                                       max_size=5), max_size=3))
def test_sweep_specs(spec):
    def planned():
        return plan(check_spec(json.loads(json.dumps(spec, default=str))))

    refused_or_fine(planned)


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=12)


@FUZZ
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda t, b, ids, r: json.dumps({"type": t, "block": b, "ids": ids, "responses": r}).encode(),
              st.sampled_from(["responses", "hello", "heartbeat", "other"]), JSON_VALUES, JSON_VALUES, JSON_VALUES),
    st.integers(1, 100_000).map(lambda n: b"[" * n),
    st.integers(1, 6000).map(lambda n: b'{"type": "responses", "responses": [' + b"9" * n + b"]}"),
))
def test_rig_messages(data):
    message = parse_message(data)
    assert message is None or (isinstance(message, dict) and message["type"] in ("hello", "heartbeat", "responses"))


def _h5_bytes(content: dict) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for name, value in content.items():
            f[name] = value
    return buffer.getvalue()


H5_CONTENT = st.dictionaries(
    st.sampled_from(["scores", "indices", "tEvokedResp", "stimulusID", "other"]),
    st.one_of(st.floats(allow_nan=True).map(np.float64),
              st.lists(st.floats(allow_nan=True), max_size=4).map(lambda v: np.array(v, dtype=np.float64)),
              st.lists(st.integers(-2**63, 2**63 - 1), max_size=4).map(lambda v: np.array(v, dtype=np.int64)),
              st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3).map(lambda v: np.array(v, dtype=np.uint64)),
              st.text(max_size=4).map(lambda s: np.bytes_(s.encode()))),
    max_size=3)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exchange")
    rig = FolderRig(f"folder:{folder}")
    return folder, rig


@FUZZ
@given(H5_CONTENT, st.sampled_from(["h5", "mat"]), st.integers(0, 100), st.binary(max_size=64))
def test_rig_response_files(exchange, content, suffix, cut, garbage):
    """A response file, whole, cut short, or with garbage spliced in: read, or refused (then set aside as malformed)."""
    folder, rig = exchange
    data = _h5_bytes(content)
    data = data[: len(data) * cut // 100] + garbage if cut < 100 else data
    path = folder / f"block000.{suffix}"
    path.write_bytes(data)
    block = Block(0, torch.zeros(2, 3, 4, 4), ["a", "b"])
    with warnings.catch_warnings():  # an unknown id is noted with a warning: expected here
        warnings.simplefilter("ignore")
        try:
            answered = rig.answers(path, block, [rig.image_name(block, i) for i in range(2)])
        except Exception:  # noqa: BLE001 - any failure to read is "not readable": _wait sets the file aside
            answered = {}
    assert set(answered) <= {"a", "b"} and all(np.asarray(v).ndim == 1 for v in answered.values())
    for leftover in folder.iterdir():
        leftover.unlink()


@FUZZ
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=16), st.booleans())
def test_state_files(tmp_path_factory, position, garbage, truncate):
    good = state_bytes({"generation": 3, "optimizer": {"mean": np.arange(5.0), "rng": {"state": 7}},
                        "table_bytes": {"generations.csv": 100}})
    position = position % len(good)
    data = good[:position] if truncate else good[:position] + garbage + good[position + len(garbage):]
    path = tmp_path_factory.getbasetemp() / "state.npz"
    path.write_bytes(data)
    state = refused_or_fine(read_state, path)
    assert state is None or state["generation"] == 3 or data != good


@pytest.fixture(scope="module")
def committed_run(tmp_path_factory):
    """A finished 2-generation run folder and its tables' bytes."""
    import evolver

    out = tmp_path_factory.mktemp("committed") / "run"
    evolver.run(neuron="stimnet:relu4:unit6", generator_weights="random", generations=2, params={"population": 6},
                out=out, progress=False)
    return out, {name: (out / name).read_bytes() for name in ("generations.csv", "scores.csv")}


RECORD_NAMES = ["generations.csv", "scores.csv", "config.json", "state/state.npz", "codes/gen_0001.npy", "best.json",
                ".lock", "state", "codes"]


@FUZZ
@given(st.sampled_from(["link", "cut", "edit", "append"]), st.sampled_from(RECORD_NAMES), st.integers(0, 10**6),
       st.binary(min_size=1, max_size=8))
def test_run_folders(committed_run, tmp_path_factory, mutation, name, position, garbage):
    """A run folder with a record linked elsewhere, cut short, edited or appended to: opening it to continue
    either refuses (BadInput, nothing written through a link) or finds its committed tables as committed."""
    import shutil

    from evolver.records import RunDirectory

    source, original = committed_run
    run = tmp_path_factory.mktemp("mutated") / "run"
    shutil.copytree(source, run)
    victim = run.parent / "victim"
    victim.write_bytes(b"precious")
    target = run / name
    if mutation == "link":
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        target.symlink_to(victim)
    elif target.is_file():
        data = target.read_bytes()
        at = position % (len(data) + 1)
        data = {"cut": data[:at], "edit": data[:at] + garbage + data[at + len(garbage):],
                "append": data + garbage}[mutation]
        target.write_bytes(data)
    try:
        directory = RunDirectory.open(run)
        directory.lock()
        try:
            directory.roll_back()
        finally:
            directory.release()
    except BadInput as err:
        assert str(err).strip()
    else:  # continued: its tables hold exactly what was committed
        for table in ("generations.csv", "scores.csv"):
            assert (run / table).read_bytes() == original[table]
    assert victim.read_bytes() == b"precious"


SECRET = np.array([1.25e-300, 7.5e200, -3.0e-7])  # another file's values: never an answer


def _hostile_dataset(f, folder, kind: str, name: str, size: int) -> None:
    import h5py

    if kind == "external":
        other = folder / "external.bin"
        other.write_bytes(SECRET.tobytes())
        f.create_dataset(name, shape=(3,), dtype="f8", external=[(str(other), 0, SECRET.nbytes)])
    elif kind in ("link", "virtual"):
        with h5py.File(folder / "other.h5", "w") as other:
            other[name] = SECRET
        if kind == "link":
            f[name] = h5py.ExternalLink(str(folder / "other.h5"), name)
        else:
            layout = h5py.VirtualLayout(shape=(3,), dtype="f8")
            layout[:] = h5py.VirtualSource(str(folder / "other.h5"), name, shape=(3,))
            f.create_virtual_dataset(name, layout)
    else:  # a size declared, of chunks never written
        f.create_dataset(name, shape=(size,), dtype="f8", chunks=(min(size, 4096),))


@FUZZ
@given(st.sampled_from(["external", "link", "virtual", "declared"]),
       st.sampled_from(["scores", "indices", "tEvokedResp", "stimulusID"]), st.integers(1, 10**10),
       st.sampled_from(["h5", "mat"]))
def test_rig_files_that_name_other_files_or_declare_sizes(exchange, kind, name, size, suffix):
    """Whatever a response file's datasets are stored in or declare: refused, or answers within the block
    that never hold another file's values (and no allocation of the declared size)."""
    import h5py

    folder, rig = exchange
    path = folder / f"block000.{suffix}"
    valid = {"scores": np.array([1.0, 2.0]), "indices": np.array([0, 1]), "tEvokedResp": np.array([1.0, 2.0]),
             "stimulusID": np.array([[97], [98]], dtype=np.uint16)}
    with h5py.File(path, "w") as f:
        _hostile_dataset(f, folder, kind, name, size)
        for other, value in valid.items():
            if other != name:
                f[other] = value
    block = Block(0, torch.zeros(2, 3, 4, 4), ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            answered = rig.answers(path, block, [rig.image_name(block, i) for i in range(2)])
        except Exception:  # noqa: BLE001 - refused: _wait sets the file aside
            answered = {}
    assert set(answered) <= {"a", "b"}
    for values in answered.values():
        assert not np.isin(np.asarray(values), SECRET).any()
    for leftover in folder.iterdir():
        leftover.unlink()
