"""Fitting voxel encoding models (`evolver fit-encoder`) and simulating a subject (`evolver simulate-fmri`).

The fit: CNN features of each layer (a band) → PCA fitted on the training split only → z-scores →
voxel-wise ridge whose penalty is chosen per voxel by cross-validation (himalaya: RidgeCV; KernelRidgeCV
when there are fewer samples than features; BandedRidgeCV, one band a layer, when there are several
layers). Held-out Pearson r and R² per voxel and per ROI, and the noise ceiling when there are repeats.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

import generators
from evolver_common import BadInput, write_atomic
from neurons.cnn import ModelReader
from neurons.encoder import EncodingModel, FeatureExtractor, FeatureSpec, feature_spec_dict, project

ALPHAS = np.logspace(-2, 8, 21)


@dataclass
class FitOptions:
    """pcs: principal components kept per band (0: no PCA); test_fraction: held-out share of the images."""

    pcs: int = 100
    test_fraction: float = 0.2
    seed: int = 0
    cv: int = 5
    device: str = "auto"
    precision: str = "auto"


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r of (n, v) arrays: (v,)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0)).clip(1e-12)


def r_squared(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Column-wise coefficient of determination (v,): 1 - SS_res / SS_tot."""
    return 1 - ((truth - predicted) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0).clip(1e-12)


def noise_ceiling(responses: np.ndarray) -> np.ndarray | None:
    """The highest r any model can reach against the mean over repeats, per voxel, from `responses`
    (repeats, n, v): sqrt(signal var / (signal var + noise var / repeats)); None without repeats."""
    repeats = responses.shape[0]
    if repeats < 2:
        return None
    noise = responses.var(0, ddof=1).mean(0)
    signal = (responses.mean(0).var(0, ddof=1) - noise / repeats).clip(0)
    return np.sqrt(signal / (signal + noise / repeats).clip(1e-12))


