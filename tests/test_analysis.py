"""After the evolution (evolver.analysis): images shown again, receptive fields, tuning landscapes."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import evolver
import neurons
from conftest import evolver_cli
from evolver.analysis import landscape as landscapes
from evolver.analysis import rf
from evolver.analysis.show import gather
from evolver_common import BadInput, Interrupted
from evolver_common.images import png_bytes

SIMPLE, COMPLEX = "v1:simple:ori=0:sf=4", "v1:complex:ori=90:sf=4"


def image_files(folder, n=3, side=32, seed=0):
    """`n` random PNG images in `folder` (made), and their pixels (n, 3, side, side) in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))
    for k, image in enumerate(pixels):
        (folder / f"image{k}.png").write_bytes(png_bytes(image))
    return (pixels * 255).round() / 255


# ------------------------------------------------------------------------------------------------ show

def test_show_gives_each_neurons_mean_and_its_mean_over_its_best_reference(tmp):
    shown = image_files(tmp / "mine")
    references = image_files(tmp / "references", n=4, seed=1)
    result = evolver.show([tmp / "mine"], [SIMPLE, COMPLEX], out=tmp / "show", repeats=2,
                          reference=str(tmp / "references"))
    table = result.transfer
    assert table.image.tolist() == ["stim0", "stim1", "stim2"]
    for k, spec in enumerate((SIMPLE, COMPLEX)):
        neuron = neurons.create(spec)
        assert np.allclose(table[f"mean_{k}"], neuron(shown), atol=1e-6)
        assert np.allclose(table[f"normalised_{k}"], neuron(shown) / neuron(references).max(), atol=1e-5)
        assert (table[f"sem_{k}"] < 1e-6).all()  # a model neuron answers alike every time
    presentations = pd.read_csv(result.path / "presentations.csv")
    assert len(presentations) == 2 * 2 * 7 and (presentations.groupby("block").image.nunique() == 7).all()
    orders = [tuple(b.image) for _, b in presentations.sort_values("position").groupby("block")]
    assert len(set(orders)) > 1  # each block in an order of its own
    page = (result.path / "page.html").read_text()
    assert page.count("data:image/png;base64") == 3 and "best reference mean" in page


def test_show_reads_a_runs_returned_image_a_generations_best_and_its_best_n(tmp):
    evolver.run(neuron=SIMPLE, generator="stimuli", generations=3, out=tmp / "run", progress=False)
    run = evolver.open_run(tmp / "run")
    stimuli = gather([tmp / "run", f"{tmp / 'run'}:gen=1", f"{tmp / 'run'}:best=2"], None)
    assert stimuli.table.kind.tolist() == ["image"] * 4
    assert np.array_equal((stimuli.images[0].permute(1, 2, 0) * 255).round().byte().numpy(), run.best.image)
    assert np.array_equal((stimuli.images[1].permute(1, 2, 0) * 255).round().byte().numpy(), run.top_image(1))
    best = run.scores.sort_values("score", ascending=False).image_id.iloc[0]
    assert f"image {best} " in stimuli.table.source[2]
    assert torch.allclose(stimuli.images[2], stimuli.images[0], atol=1 / 255)  # the best image is the returned one


def test_show_with_noise_records_told_and_noise_free_responses_and_their_sem(tmp):
    image_files(tmp / "mine", n=2)
    result = evolver.show([tmp / "mine"], [SIMPLE], out=tmp / "show", repeats=6, reference=None,
                          noise="gaussian:sd=0.01")
    presentations = pd.read_csv(result.path / "presentations.csv")
    assert (presentations.response != presentations.response_clean).all()
    spread = presentations.groupby("image").response.std() / np.sqrt(6)
    assert np.allclose(result.transfer.sem_0, spread.loc[result.transfer.image])
    again = evolver.show([tmp / "mine"], [SIMPLE], out=tmp / "again", repeats=6, reference=None,
                         noise="gaussian:sd=0.01")
    assert again.transfer.equals(result.transfer)  # the seed fixes the noise


