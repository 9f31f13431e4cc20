import numpy as np

from evolver.records import RunDirectory, read_state, state_bytes
from evolver_common import write_atomic


def test_state_round_trip_keeps_arrays_big_ints_and_nan(tmp):
    rng = np.random.default_rng(0)
    tree = {"rng": rng.bit_generator.state, "codes": rng.standard_normal((3, 4)).astype(np.float32),
            "nested": [{"a": np.arange(3)}, 1.5, None, "x"], "nan": float("nan")}
    (tmp / "s.npz").write_bytes(state_bytes(tree))
    back = read_state(tmp / "s.npz")
    assert back["rng"] == tree["rng"]
    np.testing.assert_array_equal(back["codes"], tree["codes"])
    assert back["codes"].dtype == np.float32
    np.testing.assert_array_equal(back["nested"][0]["a"], np.arange(3))
    assert back["nested"][1:] == [1.5, None, "x"] and np.isnan(back["nan"])


def test_atomic_write_leaves_no_temporary_files(tmp):
    write_atomic(tmp / "sub" / "f.bin", b"abc")
    write_atomic(tmp / "sub" / "f.bin", b"defg")
    assert [p.name for p in (tmp / "sub").iterdir()] == ["f.bin"]
    assert (tmp / "sub" / "f.bin").read_bytes() == b"defg"


def test_uncommitted_rows_are_invisible_and_rolled_back(tmp):
    run = RunDirectory.create(tmp / "run", {"run": {}})
    run.append_rows("generations.csv", [(0, 2, 1.0, 0.5, 0.1, 1.0, 0.01)])
    run.append_rows("scores.csv", [(0, 0, "", 1.0), (0, 1, "", 0.0)])
    run.commit({"generation": 0})
    run.append_rows("generations.csv", [(1, 2, 2.0, 0.5, 0.1, 2.0, 0.01)])
    with open(run.path / "scores.csv", "a") as f:
        f.write("1,2,0;1,0.")  # a row cut short by a kill
    (run.path / ".best.png.x1y2.tmp").write_bytes(b"\x89PN")  # and a file it caught inside write_atomic
    assert run.table("generations.csv")["gen"].tolist() == [0]
    assert len(run.table("scores.csv")) == 2
    assert run.roll_back()["generation"] == 0
    assert not list(run.path.rglob("*.tmp"))
    assert (run.path / "scores.csv").read_text().splitlines()[-1] == "0,1,,0.0"
    assert run.table("generations.csv")["best"].tolist() == [1.0]
