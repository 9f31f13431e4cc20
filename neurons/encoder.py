"""fMRI voxel encoding models as neurons (NeuroGen, Gu et al. 2022): images → CNN features → PCA →
z-scores → ridge weights → predicted voxel responses, one batched, differentiable torch map.

Spec: `encoder:MODEL_DIR:voxel=12`, `encoder:MODEL_DIR:voxels=1,5,9` (or a range `voxels=0-99`;
inside a composite expression a list is bracketed, `voxels=[1,5,9]`), `encoder:MODEL_DIR:roi=V4`
(the mean of the ROI's voxels), each optionally with `:min_r=0.2` (only voxels whose held-out r
reached 0.2). Voxel numbers are the responses' column numbers, as the fit read them. MODEL_DIR is
what `evolver fit-encoder` wrote: `encoder.safetensors` and `encoder.json`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from evolver_common import BadInput
from evolver_common.files import write_atomic
from evolver_common.specs import parse_spec, typed_options
from neurons.base import Neuron
from neurons.cnn import ModelReader
from neurons.spec import index_set

ENCODER_HELP = ("An encoder neuron is written encoder:MODEL_DIR:voxel=N, encoder:MODEL_DIR:voxels=1,5,9 (or a range "
                "A-B; [1,5,9] inside an expression) or encoder:MODEL_DIR:roi=NAME, optionally with :min_r=R; "
                "MODEL_DIR is the folder `evolver fit-encoder` wrote.")


@dataclass(frozen=True)
class FeatureSpec:
    """Which CNN features an encoding model reads: MODEL:LAYER[,LAYER], average-pooled to pool×pool
    (0: the whole map) and flattened, one band per layer."""

    model: str
    layers: tuple[str, ...]
    pool: int = 0
    weights: str = "pretrained"

    @classmethod
    def parse(cls, text: str, pool: int = 0, weights: str = "pretrained") -> FeatureSpec:
        model, sep, layers = text.partition(":")
        names = tuple(n.strip() for n in layers.split(",") if n.strip())
        if not sep or not model or not names:
            raise BadInput(f"Malformed feature spec '{text}': write MODEL:LAYER[,LAYER...], e.g. stimnet:relu3,relu4.")
        if pool < 0:
            raise BadInput(f"--pool must be 0 (no pooling) or a grid size ≥ 1, got {pool}.")
        return cls(model, names, pool, str(weights))

    def __str__(self) -> str:
        return f"{self.model}:{','.join(self.layers)}"


class FeatureExtractor:
    """The features of a FeatureSpec: one forward pass, a list of (n, F_band) float32 tensors."""

    def __init__(self, spec: FeatureSpec, device: str = "auto", precision: str = "auto"):
        self.spec = spec
        self.reader = ModelReader(spec.model, list(spec.layers), spec.weights, device, precision)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        layers = self.reader.read(images)
        return [self._flat(layers[name]) for name in self.spec.layers]

    def _flat(self, layer: torch.Tensor) -> torch.Tensor:
        if layer.ndim == 4 and self.spec.pool:
            layer = nn.functional.adaptive_avg_pool2d(layer, self.spec.pool)
        return layer.flatten(1)

    @torch.no_grad()
    def batched(self, images: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
        """Features of many images, `batch` at a time, on the CPU."""
        parts = [[f.cpu() for f in self(images[i:i + batch])] for i in range(0, len(images), batch)]
        return [torch.cat(band) for band in zip(*parts)]


def project(x: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Features (n, F) centred and projected on principal components (P, F); only centred when there
    are none (a fit without PCA)."""
    return x - mean if components.numel() == 0 else (x - mean) @ components.T