def test_missing_responses_are_shown_again_and_a_killed_show_continues_to_the_same_record(tmp):
    image_files(tmp / "mine", n=5)

    class Lossy(neurons.Neuron):
        spec, weights, outputs = "python:lossy", "none", 1

        def __init__(self, stop_at=None):
            self.calls, self.stop_at, self.first = 0, stop_at, True

        def __call__(self, images):
            return self.respond(images)

        def respond(self, images, ids=None):
            self.calls += 1
            if self.calls == self.stop_at:
                raise KeyboardInterrupt
            answers = images.mean(dim=(1, 2, 3)).double().numpy()
            if len(images) == 5:  # a whole block: the first two images it shows come back empty
                answers[:2] = np.nan
            return answers

    whole = evolver.show([tmp / "mine"], [Lossy()], out=tmp / "whole", repeats=3, reference=None)
    presentations = pd.read_csv(whole.path / "presentations.csv")
    assert presentations.response.notna().all() and presentations.shown_again.sum() == 3 * 2
    assert set(presentations[presentations.shown_again == 1].position) == {0, 1}
    with pytest.raises(Interrupted, match="holds 1 finished block"):
        evolver.show([tmp / "mine"], [Lossy(stop_at=3)], out=tmp / "cut", repeats=3, reference=None)
    resumed = evolver.show([tmp / "mine"], [Lossy()], out=tmp / "cut", repeats=3, reference=None)
    assert (tmp / "cut" / "presentations.csv").read_bytes() == (tmp / "whole" / "presentations.csv").read_bytes()
    assert resumed.transfer.equals(whole.transfer)


def test_a_folder_cut_mid_block_is_rolled_back_to_its_committed_rows(tmp):
    image_files(tmp / "mine", n=2)
    evolver.show([tmp / "mine"], [SIMPLE], out=tmp / "show", repeats=2, reference=None)
    table = tmp / "show" / "presentations.csv"
    whole = table.read_bytes()
    state = json.loads((tmp / "show" / "state.json").read_text())
    first_block = whole[:whole.index(b"\n0,1,")] + b"\n"  # the header and block 0
    (tmp / "show" / "state.json").write_text(json.dumps({**state, "blocks": 1, "bytes": len(first_block)}))
    table.write_bytes(first_block + b"0,1,1,0,stim0,0.12")  # block 1 half-written when killed
    evolver.show([tmp / "mine"], [SIMPLE], out=tmp / "show", repeats=2, reference=None)
    assert table.read_bytes() == whole


def test_a_damaged_folder_is_refused_by_name_and_a_creation_cut_short_is_made_again(tmp):
    image_files(tmp / "mine", n=2)
    options = dict(out=tmp / "show", repeats=2, reference=None)
    whole = evolver.show([tmp / "mine"], [SIMPLE], **options)
    table, state = tmp / "show" / "presentations.csv", tmp / "show" / "state.json"
    kept = table.read_bytes()
    table.write_bytes(kept[:40])
    with pytest.raises(BadInput, match="fewer than the .* committed"):
        evolver.show([tmp / "mine"], [SIMPLE], **options)
    table.write_bytes(kept)
    state.write_text("{not json")
    with pytest.raises(BadInput, match=r"state.json or presentations.csv cannot be\s+read"):
        evolver.show([tmp / "mine"], [SIMPLE], **options)
    (tmp / "cut").mkdir()  # killed while it was being made: its images written, analysis.json not yet
    (tmp / "cut" / "stimuli.npy").write_bytes(b"half")
    again = evolver.show([tmp / "mine"], [SIMPLE], **{**options, "out": tmp / "cut"})
    assert again.transfer.equals(whole.transfer)
    (tmp / "other").mkdir()
    (tmp / "other" / "notes.txt").write_text("a lab's notes")
    with pytest.raises(BadInput, match="holds files but no analysis.json"):
        evolver.show([tmp / "mine"], [SIMPLE], **{**options, "out": tmp / "other"})


