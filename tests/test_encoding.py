import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import neurons
from conftest import evolver_cli
from evolver.datasets import load_images, load_responses, load_rois
from evolver.decoding import DecodeOptions, decode, two_way_identification
from evolver.encoding import (FitOptions, SubjectOptions, fit_encoder, noise_ceiling, pearson, simulate_subject,
                              write_fit, write_subject)
from evolver_common import BadInput
from generators.dcgan import bundled_code_dim
from neurons.encoder import EncodingModel, FeatureSpec

SMALL = dict(images=300, voxels=60, seed=0)
FEATURES = FeatureSpec.parse("stimnet:relu2,relu3,relu4", pool=8)


@pytest.fixture(scope="module")
def subject():
    return simulate_subject(SubjectOptions(**SMALL))


@pytest.fixture(scope="module")
def fitted(subject, tmp_path_factory):
    model = fit_encoder(subject["images"], subject["responses"], FEATURES, subject["rois"], FitOptions(pcs=40))
    folder = tmp_path_factory.mktemp("encoder")
    write_fit(model, folder)
    return model, folder


# ------------------------------------------------------------------------------------------ data files

def test_images_read_alike_from_a_folder_npy_and_h5(tmp, subject):
    pixels = (subject["images"][:4].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.save(tmp / "images.npy", pixels)
    with h5py.File(tmp / "images.h5", "w") as f:
        f["imgBrick"] = pixels
    (tmp / "folder").mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp / "folder" / f"{i:03d}.png")
    a, b, c = (load_images(tmp / name) for name in ("images.npy", "images.h5", "folder"))
    assert a.shape == (4, 3, 64, 64) and torch.equal(a, b) and torch.equal(a, c)


def test_responses_read_from_csv_with_a_header_npy_and_h5(tmp):
    values = np.arange(12.0).reshape(4, 3)
    (tmp / "r.csv").write_text("v0,v1,v2\n" + "\n".join(",".join(map(str, row)) for row in values))
    np.save(tmp / "r.npy", values)
    with h5py.File(tmp / "r.h5", "w") as f:
        f["betas"] = np.stack([values, values])
    assert np.array_equal(load_responses(tmp / "r.csv"), values[None])
    assert np.array_equal(load_responses(tmp / "r.npy"), values[None])
    assert load_responses(tmp / "r.h5").shape == (2, 4, 3)


def test_bad_data_files_are_named(tmp):
    with h5py.File(tmp / "two.h5", "w") as f:
        f["a"], f["b"] = np.zeros((2, 3)), np.zeros((2, 3))
    with pytest.raises(BadInput, match="holds 2 arrays.*a, b"):
        load_responses(tmp / "two.h5")
    with pytest.raises(BadInput, match="no array 'c'"):
        load_responses(tmp / "two.h5", key="c")
    (tmp / "rois.txt").write_text("V1\nV4\n")
    with pytest.raises(BadInput, match="name 2 voxels; the responses have 3"):
        load_rois(tmp / "rois.txt", 3)
    with pytest.raises(BadInput, match="does not exist"):
        load_images(tmp / "missing.npy")
    (tmp / "r.csv").write_text("1,2\n3,x\n")
    with pytest.raises(BadInput, match="not a number"):
        load_responses(tmp / "r.csv")


# --------------------------------------------------------------------------------- simulated subject

def test_simulated_subject_shapes_and_noise_ceiling(subject):
    assert subject["images"].shape == (300, 3, 64, 64) and subject["responses"].shape == (2, 300, 60)
    assert subject["rois"] == ["early"] * 20 + ["mid"] * 20 + ["late"] * 20
    truth_ceiling = pearson(subject["truth"].astype(float), subject["responses"].mean(0).astype(float))
    expected = 1 / math.sqrt(1 + 1 / (1.0**2 * 2))  # snr 1, 2 repeats
    assert truth_ceiling.mean() == pytest.approx(expected, abs=0.03)
    assert noise_ceiling(subject["responses"].astype(float)).mean() == pytest.approx(expected, abs=0.05)
    assert noise_ceiling(subject["responses"][:1]) is None


def test_simulated_subject_is_written_in_real_data_formats(tmp):
    described = write_subject(SubjectOptions(images=20, voxels=6, format="h5", source="dcgan"), tmp)
    assert "codes.h5" in described["files"] and load_images(tmp / "images.h5").shape == (20, 3, 64, 64)
    assert load_responses(tmp / "responses.h5").shape == (2, 20, 6) and len(load_rois(tmp / "rois.txt", 6)) == 6


# ---------------------------------------------------------------------------------------------- fitting