class EncodingModel(nn.Module):
    """The fitted linear chain from features to voxels: per band (x - pca_mean) @ components.T, then
    (z - scaler_mean) / scaler_scale, then @ coef + intercept. Predictions (n, voxels).

    `info` holds the JSON side: the feature spec, voxel ids (the responses' column numbers), ROI
    labels, held-out scores and how the fit went.
    """

    def __init__(self, bands: list[tuple[torch.Tensor, torch.Tensor]], scaler_mean: torch.Tensor,
                 scaler_scale: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor, info: dict):
        super().__init__()
        for i, (mean, components) in enumerate(bands):
            self.register_buffer(f"pca_mean_{i}", mean.float())
            self.register_buffer(f"components_{i}", components.float())
        self.register_buffer("scaler_mean", scaler_mean.float())
        self.register_buffer("scaler_scale", scaler_scale.float())
        self.register_buffer("coef", coef.float())
        self.register_buffer("intercept", intercept.float())
        self.bands = len(bands)
        self.info = info

    @property
    def features(self) -> FeatureSpec:
        f = self.info["features"]
        return FeatureSpec(f["model"], tuple(f["layers"]), f["pool"], f["weights"])

    def reduce(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The z-scored principal components (n, P) of per-band features."""
        parts = [project(x, getattr(self, f"pca_mean_{i}"), getattr(self, f"components_{i}"))
                 for i, x in enumerate(features)]
        return (torch.cat(parts, 1) - self.scaler_mean) / self.scaler_scale

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.reduce(features) @ self.coef + self.intercept

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "encoder.safetensors", safetensors_bytes(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}))
        write_atomic(folder / "encoder.json", (json.dumps({**self.info, "bands": self.bands}, indent=1) + "\n").encode())

    @classmethod
    def load(cls, folder: str | Path) -> EncodingModel:
        folder = Path(folder)
        weights, card = folder / "encoder.safetensors", folder / "encoder.json"
        if not weights.is_file() or not card.is_file():
            raise BadInput(f"{folder} is not an encoding model: it needs encoder.safetensors and encoder.json, "
                           "as `evolver fit-encoder --out FOLDER` writes them.")
        try:
            info = json.loads(card.read_text(encoding="utf-8"))
            tensors = load_file(str(weights))
            bands = [(tensors[f"pca_mean_{i}"], tensors[f"components_{i}"]) for i in range(int(info.pop("bands")))]
            model = cls(bands, tensors["scaler_mean"], tensors["scaler_scale"], tensors["coef"], tensors["intercept"],
                        info)
            model.features  # noqa: B018 - the card's feature spec, parsed now rather than at the first image
            _check_shapes(bands, tensors)
        except Exception as err:  # noqa: BLE001 - a damaged folder fails in JSON, safetensors or shapes alike
            raise BadInput(f"The encoding model in {folder} is damaged ({type(err).__name__}: {str(err)[:200]}): "
                           "encoder.json and encoder.safetensors must be as `evolver fit-encoder --out FOLDER` "
                           "wrote them. Fit it again, or restore the folder from a copy.") from None
        return model


def _check_shapes(bands: list[tuple[torch.Tensor, torch.Tensor]], tensors: dict[str, torch.Tensor]) -> None:
    """ValueError unless the chain's tensors fit one another: per band a mean (F,) and components (P, F) or
    none, then a scaler of the components' total, coef (total, voxels) and intercept (voxels,)."""
    total = 0
    for mean, components in bands:
        if mean.ndim != 1 or components.numel() and (components.ndim != 2 or components.shape[1] != len(mean)):
            raise ValueError(f"a band's mean {tuple(mean.shape)} and components {tuple(components.shape)} do not fit")
        total += components.shape[0] if components.numel() else len(mean)
    coef, intercept = tensors["coef"], tensors["intercept"]
    shapes = [tuple(tensors[k].shape) for k in ("scaler_mean", "scaler_scale")]
    if shapes != [(total,)] * 2 or coef.ndim != 2 or coef.shape[0] != total or tuple(intercept.shape) != coef.shape[1:]:
        raise ValueError(f"scaler {shapes}, coef {tuple(coef.shape)} and intercept {tuple(intercept.shape)} do not fit "
                         f"{total} components")


@dataclass(frozen=True)
class EncoderSpec:
    folder: str
    voxels: tuple[int, ...] | None = None  # voxel=N gives a 1-tuple
    roi: str | None = None
    min_r: float | None = None
    single: bool = False  # one voxel: responses (n,), not (n, 1)

    @classmethod
    def parse(cls, spec: str) -> EncoderSpec:
        parsed = parse_spec(spec, ENCODER_HELP)
        if parsed.kind != "encoder" or not parsed.location:
            raise BadInput(f"Malformed encoder spec '{spec}'. {ENCODER_HELP}")
        options = typed_options(parsed.options, {"voxel": str, "voxels": str, "roi": str, "min_r": float},
                                f"Encoder spec '{spec}'", ENCODER_HELP)
        chosen = [k for k in ("voxel", "voxels", "roi") if k in options]
        if len(chosen) != 1:
            raise BadInput(f"Encoder spec '{spec}': give exactly one of voxel, voxels, roi. {ENCODER_HELP}")
        if "roi" in options:
            return cls(parsed.location, roi=options["roi"], min_r=options.get("min_r"))
        voxels = index_set(options[chosen[0]], spec, ENCODER_HELP)
        return cls(parsed.location, voxels=voxels, min_r=options.get("min_r"), single=len(voxels) == 1)

    @property
    def outputs(self) -> int:
        return 1 if self.roi is not None or self.single else len(self.voxels)


class Encoder(Neuron):
    """Predicted responses of a fitted encoding model's voxels (see the module docstring); differentiable."""

    def __init__(self, spec: str, weights: str | Path = "pretrained", device: str = "auto", precision: str = "auto"):
        self.parsed = EncoderSpec.parse(spec)
        self.spec = spec.strip()
        self.model = EncodingModel.load(self.parsed.folder)
        self.columns = self._columns()
        self.outputs = self.parsed.outputs
        self.extractor = FeatureExtractor(self.model.features, device, precision)
        self.model.to(self.extractor.reader.device)
        self.weights = f"encoding model {Path(self.parsed.folder).resolve()} on {self.extractor.reader.weights}"
        self.device, self.precision = self.extractor.reader.device, self.extractor.reader.precision

    @classmethod
    def parse(cls, spec: str) -> EncoderSpec:
        return EncoderSpec.parse(spec)

    def compile(self) -> None:
        self.extractor.reader.compile()

    @classmethod
    def outputs_of(cls, spec: str) -> int:
        return EncoderSpec.parse(spec).outputs

    def _columns(self) -> list[int]:
        """Columns of the model's predictions that this neuron reads."""
        info, p = self.model.info, self.parsed
        ids, r = info["voxel_ids"], info["scores"]["r"]
        keep = [i for i in range(len(ids)) if p.min_r is None or r[i] >= p.min_r]
        if p.roi is not None:
            rois = info.get("rois")
            if not rois:
                raise BadInput(f"'{self.spec}': the encoding model in {p.folder} was fitted without ROI labels; "
                               "select voxels with voxel= or voxels=, or refit with --rois.")
            if p.roi not in rois:
                raise BadInput(f"'{self.spec}': no ROI '{p.roi}' in the encoding model in {p.folder}; its ROIs: "
                               f"{', '.join(sorted(set(rois)))}.")
            columns = [i for i in keep if rois[i] == p.roi]
            if not columns:
                raise BadInput(f"'{self.spec}': no voxel of ROI '{p.roi}' reached r ≥ {p.min_r}.")
            return columns
        missing = [v for v in p.voxels if v not in ids]
        if missing:
            dropped = " (dropped at fitting: NaN responses)" if missing[0] in info.get("dropped_voxels", []) else ""
            raise BadInput(f"'{self.spec}': voxel {missing[0]} is not in the encoding model{dropped}; it has "
                           f"{len(ids)} voxels, numbered {ids[0]}–{ids[-1]} (the responses' columns).")
        columns = [ids.index(v) for v in p.voxels]
        below = [v for v, c in zip(p.voxels, columns) if c not in keep]
        if below:
            raise BadInput(f"'{self.spec}': voxel {below[0]} has held-out r {r[ids.index(below[0])]:.3f} < min_r {p.min_r}.")
        return columns

    def differentiable(self, images: torch.Tensor) -> torch.Tensor:
        predictions = self.model(self.extractor(images))[:, self.columns]
        if self.parsed.roi is not None:
            return predictions.mean(1)
        return predictions[:, 0] if self.parsed.single else predictions

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.differentiable(images).double().cpu().numpy()


def feature_spec_dict(spec: FeatureSpec) -> dict:
    return {**asdict(spec), "layers": list(spec.layers)}