def test_show_refuses_bad_input_in_a_paragraph(tmp):
    image_files(tmp / "mine", n=1)
    (tmp / "not-an-image.png").write_text("text")
    for k, (args, says) in enumerate((
            ([tmp / "nothing-here"], "neither a run or session folder"),
            ([f"{tmp / 'mine'}:gen=2"], "is not a run folder"),
            ([tmp / "mine", "--neuron", "resnet18:layer1:unit0-3", "--weights", "random"], "one unit at a time"),
            ([tmp / "mine", "--reference", "procedural:0"], "--reference none"),
            ([tmp / "mine", "--repeats", "0"], "1 to 1,000 times"),
            ([tmp / "mine", "--noise", "poisson:rate"], "Malformed noise spec"),
            ([tmp / "not-an-image.png"], "could not be read as an image"))):
        neuron = [] if "--neuron" in args else ["--neuron", SIMPLE]
        result = evolver_cli("show", *args, *neuron, "--out", tmp / f"out{k}", "--quiet")
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp / f"out{k}" / "analysis.json").exists()
    evolver_cli("show", tmp / "mine", "--neuron", SIMPLE, "--out", tmp / "done", "--quiet", "--repeats", "1",
                "--reference", "none", check=True)
    other = evolver_cli("show", tmp / "mine", "--neuron", COMPLEX, "--out", tmp / "done", "--quiet", "--repeats", "1",
                        "--reference", "none")
    assert other.returncode == 2 and "holds another analysis (its neurons differ" in other.stderr


def test_the_show_command_prints_the_transfer_table_and_the_folder(tmp):
    image_files(tmp / "mine", n=2)
    result = evolver_cli("show", tmp / "mine", "--neuron", SIMPLE, "--neuron", COMPLEX, "--repeats", "1",
                         "--reference", "procedural:5", "--out", tmp / "show", "--quiet", check=True)
    assert "normalised_1" in result.stdout and str(tmp / "show") in result.stdout
    assert (tmp / "show" / "transfer.csv").is_file() and (tmp / "show" / "page.html").is_file()


# ------------------------------------------------------------------------------------------------ rf

def test_a_gaussian_map_is_fitted_back_to_its_centre_and_size():
    ys, xs = np.meshgrid((np.arange(40) + 0.5) / 40, (np.arange(40) + 0.5) / 40, indexing="ij")
    field_map = 3 + 2 * np.exp(-((xs - 0.3) ** 2) / (2 * 0.05 ** 2) - (ys - 0.65) ** 2 / (2 * 0.1 ** 2))
    field = rf.fit_gaussian(field_map)
    assert (field.x, field.y) == pytest.approx((0.3, 0.65), abs=1e-4)
    assert sorted([field.sigma_x, field.sigma_y]) == pytest.approx([0.05, 0.1], abs=1e-4)
    assert field.size == pytest.approx(math.sqrt(0.005), abs=1e-4) and field.r2 > 0.999
    with pytest.raises(BadInput, match="flat"):
        rf.fit_gaussian(np.ones((5, 5)))


def test_the_patch_map_is_each_cells_change_from_the_grey_screen():
    stimuli = rf.patch_stimuli(8, 2)
    assert len(stimuli) == 9 and stimuli.table.kind.tolist() == ["blank"] + ["patch"] * 8
    assert torch.all(stimuli.images[0] == 128 / 255) and torch.all(stimuli.images[1, :, :4, :4] == 1)
    assert torch.all(stimuli.images[2, :, :4, :4] == 0) and torch.all(stimuli.images[2, :, 4:, :] == 128 / 255)
    responses = stimuli.table.assign(mean=[1.0, 3.0, -1.0, 1.0, 1.0, 1.5, 0.5, 1.0, 2.0])
    assert rf.patch_map(responses, 2).tolist() == [[2.0, 0.0], [0.5, 0.5]]


