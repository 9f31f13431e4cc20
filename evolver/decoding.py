"""The brain reader (`evolver decode`): latent codes decoded from responses by linear regression, rendered,
and judged by numbers (Mozafari et al. 2020 did this with BigBiGAN).

Responses (mean over repeats) → PCA fitted on the training split (how many components: chosen by
cross-validation inside it) → z-scores → ridge (himalaya RidgeCV, penalty per code dimension by
cross-validation) → z-scored codes → codes → images.
Held-out reconstructions are scored against the stimuli by pixel correlation, SSIM, correlation of
CNN features, and two-way identification (is a reconstruction closer to its own stimulus than to
another held-out stimulus? averaged over all pairs; chance 50%).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

import generators
from evolver.encoding import ALPHAS, pearson, split
from evolver_common import BadInput, write_atomic
from evolver_common.images import png_bytes
from neurons.cnn import ModelReader
from neurons.template import correlation


@dataclass
class DecodeOptions:
    generator: str = "dcgan"
    generator_weights: str = "pretrained"
    pcs: tuple[int, ...] = (10, 20, 50, 100, 200)  # candidates; cross-validation picks one
    test_fraction: float = 0.2
    seed: int = 0
    feature_model: str = "stimnet"
    feature_layer: str = "flatten"
    montage_rows: int = 12


def _standardise(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return train.mean(0), train.std(0).clip(1e-8)


def fit_decoder(responses: np.ndarray, codes: np.ndarray, train: np.ndarray, pcs: int, seed: int = 0):
    """The map responses (n, v) → codes (n, d), fitted on the rows `train` with `pcs` principal
    components of the responses: a function of new responses (m, v) → codes (m, d)."""
    from himalaya.ridge import RidgeCV
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(pcs, len(train) - 1, responses.shape[1]), random_state=seed)
    reduced = pca.fit_transform(responses[train])
    r_mean, r_scale = _standardise(reduced)
    c_mean, c_scale = _standardise(codes[train])
    ridge = RidgeCV(alphas=ALPHAS, fit_intercept=True).fit((reduced - r_mean) / r_scale, (codes[train] - c_mean) / c_scale)

    def decode(new: np.ndarray) -> np.ndarray:
        z = (pca.transform(new) - r_mean) / r_scale
        return (np.asarray(ridge.predict(z)) * c_scale + c_mean).astype(np.float32)

    return decode


def choose_components(responses: np.ndarray, codes: np.ndarray, train: np.ndarray, options: DecodeOptions) -> dict:
    """The number of principal components (from options.pcs) whose decoder predicts the codes best
    (mean Pearson r over code dimensions) in 5-fold cross-validation inside the training split."""
    from sklearn.model_selection import KFold

    folds = list(KFold(5, shuffle=True, random_state=options.seed).split(train))
    scores = {}
    for pcs in options.pcs:
        rs = [pearson(codes[train[held]], fit_decoder(responses, codes, train[kept], pcs, options.seed)(
              responses[train[held]])).mean() for kept, held in folds]
        scores[pcs] = round(float(np.mean(rs)), 4)
    return scores


def two_way_identification(similarity: np.ndarray) -> float:
    """Share of pairs (i, j), i ≠ j, where reconstruction i is more similar to stimulus i than to stimulus j,
    from similarity[i, j] = sim(reconstruction i, stimulus j)."""
    own = np.diag(similarity)[:, None]
    off = ~np.eye(len(similarity), dtype=bool)
    return float((own > similarity)[off].mean())


def _similarities(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Pearson correlation of every row of a (n, d) with every row of b (m, d): (n, m)."""
    return np.stack([correlation(b, row).numpy() for row in a])


