"""Reading fMRI-style datasets: stimulus images, voxel responses and ROI labels, in the formats labs use.

- images: a folder of image files (sorted by name), or an array N×H×W×3 in .npy or .h5/.hdf5
  (uint8 0–255 or float 0–1; NSD's `nsd_stimuli.hdf5` holds one such array);
- responses: N × voxels, or repeats × N × voxels, in .npy, .h5/.hdf5 or .csv (N rows, one column a
  voxel, an optional header row);
- ROI labels: one label a voxel, in a text file (one a line), .json (a list) or .npy.

An HDF5 file with several arrays needs `--…-key NAME`; with one, it is taken.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from evolver_common import BadInput
from evolver_common.images import IMAGE_SUFFIXES, read_image

ARRAY_SUFFIXES = (".npy", ".h5", ".hdf5")


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{what} {path} does not exist.")
    return path


def _h5_array(path: Path, key: str | None, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        arrays: dict[str, h5py.Dataset] = {}

        def collect(name: str, obj) -> None:  # visititems stops at the first callback that returns a value
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj

        f.visititems(collect)
        candidates = [name for name, a in arrays.items() if a.ndim in ndims]
        if key is None and len(candidates) != 1:
            raise BadInput(f"{what} {path} holds {len(candidates)} arrays of {' or '.join(map(str, ndims))} "
                           f"dimensions ({', '.join(candidates) or 'none'}); name one with its key option.")
        key = key or candidates[0]
        if key not in arrays:
            raise BadInput(f"{what} {path} has no array '{key}'; it holds: {', '.join(arrays) or 'none'}.")
        return arrays[key][()]


def load_array(path: str | Path, what: str, ndims: tuple[int, ...], key: str | None = None) -> np.ndarray:
    """An array of `ndims` dimensions from .npy or .h5/.hdf5."""
    path = _existing(path, what)
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix in (".h5", ".hdf5"):
        array = _h5_array(path, key, what, ndims)
    else:
        raise BadInput(f"{what} {path}: unknown format '{path.suffix}'. Valid: {', '.join(ARRAY_SUFFIXES)}.")
    if array.ndim not in ndims:
        raise BadInput(f"{what} {path} has shape {array.shape}; expected {' or '.join(map(str, ndims))} dimensions.")
    return array


def load_images(path: str | Path, key: str | None = None) -> torch.Tensor:
    """Stimulus images as (N, 3, H, W) float32 in [0, 1]."""
    path = _existing(path, "The images")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInput(f"The image folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        return torch.cat([read_image(p, "Image") for p in files])
    array = load_array(path, "The images", (4,), key)
    if array.shape[-1] != 3:
        raise BadInput(f"The images {path} have shape {array.shape}; expected N×H×W×3 (RGB last).")
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    return images.float() / 255 if array.dtype == np.uint8 else images.float().clamp(0, 1)


def load_responses(path: str | Path, key: str | None = None) -> np.ndarray:
    """Responses as (repeats, N, voxels) float64 (repeats 1 for an N × voxels file)."""
    path = _existing(path, "The responses")
    if path.suffix == ".csv":
        table = pd.read_csv(path, header=None)
        if not all(_is_number(v) for v in table.iloc[0]):
            table = table.iloc[1:]  # a header row
        try:
            array = table.to_numpy(dtype=np.float64)
        except ValueError as err:
            raise BadInput(f"The responses {path} hold a value that is not a number ({err}).") from None
    else:
        array = load_array(path, "The responses", (2, 3), key).astype(np.float64)
    return array[None] if array.ndim == 2 else array


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def load_rois(path: str | Path, voxels: int) -> list[str]:
    """One ROI label per voxel, checked against the number of voxels."""
    path = _existing(path, "The ROI labels")
    if path.suffix == ".json":
        labels = json.loads(path.read_text())
    elif path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False).tolist()
    else:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) != voxels:
        raise BadInput(f"The ROI labels {path} name {len(labels)} voxels; the responses have {voxels}. "
                       "Give one label a voxel, in the responses' column order.")
    return [str(label) for label in labels]