def test_rf_writes_its_map_fit_and_page_and_refuses_bad_settings(tmp):
    result = evolver.receptive_field("v1:complex:x=0.3:y=0.6:size=0.1", tmp / "rf", method="patches", size=32, grid=8)
    assert result.method == "patches" and result.map.shape == (8, 8)
    assert np.array_equal(np.load(tmp / "rf" / "map.npy"), result.map)
    assert json.loads((tmp / "rf" / "field.json").read_text())["x"] == pytest.approx(result.field.x)
    assert "Receptive field of v1:complex" in (tmp / "rf" / "page.html").read_text()
    for options, says in (({"method": "spikes"}, "--method 'spikes'"), ({"grid": 1}, "--grid 2 to 64"),
                          ({"method": "gradient", "noise": "gaussian:sd=1"}, "shows none")):
        with pytest.raises(BadInput, match=says):
            evolver.receptive_field(SIMPLE, tmp / "bad", **options)


def test_rf_chooses_patches_for_a_neuron_without_a_gradient(tmp):
    def brightness_of_the_top_left(images):
        return images[:, :, :8, :8].mean(dim=(1, 2, 3)).numpy()  # numpy: no gradient

    result = evolver.receptive_field(brightness_of_the_top_left, tmp / "rf", size=32, grid=8)
    assert result.method == "patches"
    assert result.field.x < 0.25 and result.field.y < 0.25


@pytest.mark.slow  # an outcome check
@pytest.mark.parametrize("method", ["gradient", "patches"])
def test_rf_finds_v1_cells_off_centre_within_005_of_the_width_and_20_percent_of_their_size(tmp, method):
    cells = [(0.3, 0.6, 0.08, "simple", 8, 0), (0.7, 0.35, 0.12, "complex", 6, 45),
             (0.25, 0.25, 0.06, "complex", 10, 90),
             (0.6, 0.7, 0.15, "simple", 6, 30), (0.8, 0.8, 0.1, "simple", 5, 135)]
    for x, y, size, kind, sf, ori in cells:
        spec = f"v1:{kind}:x={x}:y={y}:size={size}:sf={sf}:ori={ori}"
        field = evolver.receptive_field(spec, tmp / spec, method=method).field
        assert abs(field.x - x) < 0.05 and abs(field.y - y) < 0.05, (spec, field)
        assert abs(field.size / size - 1) < 0.2, (spec, field)


@pytest.mark.slow  # an outcome check
@pytest.mark.parametrize("method", ["gradient", "patches"])
def test_a_cnn_units_field_moves_with_the_position_it_is_read_at(tmp, method):
    """stimnet's relu3 is a 16 × 16 grid: reading (4, 4) and then (11, 8) moves the field by 7/16 and 4/16."""
    first, second = (evolver.receptive_field(f"stimnet:relu3:unit5@{x},{y}", tmp / f"{x}-{y}", method=method).field
                     for x, y in ((4, 4), (11, 8)))
    assert second.x - first.x == pytest.approx(7 / 16, abs=0.05)
    assert second.y - first.y == pytest.approx(4 / 16, abs=0.05)
    if method == "gradient":  # the gradient is centred on the position read; patches on what drives it there
        assert (first.x, first.y) == pytest.approx((4.5 / 16, 4.5 / 16), abs=0.05)


# ------------------------------------------------------------------------------------------------ landscape

def test_the_sphere_grid_is_the_evolved_code_at_its_centre_and_keeps_its_norm():
    rng = np.random.default_rng(0)
    code = rng.standard_normal(20)
    u2, u3 = np.linalg.qr(np.c_[code, rng.standard_normal((20, 2))])[0][:, 1:].T
    steps = np.linspace(-90, 90, 5)
    codes = landscapes.sphere_codes(code, u2, u3, steps, steps).reshape(5, 5, 20)
    assert np.allclose(codes[2, 2], code, atol=1e-5)
    assert np.allclose(np.linalg.norm(codes, axis=-1), np.linalg.norm(code), atol=1e-4)
    assert np.allclose(codes[2, 4], np.linalg.norm(code) * u2, atol=1e-5)  # az 90°: along u2
    assert np.allclose(codes[4, 0], np.linalg.norm(code) * u3, atol=1e-5)  # el 90°: u3, whatever the az