def judge(reconstructions: torch.Tensor, stimuli: torch.Tensor, reader: ModelReader) -> dict[str, np.ndarray | float]:
    """Per-image pixel correlation, SSIM and CNN-feature correlation, and two-way identification in
    pixels and features, of reconstructions against their stimuli (both (n, 3, H, W) in [0, 1])."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    with torch.no_grad():
        (rec_features,) = reader.read(reconstructions).values()
        (stim_features,) = reader.read(stimuli).values()
    pixels = _similarities(reconstructions.flatten(1), stimuli.flatten(1))
    features = _similarities(rec_features.flatten(1).cpu(), stim_features.flatten(1).cpu())
    return {
        "pixel_correlation": np.diag(pixels), "feature_correlation": np.diag(features),
        "ssim": ssim(reconstructions, stimuli, data_range=1.0, reduction="none").numpy(),
        "identification_pixels": two_way_identification(pixels),
        "identification_features": two_way_identification(features),
    }


MONTAGE_COLUMNS = ("stimulus", "its code rendered", "decoded")
MONTAGE_SIDE = 128  # each image's side in the montage, in pixels: room for its column's label


def _montage(images: torch.Tensor, labels: Sequence[str]) -> np.ndarray:
    """`images` (n, 3, H, W) in [0, 1], a row of len(labels) at a time, each scaled to MONTAGE_SIDE, under
    a header naming each column: (H', W', 3) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    scaled = torch.nn.functional.interpolate(images, size=(MONTAGE_SIDE, MONTAGE_SIDE), mode="nearest")
    grid = torchvision.utils.make_grid(scaled, nrow=len(labels), padding=2, pad_value=1.0)
    header = Image.new("RGB", (grid.shape[2], 22), "white")
    draw, font = ImageDraw.Draw(header), ImageFont.load_default(size=12)
    for column, label in enumerate(labels):
        width = draw.textlength(label, font=font)
        draw.text((2 + column * (MONTAGE_SIDE + 2) + (MONTAGE_SIDE - width) / 2, 4), label, fill="black", font=font)
    pixels = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return np.concatenate([np.asarray(header), pixels])


def decode(responses: np.ndarray, codes: np.ndarray, images: torch.Tensor | None, out: str | Path,
           options: DecodeOptions | None = None) -> pd.DataFrame:
    """Fit the brain reader on a training split, decode the held-out responses and judge them.

    responses: (repeats, N, v); codes: (N, code_dim), the generator's codes of the N stimuli;
    images: the stimuli (N, 3, H, W) in [0, 1], or None when they are the codes' renders.
    Writes into `out`: metrics.csv (one row a held-out image), summary.json and montage.png
    (stimulus | the generator's render of its code | the brain reconstruction). Returns the summary table.
    """
    options = options or DecodeOptions()
    responses = responses.mean(0)
    if not np.isfinite(responses).all():
        raise BadInput("The responses hold NaN or infinite values; the decoder needs every voxel for every image "
                       "(drop those voxels first).")
    if len(codes) != len(responses) or (images is not None and len(images) != len(responses)):
        raise BadInput(f"Responses for {len(responses)} images, {len(codes)} codes"
                       f"{'' if images is None else f' and {len(images)} images'}: one a stimulus, in the same order.")
    generator = generators.create(options.generator, weights=options.generator_weights)
    if codes.ndim != 2 or codes.shape[1] != generator.code_dim:
        raise BadInput(f"The codes have shape {codes.shape}; {options.generator} takes (N, {generator.code_dim}).")
    train, test = split(len(responses), options.test_fraction, options.seed)
    cv_scores = choose_components(responses, codes, train, options)
    pcs = max(cv_scores, key=cv_scores.get)
    decoder = fit_decoder(responses, codes, train, pcs, options.seed)
    decoded = decoder(responses[test])
    latent = _similarities(torch.from_numpy(decoded), torch.from_numpy(codes[test]))
    reconstructions = generator.render(decoded).float().cpu()
    renders = generator.render(codes[test]).float().cpu()
    stimuli = renders if images is None else torchvision.transforms.functional.resize(
        images[test], list(renders.shape[-2:]), antialias=True)
    reader = ModelReader(options.feature_model, [options.feature_layer], "pretrained", "cpu", "fp32")
    scores = judge(reconstructions, stimuli, reader)
    per_image = pd.DataFrame({"image": test, **{k: v for k, v in scores.items() if isinstance(v, np.ndarray)}})
    summary = {
        "held_out_images": len(test), "training_images": len(train), "voxels": responses.shape[1],
        **{f"mean_{k}": round(float(v.mean()), 4) for k, v in scores.items() if isinstance(v, np.ndarray)},
        **{k: round(v, 4) for k, v in scores.items() if isinstance(v, float)},
        "identification_codes": round(two_way_identification(latent), 4),
        "code_correlation": round(float(pearson(codes[test], decoded).mean()), 4),
        "chance_identification": 0.5, "features": f"{options.feature_model}:{options.feature_layer}",
        "components": pcs, "components_cv_code_r": cv_scores,
        "options": options.__dict__,
    }
    out = Path(out)
    write_atomic(out / "metrics.csv", per_image.round(4).to_csv(index=False).encode())
    write_atomic(out / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    rows = min(options.montage_rows, len(test))
    triplets = torch.stack([stimuli[:rows], renders[:rows], reconstructions[:rows]], 1).flatten(0, 1)
    write_atomic(out / "montage.png", png_bytes(_montage(triplets, MONTAGE_COLUMNS)))
    return pd.DataFrame([{k: v for k, v in summary.items() if k != "options"}])
