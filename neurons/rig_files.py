"""The file formats of XDream's file exchange: the names of block files and the responses a rig writes
(`block{NNN}.mat`, MATLAB v7.3/HDF5 with `stimulusID` and `tEvokedResp`; `block{NNN}.h5`, `scores` and
optional `indices`), read so that a response file cannot make evolver read any other file, wait on a
FIFO, or allocate more than a block's answers take."""
from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import numpy as np

BLOCK_FILE = re.compile(r"^block(\d{3,})\.(mat|h5)$")
EXCHANGE_FILE = re.compile(r"^block(\d{3,})(?:_\d+_.+\.png|\.(?:mat|h5)(?:\.malformed|\.early)?)$")


# A response file is read whole into memory, so its size is bounded before it is opened: ids and
# responses of a block take kilobytes; 64 MiB is a block of 1,000 images answered on 8,000 channels.
MAX_FILE_BYTES = 64 << 20
MAX_CHANNELS = 100_000  # responses a row, at most
MAX_ID_CHARACTERS = 1_000


def most_rows(images: int) -> int:
    """The most rows a response file for a block of `images` may hold: a rig may answer an image more than
    once, or images the block did not show (each is dropped and counted), but not without end."""
    return 4 * images + 16


def read_responses(path: Path, block_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """(ids, responses (n, channels)) from a rig's response file (`.mat` or `.h5`) for a block of `block_ids`.

    The file is read as itself only: a regular file (not a link, FIFO or device, checked on the open file),
    at most MAX_FILE_BYTES, each dataset stored inside it (HDF5 external storage, external links and
    virtual datasets name other files: refused) and no larger than the block can be answered with. Any
    refusal or parse failure raises (OSError, ValueError, KeyError...): the file is not readable."""
    import h5py

    data = _read_regular(path)
    with h5py.File(io.BytesIO(data), "r") as f:
        if path.suffix == ".mat":
            return _mat_responses(f, len(block_ids))
        return _h5_responses(f, block_ids)


def _read_regular(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))  # a FIFO opens, unread
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"{info.st_size} bytes, over the {MAX_FILE_BYTES} a response file may have")
        return f.read(MAX_FILE_BYTES + 1)


def _dataset(f, name: str, rows: int):
    """The dataset `name`, stored in this file (no link of any kind: a soft one may lead to an external
    one), of at most `most_rows(rows)` × MAX_CHANNELS values."""
    import h5py

    link = f.get(name, getlink=True)
    if link is None:
        raise KeyError(f"no dataset '{name}'")
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"'{name}' is a {type(link).__name__}: a response file holds its own datasets")
    dataset = f[name]
    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(f"'{name}' is not a dataset")
    if dataset.is_virtual or dataset.external:
        raise ValueError(f"'{name}' is stored in other files (virtual or external storage): a response file holds "
                         "its own data")
    if dataset.size > most_rows(rows) * MAX_CHANNELS:
        raise ValueError(f"'{name}' declares {dataset.size} values, more than a block of {rows} images is answered "
                         "with")
    return dataset


def _mat_responses(f, rows: int) -> tuple[list[str], np.ndarray]:
    """XDream's block file in MATLAB v7.3 (HDF5): `stimulusID` (strings, or references to them) and `tEvokedResp`."""
    import h5py

    ids_data = np.asarray(_dataset(f, "stimulusID", rows))
    if ids_data.size > most_rows(rows):
        raise ValueError(f"{ids_data.size} stimulus ids for a block of {rows} images")
    values = np.asarray(_dataset(f, "tEvokedResp", rows), dtype=np.float64)
    ids = []
    for ref in ids_data.ravel():
        if isinstance(ref, h5py.Reference):
            target = f[ref]
            if not isinstance(target, h5py.Dataset) or target.is_virtual or target.external \
                    or target.size > MAX_ID_CHARACTERS:
                raise ValueError("a stimulus id that is not a short string stored in the file")
            chars = np.asarray(target).ravel()
        else:
            chars = np.asarray([ref])
        ids.append("".join(map(chr, chars)) if chars.dtype.kind in "ui" else str(chars[0], "utf-8"))
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != len(ids) and values.shape[1] == len(ids):
        values = values.T  # MATLAB writes column-major: an n × channels matrix reads back transposed
    return ids, values


def _h5_responses(f, block_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """`scores` (n, channels) and optional `indices` (positions in the block)."""
    rows = len(block_ids)
    scores = np.asarray(_dataset(f, "scores", rows), dtype=np.float64)
    indices = np.asarray(_dataset(f, "indices", rows)).astype(int).ravel() if "indices" in f \
        else np.arange(len(scores))
    if scores.ndim == 1:
        scores = scores[:, None]
    if len(indices) != len(scores) or (indices < 0).any() or (indices >= rows).any():
        raise ValueError(f"indices {indices.tolist()[:5]}… do not fit a block of {rows} images")
    return [block_ids[i] for i in indices], scores


def exchange_block(name: str) -> int | None:
    """The block an exchange file belongs to (`block012_003_7.png`, `block012.h5`, `block012.mat.malformed`,
    `block012.h5.early` → 12), or None."""
    match = EXCHANGE_FILE.match(name)
    return int(match[1]) if match else None


def block_number(name: str) -> int | None:
    """The block a response file is for, from its name (`block012.h5` → 12), or None."""
    match = BLOCK_FILE.match(name)
    return int(match[1]) if match else None