def test_a_kent_map_is_fitted_back_to_its_peak_and_widths():
    steps = np.linspace(-90, 90, 11)
    a, e = np.meshgrid(np.radians(steps), np.radians(steps))
    truth = (math.radians(18), math.radians(-9), 0.3, 6.0, 0.5, 2.0, 0.5)
    field_map = landscapes._kent(np.stack([a.ravel(), e.ravel()]), *truth).reshape(11, 11)
    fit = landscapes.fit_kent(field_map, steps, steps)
    assert (fit.az, fit.el) == pytest.approx((18, -9), abs=0.5)
    assert (fit.kappa, fit.beta) == pytest.approx((6.0, 1.5), rel=0.02)
    assert fit.width_major == pytest.approx(math.degrees(1 / math.sqrt(3)), rel=0.02) and fit.r2 > 0.999


def test_a_landscape_shows_its_runs_neuron_the_grid_around_the_evolved_code(tmp):
    evolver.run(neuron=SIMPLE, generator="stimuli", generations=4, out=tmp / "run", progress=False)
    result = evolver.landscape(tmp / "run", grid=5, span=60)
    assert result.path == tmp / "run-landscape" and result.map.shape == (5, 5)
    assert result.az.tolist() == result.el.tolist() == [-60, -30, 0, 30, 60]
    table = pd.read_csv(result.path / "stimuli.csv")
    assert table.az.tolist()[:5] == [-60, -30, 0, 30, 60] and table.el.tolist()[:5] == [-60] * 5
    images = np.load(result.path / "stimuli.npy")
    centre = torch.from_numpy(images[12]).permute(2, 0, 1)[None].float() / 255
    assert result.map[2, 2] == pytest.approx(float(neurons.create(SIMPLE)(centre)[0]))
    run = evolver.open_run(tmp / "run")
    drawn = run.generator.render(run.best.code[None])
    assert np.abs(images[12].astype(int) - (drawn[0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1
    assert "Tuning landscape of v1:simple" in (result.path / "page.html").read_text()
    again = evolver_cli("landscape", tmp / "run", "--grid", "5", "--span", "60", "--quiet", check=True)
    assert "Largest mean response at" in again.stdout  # the same command continues (here: finds it done)


def test_a_sessions_thread_has_a_landscape_of_its_own(tmp):
    evolver.run(neuron=SIMPLE, generator="stimuli", generations=3, out=tmp / "session", progress=False,
                threads=[{"seed": 1}, {"seed": 2, "optimizer": "random"}])
    first, second = (evolver.landscape(tmp / "session" / f"thread{k}", grid=5, span=45) for k in (0, 1))
    assert first.path == tmp / "session" / "thread0-landscape" and first.map[2, 2] != second.map[2, 2]
    for k, result in enumerate((first, second)):  # the middle of each grid is its own thread's evolved image
        assert result.map[2, 2] == pytest.approx(evolver.open_run(tmp / "session" / f"thread{k}").best.response,
                                                 rel=0.05)


def test_landscape_refuses_what_is_no_finished_trajectory(tmp):
    evolver.run(neuron=SIMPLE, generator="stimuli", generations=2, out=tmp / "short", progress=False)
    for args, says in (([tmp / "nothing"], "is not an evolver run folder"),
                       ([tmp / "short"], "a trajectory of at least 3 generations"),
                       ([tmp / "short", "--grid", "4"], "--grid 5 to 41")):
        result = evolver_cli("landscape", *args, "--quiet")
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow  # an outcome check
def test_a_stimnet_units_landscape_peaks_at_its_evolved_code(tmp):
    """The main job's unit (the classifier's 'star'), whose evolved image drives it far above its best corpus image:
    its landscape peaks at the evolved code (a unit that saturates, such as the classifier's unit 3, has a plateau
    there instead, on which the largest mean may lie two steps away: 7.91 against 7.81 at the code in fp32)."""
    evolver.run(neuron="stimnet:classifier:unit7", generations=100, out=tmp / "run", progress=False)
    result = evolver.landscape(tmp / "run")
    assert max(abs(result.peak[0]), abs(result.peak[1])) <= 18  # within one grid step of (0°, 0°)
    assert max(abs(result.fit.az), abs(result.fit.el)) <= 27  # the fitted peak: within a step and a half


@pytest.mark.slow  # an outcome check, through a rig
def test_images_shown_to_rig_sim_over_the_folder_protocol_get_the_responses_it_logged(tmp):
    """rig-sim plays stimnet's unit 7 with Poisson noise over the folder protocol; `show` with it and the noise-free
    model of the same unit records, for the rig, exactly the responses rig-sim logged for each block's images."""
    from test_sessions import NEURON, sent, start_rig

    spec, log, _ = start_rig(tmp, "folder", noise="poisson:count=20", seed=3)
    image_files(tmp / "mine", n=3, side=64)
    result = evolver.show([tmp / "mine"], [spec, NEURON], out=tmp / "show", repeats=4, reference="procedural:12")
    presentations = pd.read_csv(result.path / "presentations.csv")
    rig = presentations[presentations.neuron == 0]
    logged = {(a["block"], a["id"]): a["response"] for a in sent(log)}
    assert len(rig) == 4 * 15 and len(logged) == len(rig)
    assert all(logged[b, i] == r for b, i, r in zip(rig.block, rig.image, rig.response))
    assert rig.groupby("image").response.nunique().max() > 1  # the rig's answers vary; the table keeps each
    table = result.transfer
    spread = rig.groupby("image").response.std().loc[table.image] / 2  # s.e.m. of 4 presentations
    assert np.allclose(table.sem_0, spread) and np.allclose(table.sem_1, 0, atol=1e-4)
    model = neurons.create(NEURON, device="cpu", precision="fp32")
    stored = torch.from_numpy(np.load(result.path / "stimuli.npy")).permute(0, 3, 1, 2).float() / 255
    assert np.allclose(table.mean_1, model(stored[:3]), atol=0.05 * np.abs(model(stored[:3])).max())


@pytest.mark.slow  # an outcome check, through a rig
def test_a_rigs_field_is_mapped_by_patches_and_its_runs_landscape_is_shown_through_it(tmp):
    from test_sessions import sent, start_rig

    cell = "v1:complex:x=0.3:y=0.7:size=0.1:sf=6"
    spec, _, _ = start_rig(tmp, "folder", neuron=cell, noise="poisson:count=30", seed=1)
    assert getattr(neurons.create(spec), "noisy", False)
    result = evolver.receptive_field(spec, tmp / "rf", grid=12, size=96)
    assert result.method == "patches" and json.loads((tmp / "rf" / "analysis.json").read_text())["settings"][
        "repeats"] == 5  # a noisy neuron: 5 presentations an image by default
    assert abs(result.field.x - 0.3) < 0.05 and abs(result.field.y - 0.7) < 0.05
    assert abs(result.field.size / 0.1 - 1) < 0.2
    (tmp / "second").mkdir()  # a folder rig's exchange folder serves one run or analysis: the run gets its own
    spec, log, _ = start_rig(tmp / "second", "folder", neuron=cell, noise="poisson:count=30", seed=2)
    evolver.run(neuron=spec, generator="stimuli", generations=4, out=tmp / "run", progress=False)
    landscape = evolver.landscape(tmp / "run", grid=5, repeats=2)  # the run's rig, its session going on
    assert [a["block"] for a in sent(log)][-1] == 4 + 2 - 1
    presentations = pd.read_csv(landscape.path / "presentations.csv")
    assert len(presentations) == 2 * 25 and presentations.response.notna().all()