def test_fit_reaches_close_to_the_ceiling_on_held_out_images(fitted):
    model, _ = fitted
    info = model.info
    r, ceiling = np.array(info["scores"]["r"]), np.array(info["scores"]["ceiling"])
    assert info["fit"]["solver"] == "BandedRidgeCV" and info["fit"]["images_test"] == 60
    assert np.median(r) > 0.5 and np.median(r) < np.median(ceiling) + 0.1
    assert {row["roi"] for row in info["roi_summary"]} == {"early", "mid", "late"}


def test_saved_model_predicts_what_the_fitted_one_does(fitted, subject):
    model, folder = fitted
    loaded = EncodingModel.load(folder)
    features = [torch.randn(3, len(getattr(model, f"pca_mean_{i}"))) for i in range(model.bands)]
    torch.testing.assert_close(loaded(features), model(features))
    assert json.loads((folder / "encoder.json").read_text())["voxel_ids"] == list(range(60))
    report = (folder / "report.html").read_text()
    assert "held-out r" in report and (folder / "scores.csv").is_file()
    assert 'src="https://' not in report  # plotly.js inside: the report opens on an offline machine


@pytest.mark.parametrize("layers, pcs, solver", [("relu3", 30, "RidgeCV"), ("relu4", 0, "KernelRidgeCV")])
def test_one_layer_uses_ridge_and_more_features_than_images_kernel_ridge(subject, layers, pcs, solver):
    spec = FeatureSpec.parse(f"stimnet:{layers}", pool=8)
    model = fit_encoder(subject["images"], subject["responses"][:, :, :20], spec, options=FitOptions(pcs=pcs))
    assert model.info["fit"]["solver"] == solver and np.median(model.info["scores"]["r"]) > 0.3


def test_nan_voxels_are_dropped_with_a_warning_and_counted(subject):
    responses = subject["responses"][:, :, :12].copy()
    responses[0, 5, 3] = np.nan
    responses[:, :, 7] = np.nan
    with pytest.warns(UserWarning, match="Dropped 2 of 12 voxels"):
        model = fit_encoder(subject["images"], responses, FeatureSpec.parse("stimnet:relu3", pool=4),
                            options=FitOptions(pcs=20))
    assert model.info["dropped_voxels"] == [3, 7] and 3 not in model.info["voxel_ids"]


def test_bad_fitting_input(subject):
    with pytest.raises(BadInput, match="300 images but responses for 299"):
        fit_encoder(subject["images"], subject["responses"][:, :299], FEATURES)
    with pytest.raises(BadInput, match="Every one of the 2 voxels"):
        fit_encoder(subject["images"], np.full((1, 300, 2), np.nan), FEATURES)
    with pytest.raises(BadInput, match="MODEL:LAYER"):
        FeatureSpec.parse("stimnet")


# ---------------------------------------------------------------------------------------- the neurons

def test_encoder_neurons_select_voxels_and_rois(fitted, subject):
    _, folder = fitted
    images = subject["images"][:5]
    predictions = EncodingModel.load(folder)
    everything = neurons.create(f"encoder:{folder}:voxels=0-59")(images)
    assert everything.shape == (5, 60)
    assert np.allclose(neurons.create(f"encoder:{folder}:voxel=12")(images), everything[:, 12], atol=1e-5)
    assert neurons.create(f"encoder:{folder}:voxels=1,5,9").outputs == 3
    late = neurons.create(f"encoder:{folder}:roi=late")
    assert np.allclose(late(images), everything[:, 40:].mean(1), atol=1e-5)
    r = np.array(predictions.info["scores"]["r"])
    strong = neurons.create(f"encoder:{folder}:roi=late:min_r=0.6")
    assert np.allclose(strong(images), everything[:, 40:][:, r[40:] >= 0.6].mean(1), atol=1e-5)


def test_encoder_neuron_is_differentiable_and_composes(fitted, subject):
    _, folder = fitted
    images = subject["images"][:3].clone().requires_grad_(True)
    neurons.create(f"encoder:{folder}:roi=mid").differentiable(images).sum().backward()
    assert images.grad.abs().sum() > 0
    objective = neurons.create(f"encoder:{folder}:roi=late - 0.5*mean(encoder:{folder}:voxels=1,5,9)")
    assert objective(subject["images"][:2]).shape == (2,)


@pytest.mark.parametrize("damage", ["card not JSON", "weights not safetensors", "a tensor missing",
                                    "shapes that do not fit"])