def drop_nan_voxels(responses: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Responses without voxels that hold a NaN or infinity anywhere, and the ids of the kept voxels."""
    bad = ~np.isfinite(responses).all(axis=(0, 1))
    if bad.all():
        raise BadInput(f"Every one of the {bad.size} voxels holds NaN or infinite responses; nothing to fit.")
    if bad.any():
        warnings.warn(f"Dropped {int(bad.sum())} of {bad.size} voxels with NaN or infinite responses "
                      f"(first: {np.flatnonzero(bad)[:5].tolist()}); their ids are kept in the model's card.",
                      stacklevel=2)
    return responses[:, :, ~bad], np.flatnonzero(~bad).tolist()


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of n images."""
    if not 0 < test_fraction < 1:
        raise BadInput(f"--test-fraction must be between 0 and 1, got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    if n - n_test < 10:
        raise BadInput(f"{n} images leave {n - n_test} for training; an encoding model needs at least 10.")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _pca(x: np.ndarray, pcs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (F,), components (P, F)) of the training features x (n, F); components empty without PCA."""
    mean = x.mean(0)
    if pcs == 0:
        return torch.from_numpy(mean), torch.empty(0, x.shape[1])
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(pcs, x.shape[0] - 1, x.shape[1]), random_state=seed).fit(x)
    return torch.from_numpy(pca.mean_), torch.from_numpy(pca.components_)


def _solve(z: np.ndarray, y: np.ndarray, groups: np.ndarray, options: FitOptions) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray, str]:
    """Ridge weights (P, v), intercepts (v,), chosen penalties (v,) and the solver's name."""
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import BandedRidgeCV, RidgeCV

    if len(np.unique(groups)) > 1:
        # primal even where samples < features (himalaya warns, suggesting the kernel form): the encoder
        # reads each band's weights directly
        model = BandedRidgeCV(groups=groups, cv=options.cv, fit_intercept=True, random_state=options.seed,
                              solver_params=dict(alphas=ALPHAS, n_iter=20, progress_bar=False, warn=False))
        model.fit(z, y)
        return np.asarray(model.coef_), np.asarray(model.intercept_), np.asarray(model.best_alphas_), "BandedRidgeCV"
    if z.shape[0] < z.shape[1]:
        model = KernelRidgeCV(alphas=ALPHAS, kernel="linear", cv=options.cv, fit_intercept=True)
        model.fit(z, y)
        coef = z.T @ np.asarray(model.dual_coef_)  # the primal weights of a linear kernel
        return coef, np.asarray(model.intercept_), np.asarray(model.best_alphas_), "KernelRidgeCV"
    model = RidgeCV(alphas=ALPHAS, cv=options.cv, fit_intercept=True)
    model.fit(z, y)
    return np.asarray(model.coef_), np.asarray(model.intercept_), np.asarray(model.best_alphas_), "RidgeCV"


def fit_encoder(images: torch.Tensor, responses: np.ndarray, features: FeatureSpec,
                rois: list[str] | None = None, options: FitOptions | None = None) -> EncodingModel:
    """Fit an encoding model of `responses` (repeats, N, voxels) to `images` (N, 3, H, W) in [0, 1].

    Voxels with any NaN are dropped with a warning (their ids recorded). The returned model's `info`
    holds the held-out scores per voxel and per ROI.
    """
    options = options or FitOptions()
    if len(images) != responses.shape[1]:
        raise BadInput(f"{len(images)} images but responses for {responses.shape[1]} images: the responses' rows "
                       "must be the images, in the same order.")
    if options.pcs < 0:
        raise BadInput(f"--pcs must be ≥ 0 (0: no PCA), got {options.pcs}.")
    started = time.time()
    voxels_in = responses.shape[2]
    responses, voxel_ids = drop_nan_voxels(responses)
    rois = [rois[i] for i in voxel_ids] if rois is not None else None
    train, test = split(len(images), options.test_fraction, options.seed)
    extractor = FeatureExtractor(features, options.device, options.precision)
    bands = [band.double().numpy() for band in extractor.batched(images)]
    reductions = [_pca(band[train], options.pcs, options.seed) for band in bands]
    reduced = [project(torch.from_numpy(band), mean, comps).numpy() for band, (mean, comps) in zip(bands, reductions)]
    groups = np.concatenate([np.full(r.shape[1], i) for i, r in enumerate(reduced)])
    z = np.concatenate(reduced, 1)
    scaler_mean, scaler_scale = z[train].mean(0), z[train].std(0).clip(1e-8)
    z = (z - scaler_mean) / scaler_scale
    y = responses.mean(0)
    coef, intercept, alphas, solver = _solve(z[train], y[train], groups, options)
    info = {
        "features": feature_spec_dict(features), "voxel_ids": voxel_ids, "rois": rois,
        "dropped_voxels": sorted(set(range(voxels_in)) - set(voxel_ids)),
        "fit": {"solver": solver, "images_train": len(train), "images_test": len(test), "repeats": responses.shape[0],
                "components_per_band": [int(c.shape[0]) or int(m.shape[0]) for m, c in reductions],
                "pca": options.pcs > 0, "test_fraction": options.test_fraction, "seed": options.seed, "cv": options.cv,
                "precision": extractor.reader.precision},
    }
    model = EncodingModel(reductions, torch.from_numpy(scaler_mean), torch.from_numpy(scaler_scale),
                          torch.from_numpy(coef), torch.from_numpy(intercept), info)
    with torch.no_grad():
        predicted = model([torch.from_numpy(b[test]).float() for b in bands]).double().numpy()
    ceiling = noise_ceiling(responses[:, test])
    info["scores"] = {"r": pearson(y[test], predicted).round(4).tolist(),
                      "r2": r_squared(y[test], predicted).round(4).tolist(),
                      "ceiling": ceiling.round(4).tolist() if ceiling is not None else None,
                      "alpha": alphas.tolist()}
    info["fit"]["seconds"] = round(time.time() - started, 1)
    info["roi_summary"] = roi_summary(info).to_dict(orient="records")
    return model


def voxel_table(info: dict) -> pd.DataFrame:
    """One row a voxel: voxel id, roi, held-out r and R², noise ceiling, penalty."""
    scores = info["scores"]
    table = pd.DataFrame({"voxel": info["voxel_ids"], "roi": info["rois"] or "all", "r": scores["r"],
                          "r2": scores["r2"], "alpha": scores["alpha"]})
    if scores["ceiling"] is not None:
        table["ceiling"] = scores["ceiling"]
    return table


def roi_summary(info: dict) -> pd.DataFrame:
    """Per ROI: voxels, mean and median held-out r, mean R², mean noise ceiling (if repeats)."""
    aggregations = {"voxels": ("r", "size"), "mean_r": ("r", "mean"), "median_r": ("r", "median"),
                    "mean_r2": ("r2", "mean")}
    table = voxel_table(info)
    if "ceiling" in table:
        aggregations["mean_ceiling"] = ("ceiling", "mean")
    return table.groupby("roi", sort=False).agg(**aggregations).reset_index().round(4)


def report_figure(info: dict) -> go.Figure:
    """Held-out r per ROI (a box a ROI, one point a voxel), beside the noise ceiling when there is one."""
    table = voxel_table(info)
    figure = go.Figure()
    figure.add_trace(go.Box(x=table["roi"], y=table["r"], name="held-out r", boxpoints="all", jitter=0.4))
    if "ceiling" in table:
        figure.add_trace(go.Box(x=table["roi"], y=table["ceiling"], name="noise ceiling", boxpoints="all", jitter=0.4))
    fit = info["fit"]
    figure.update_layout(
        boxmode="group", yaxis_title="Pearson r on held-out images", xaxis_title="ROI",
        title=f"Encoding model {FeatureSpec(**{**info['features'], 'layers': tuple(info['features']['layers'])})}: "
              f"{len(table)} voxels, {fit['images_train']} training / {fit['images_test']} held-out images "
              f"({fit['solver']})")
    return figure


def write_fit(model: EncodingModel, out: str | Path) -> None:
    """The model (encoder.safetensors, encoder.json), scores.csv, rois.csv and report.html into `out`."""
    out = Path(out)
    model.save(out)
    write_atomic(out / "scores.csv", voxel_table(model.info).to_csv(index=False).encode())
    write_atomic(out / "rois.csv", roi_summary(model.info).to_csv(index=False).encode())
    write_atomic(out / "report.html", report_figure(model.info).to_html(include_plotlyjs=True).encode())


# ------------------------------------------------------------------------------------ simulated subject

@dataclass
class SubjectOptions:
    """A simulated fMRI subject: `voxels` split evenly over ROIs, each ROI pooling one layer of `model`."""

    images: int = 1000
    voxels: int = 240
    snr: float = 1.0  # sd of the noise-free response / sd of the noise, one repeat
    repeats: int = 2
    model: str = "stimnet"
    layers: tuple[str, ...] = ("relu2", "relu3", "relu4")
    rois: tuple[str, ...] = ("early", "mid", "late")
    source: str = "corpus"  # or 'dcgan': images rendered from recorded codes
    seed: int = 0
    format: str = "npy"  # or 'h5'


def _pooling_fields(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """n Gaussian pooling fields (n, H, W) summing to 1: centres anywhere, widths 0.5–3 grid cells."""
    ys, xs = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0, height, n), rng.uniform(0, width, n)
    sigma = rng.uniform(0.5, 3.0, n) * height / 8
    fields = np.exp(-((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2) / (2 * sigma[:, None, None] ** 2))
    return fields / fields.sum((1, 2), keepdims=True)


def _stimulus_images(options: SubjectOptions) -> tuple[torch.Tensor, np.ndarray | None]:
    if options.source == "corpus":
        from generators.corpus import stimuli

        return stimuli(options.images, options.seed).images, None
    if options.source == "dcgan":
        generator = generators.create("dcgan")
        codes = generator.sample(options.images, np.random.default_rng(options.seed))
        images = torch.cat([generator.render(codes[i:i + 500]).float().cpu() for i in range(0, len(codes), 500)])
        return images, codes
    raise BadInput(f"Unknown image source '{options.source}'. Valid: corpus (procedural stimuli), dcgan "
                   "(rendered from recorded codes, for decoding).")


def simulate_subject(options: SubjectOptions) -> dict[str, np.ndarray | torch.Tensor | list]:
    """Images, noisy responses (repeats, N, voxels), noise-free responses, ROI labels and codes (or None).

    Each voxel sums a few channels of its ROI's layer (weights log-normal) under a Gaussian pooling
    field (feature-weighted receptive fields, St-Yves & Naselaris 2018); its noise-free response is
    z-scored over the images and Gaussian noise of sd 1/snr is added to each repeat.
    """
    if len(options.layers) != len(options.rois):
        raise BadInput(f"{len(options.layers)} layers but {len(options.rois)} ROI names: give one ROI name a layer.")
    if options.snr <= 0 or options.repeats < 1 or options.voxels < len(options.rois):
        raise BadInput("The simulated subject needs snr > 0, repeats ≥ 1 and at least one voxel a ROI.")
    rng = np.random.default_rng(options.seed)
    images, codes = _stimulus_images(options)
    reader = ModelReader(options.model, list(options.layers), "pretrained", "cpu", "fp32")
    with torch.no_grad():
        maps = [torch.cat([reader.read(images[i:i + 250])[layer] for i in range(0, len(images), 250)]).numpy()
                for layer in options.layers]
    roi_of = np.arange(options.voxels) * len(options.rois) // options.voxels
    truth = np.empty((len(images), options.voxels))
    for r, feature_map in enumerate(maps):
        if feature_map.ndim != 4:
            raise BadInput(f"Layer {options.layers[r]} of {options.model} is not a spatial map; choose conv layers.")
        members = np.flatnonzero(roi_of == r)
        fields = _pooling_fields(rng, len(members), *feature_map.shape[2:])
        for v, field in zip(members, fields):
            channels = rng.choice(feature_map.shape[1], size=3, replace=False)
            weights = rng.lognormal(0, 0.5, 3)
            truth[:, v] = np.einsum("nchw,hw,c->n", feature_map[:, channels], field, weights)
    truth = (truth - truth.mean(0)) / truth.std(0).clip(1e-12)
    noise = rng.standard_normal((options.repeats, *truth.shape)) / options.snr
    return {"images": images, "responses": (truth[None] + noise).astype(np.float32), "truth": truth.astype(np.float32),
            "rois": [options.rois[r] for r in roi_of], "codes": codes}


def write_subject(options: SubjectOptions, out: str | Path) -> dict:
    """Simulate a subject into `out` in the formats real data comes in; returns what subject.json says."""
    out = Path(out)
    subject = simulate_subject(options)
    pixels = (subject["images"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    arrays = {"images": pixels, "responses": subject["responses"], "truth": subject["truth"]}
    if subject["codes"] is not None:
        arrays["codes"] = subject["codes"]
    out.mkdir(parents=True, exist_ok=True)
    if options.format == "h5":
        import h5py

        for name, array in arrays.items():
            with h5py.File(out / f".{name}.h5.tmp", "w") as f:
                f.create_dataset(name, data=array)
            (out / f".{name}.h5.tmp").replace(out / f"{name}.h5")
    elif options.format == "npy":
        for name, array in arrays.items():
            with open(out / f".{name}.npy.tmp", "wb") as f:
                np.save(f, array)
            (out / f".{name}.npy.tmp").replace(out / f"{name}.npy")
    else:
        raise BadInput(f"Unknown format '{options.format}'. Valid: npy, h5.")
    write_atomic(out / "rois.txt", ("\n".join(subject["rois"]) + "\n").encode())
    description = {
        "options": {**options.__dict__, "layers": list(options.layers), "rois": list(options.rois)},
        "files": sorted([f"{name}.{options.format}" for name in arrays] + ["rois.txt"]),
        "reference": f"procedural:{options.images}:{options.seed}" if options.source == "corpus" else None,
    }
    write_atomic(out / "subject.json", (json.dumps(description, indent=1) + "\n").encode())
    return description
