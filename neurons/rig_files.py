"""The file formats of XDream's file exchange: the names of block files and the responses a rig writes
(`block{NNN}.mat`, MATLAB v7.3/HDF5 with `stimulusID` and `tEvokedResp`; `block{NNN}.h5`, `scores` and
optional `indices`)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

BLOCK_FILE = re.compile(r"^block(\d{3,})\.(mat|h5)$")
EXCHANGE_FILE = re.compile(r"^block(\d{3,})(?:_\d+_.+\.png|\.(?:mat|h5)(?:\.malformed)?)$")


def read_mat_responses(path: Path) -> tuple[list[str], np.ndarray]:
    """(stimulus ids, responses (n, channels)) from an XDream block file in MATLAB v7.3 (HDF5)."""
    import h5py

    with h5py.File(path, "r") as f:
        ids_data, values = f["stimulusID"], np.asarray(f["tEvokedResp"], dtype=np.float64)
        ids = []
        for ref in np.asarray(ids_data).ravel():
            chars = np.asarray(f[ref]).ravel() if isinstance(ref, h5py.Reference) else np.asarray([ref])
            ids.append("".join(map(chr, chars)) if chars.dtype.kind in "ui" else str(chars[0], "utf-8"))
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != len(ids) and values.shape[1] == len(ids):
        values = values.T  # MATLAB writes column-major: an n × channels matrix reads back transposed
    return ids, values


def read_h5_responses(path: Path, block_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """(ids, responses (n, channels)) from `scores` and optional `indices` (positions in the block)."""
    import h5py

    with h5py.File(path, "r") as f:
        scores = np.asarray(f["scores"], dtype=np.float64)
        indices = np.asarray(f["indices"]).astype(int).ravel() if "indices" in f else np.arange(len(scores))
    if scores.ndim == 1:
        scores = scores[:, None]
    if len(indices) != len(scores) or (indices < 0).any() or (indices >= len(block_ids)).any():
        raise ValueError(f"indices {indices.tolist()[:5]}… do not fit a block of {len(block_ids)} images")
    return [block_ids[i] for i in indices], scores


def exchange_block(name: str) -> int | None:
    """The block an exchange file belongs to (`block012_003_7.png`, `block012.h5`, `block012.mat.malformed`
    → 12), or None."""
    match = EXCHANGE_FILE.match(name)
    return int(match[1]) if match else None


def block_number(name: str) -> int | None:
    """The block a response file is for, from its name (`block012.h5` → 12), or None."""
    match = BLOCK_FILE.match(name)
    return int(match[1]) if match else None