def test_a_damaged_encoder_folder_is_a_one_paragraph_error(fitted, tmp, damage):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(fitted[1], tmp / "encoder"))
    tensors = load_file(folder / "encoder.safetensors")
    if damage == "card not JSON":
        (folder / "encoder.json").write_text("{bands: ")
    elif damage == "weights not safetensors":
        (folder / "encoder.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "a tensor missing":
        save_file({k: v for k, v in tensors.items() if k != "coef"}, folder / "encoder.safetensors")
    else:
        save_file({**tensors, "coef": tensors["coef"][:-3]}, folder / "encoder.safetensors")
    result = evolver_cli("run", "--neuron", f"encoder:{folder}:voxel=0", "--generations", 1, "--out", tmp / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"The encoding model in {folder} is damaged" in " ".join(result.stderr.split())
    assert not (tmp / "run").exists()


@pytest.mark.parametrize("spec, message", [
    ("encoder:{}:roi=V4", "no ROI 'V4'.*early, late, mid"),
    ("encoder:{}:voxel=99", "voxel 99 is not in the encoding model"),
    ("encoder:{}:voxel=1:roi=late", "exactly one of voxel, voxels, roi"),
    ("encoder:{}:colour=red", "unknown option colour"),
    ("encoder:{}:roi=late:min_r=0.99", "no voxel of ROI 'late' reached r ≥ 0.99"),
    ("encoder:/no/such/folder:roi=late", "is not an encoding model"),
])
def test_bad_encoder_specs(fitted, spec, message):
    _, folder = fitted
    with pytest.raises(BadInput, match=message):
        neurons.create(spec.format(folder))


# -------------------------------------------------------------------------------------------- decoding

def test_two_way_identification():
    assert two_way_identification(np.eye(4)) == 1.0
    assert two_way_identification(-np.eye(4)) == 0.0
    assert two_way_identification(np.array([[1.0, 0.5], [0.9, 0.8]])) == 0.5


@pytest.mark.slow  # an outcome check: 4 s
def test_decoding_identifies_held_out_codes_above_chance(tmp):
    subject = simulate_subject(SubjectOptions(images=400, voxels=150, source="dcgan"))
    summary = decode(subject["responses"], subject["codes"], None, tmp, DecodeOptions(pcs=(10, 20)))
    row = summary.iloc[0]
    assert row["held_out_images"] == 80 and row["components"] in (10, 20)
    assert row["identification_codes"] > 0.6
    assert {"metrics.csv", "summary.json", "montage.png"} <= {p.name for p in tmp.iterdir()}


def test_bad_decoding_input(subject, tmp):
    with pytest.raises(BadInput, match=f"takes \\(N, {bundled_code_dim()}\\)"):
        decode(subject["responses"], np.zeros((300, 7), np.float32), None, tmp)
    with pytest.raises(BadInput, match="Responses for 300 images, 10 codes"):
        decode(subject["responses"], np.zeros((10, bundled_code_dim()), np.float32), None, tmp)


# ------------------------------------------------------------------------------------ the command line

def test_command_line_simulate_fit_evolve_decode(tmp):
    evolver_cli("simulate-fmri", "--out", tmp / "subject", "--images", 200, "--voxels", 30, "--source", "dcgan",
                check=True)
    fit = evolver_cli("fit-encoder", "--images", tmp / "subject/images.npy", "--responses",
                      tmp / "subject/responses.npy", "--rois", tmp / "subject/rois.txt", "--features",
                      "stimnet:relu3,relu4", "--pcs", 20, "--out", tmp / "model", check=True)
    assert "late" in fit.stdout and (tmp / "model/encoder.safetensors").is_file()
    evolver_cli("run", "--neuron", f"encoder:{tmp / 'model'}:roi=late", "--generations", 3, "--reference",
                tmp / "subject/images.npy", "--out", tmp / "run", "--quiet", check=True)
    assert "relative_activation" in (tmp / "run/generations.csv").read_text()
    evolver_cli("decode", "--responses", tmp / "subject/responses.npy", "--codes", tmp / "subject/codes.npy",
                "--out", tmp / "decoded", check=True)
    montage = np.asarray(Image.open(tmp / "decoded/montage.png").convert("L"))
    header, third = montage[:22], montage.shape[1] // 3
    assert all((header[:, k * third:(k + 1) * third] < 100).any() for k in range(3))  # each column's label
    wrong = evolver_cli("fit-encoder", "--images", tmp / "subject/images.npy", "--responses",
                        tmp / "subject/truth.npy", "--rois", tmp / "subject/rois.txt", "--features", "stimnet:nolayer",
                        "--out", tmp / "bad")
    assert wrong.returncode == 2 and "no layer 'nolayer'" in wrong.stderr and "Traceback" not in wrong.stderr
