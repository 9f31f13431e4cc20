import numpy as np

from evolver.records import RunDirectory, read_state, state_bytes
from evolver.run_state import RunState
from evolver.tables import GENERATIONS, SCORES, Features, GenerationFigures, ScoreRow
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


def figures(gen: int, scores: list[float]) -> GenerationFigures:
    scores = np.array(scores)
    return GenerationFigures(gen, scores, scores, max(scores), max(scores), 0.01, float("nan"), max(scores),
                             max(scores))


def test_uncommitted_rows_are_invisible_and_rolled_back(tmp):
    run = RunDirectory.create(tmp / "run", {"run": {}})
    run.append(GENERATIONS, [figures(0, [1.0, 0.0])])
    run.append(SCORES, [ScoreRow(0, 0, "", 1.0, 1.0), ScoreRow(0, 1, "", 0.0, 0.0)])
    run.commit(RunState(generation=0))
    run.append(GENERATIONS, [figures(1, [2.0, 0.0])])
    with open(run.path / "scores.csv", "a") as f:
        f.write("1,2,0;1,0.")  # a row cut short by a kill
    (run.path / ".best.png.x1y2.tmp").write_bytes(b"\x89PN")  # and a file it caught inside write_atomic
    assert run.table("generations.csv")["gen"].tolist() == [0]
    assert len(run.table("scores.csv")) == 2
    assert run.roll_back().generation == 0
    assert not list(run.path.rglob("*.tmp"))
    assert (run.path / "scores.csv").read_text().splitlines()[-1] == "0,1,,0.0"
    assert run.table("generations.csv")["best"].tolist() == [1.0]


def test_every_row_follows_its_tables_recorded_header(tmp):
    """A header and its rows come from one declaration of the columns; a run keeps the columns it began
    with (a resumed run of an older layout writes no column its header lacks)."""
    noisy = Features(noise=True, retest=True)
    assert GENERATIONS.header(noisy) == ("gen", "n_images", "best", "mean", "std", "best_so_far", "seconds",
                                         "best_clean", "best_clean_so_far", "returned", "returned_clean")
    assert GENERATIONS.header(Features(reference=True, retest=True))[-2:] == ("relative_activation", "returned")
    assert SCORES.header(noisy)[-1] == "score_clean" and "score_clean" not in SCORES.header(Features())
    run = RunDirectory.create(tmp / "run", {"run": {}}, noisy)
    run.append(GENERATIONS, [figures(0, [3.0, np.nan, 1.0])])
    run.commit(RunState(generation=0))
    row = run.table("generations.csv").iloc[0]
    assert list(row.index) == list(GENERATIONS.header(noisy))
    assert (row["n_images"], row["best"], row["mean"], row["returned_clean"]) == (3, 3.0, 2.0, 3.0)
    old = RunDirectory(run.path)
    (old.path / "generations.csv").write_text("gen,n_images,best\n")  # an older, narrower layout
    old.append(GENERATIONS, [figures(1, [5.0])])
    assert (old.path / "generations.csv").read_text().splitlines()[1] == "1,1,5.0"
