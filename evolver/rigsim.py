"""`evolver rig-sim`: a separate process that plays the rig for either recorded-neuron adapter.

It "presents" each block (an optional delay), answers from a simulated neuron with an optional
noise model, logs every response it sends (JSON lines: block, id, response, and every channel's where it
plays an array), and injects faults on command: crash after N blocks, drop a share of responses, answer
late, answer twice, send malformed data first, reorder the ids. With `channels` > 1 it plays an array: K
units of the neuron's layer (the neuron's unit and the next K - 1), `silent` of them (chosen by the seed)
answering nothing but zero, the noise drawn for each channel.
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import neurons
from evolver_common import BadInput
from neurons.noise import Noise
from neurons.rig_files import block_number

IMAGE_FILE = r"^block(\d{3,})_(\d{3,})_(.+)\.png$"
STABLE_SECONDS = 0.1  # a block's images are all written once their number stays put this long


@dataclass
class Faults:
    crash_after: int = 0  # exit (status 3) after answering this many blocks; 0 = never
    drop: float = 0.0  # share of responses left out
    late: float = 0.0  # seconds to wait before answering
    twice: bool = False  # send every answer twice
    malformed: int = 0  # the first N answers are garbage
    reorder: bool = False  # answer in a shuffled order
    in_place: bool = False  # write response files in place, slowly (as MATLAB's save and h5py do), not renamed


@dataclass
class RigSimConfig:
    neuron: str = "stimnet:classifier:unit7"
    noise: str | None = None
    delay: float = 0.0  # seconds a block takes to "present"
    seed: int = 0
    format: str = "h5"  # folder protocol: h5 or mat
    scores: str | None = None  # folder protocol: write responses here, not beside the images (XDream's layout)
    token: str | None = None
    log: str | None = None  # JSON-lines file of every response sent
    idle_exit: float = 0.0  # stop after this many seconds without a block; 0 = never
    channels: int = 1  # an array of this many channels: the neuron's unit and the next ones of its layer
    silent: int | None = None  # channels that answer zero (default: a quarter of an array's)


class RigSim:
    """The simulated rig's state: the neuron, the noise, what was answered, the faults still to inject."""

    def __init__(self, config: RigSimConfig, faults: Faults):
        self.config, self.faults = config, faults
        self.neuron = neurons.create(array_spec(config.neuron, config.channels), device="cpu", precision="fp32")
        self.noise = Noise.parse(config.noise) if config.noise else None
        self.rng = np.random.default_rng(config.seed)
        silent = config.channels // 4 if config.silent is None else config.silent
        if not 0 <= silent <= config.channels:
            raise BadInput(f"--silent {silent}: give 0 to --channels ({config.channels}) channels that answer zero.")
        self.silent = np.sort(self.rng.choice(config.channels, silent, replace=False)) if config.channels > 1 else []
        self.answered = 0
        self.malformed_left = faults.malformed

    def responses(self, ids: list[str], images: torch.Tensor) -> tuple[list[str], np.ndarray]:
        """The ids answered and their responses (n, channels), after drop and reorder faults; logged."""
        time.sleep(self.config.delay)
        # an image at a time: its response is then a function of the image alone, as a neuron's is, not of the
        # batch it came in (a block cut short by a kill and shown again answers the same, to the last bit)
        values = np.concatenate([np.asarray(self.neuron(image[None]), dtype=np.float64).reshape(1, -1)
                                 for image in images])
        values[:, self.silent] = 0.0
        if self.noise:
            values = self.noise(values, self.rng)
        keep = [i for i in range(len(ids)) if self.rng.random() >= self.faults.drop]
        if self.faults.reorder:
            keep = list(self.rng.permutation(keep))
        return [ids[i] for i in keep], values[keep]

    def log(self, block: int, ids: list[str], values: np.ndarray, session: str | None = None) -> None:
        """One JSON line per response sent; `session`: the evolver session that asked (ZeroMQ protocol 2)."""
        if self.config.log:
            where = {"session": session} if session is not None else {}
            with open(self.config.log, "a") as f:
                for image_id, row in zip(ids, values):
                    array = {"channels": row.tolist()} if self.config.channels > 1 else {}
                    f.write(json.dumps({**where, "block": block, "id": image_id, "response": float(row[0]), **array})
                            + "\n")

    def finished_block(self) -> None:
        self.answered += 1
        if self.faults.crash_after and self.answered >= self.faults.crash_after:
            os._exit(3)  # a crash: no cleanup, no goodbye

    def garbage(self) -> bool:
        """Whether this answer is to be malformed (the first `malformed` answers are)."""
        if self.malformed_left > 0:
            self.malformed_left -= 1
            return True
        return False


def array_spec(neuron: str, channels: int) -> str:
    """The unit set an array of `channels` reads: the unit of `neuron` (MODEL:LAYER:UNIT) and the next ones."""
    if channels == 1:
        return neuron
    from neurons.spec import UnitSpec

    if not 2 <= channels <= 1024:
        raise BadInput(f"--channels {channels}: an array has 1 to 1,024 channels.")
    unit = UnitSpec.parse(neuron)
    if isinstance(unit.unit, tuple):
        raise BadInput(f"--channels reads the units of a layer from one unit's spec (MODEL:LAYER:UNIT); got the set "
                       f"'{neuron}'.")
    return str(UnitSpec(unit.model, unit.layer, tuple(range(unit.unit, unit.unit + channels)), unit.position))


def _image(data: bytes) -> torch.Tensor:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)


# --------------------------------------------------------------------------------- folder protocol

def _write_h5(path: Path, positions: list[int], values: np.ndarray, in_place: bool = False) -> None:
    """`scores` and `indices`: whole, through a renamed temporary file; or `in_place`, into `path`
    itself with pauses between the parts, as a rig that writes with h5py.File(path, "w") does."""
    import h5py

    target = path if in_place else path.with_name(f".{path.name}.tmp")
    with h5py.File(target, "w") as f:
        if in_place:
            f.flush()
            time.sleep(0.05)
        f["scores"] = values
        if in_place:
            f.flush()
            time.sleep(0.05)
        f["indices"] = np.asarray(positions, dtype=np.int64)
    if not in_place:
        target.replace(path)


def write_mat(path: Path, names: list[str], values: np.ndarray) -> None:
    """A MATLAB v7.3 file as XDream's rig writes it: stimulusID a cell array of char arrays (uint16),
    tEvokedResp an n × channels matrix (stored column-major, so channels × n in HDF5)."""
    import h5py

    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        cells = []
        for i, name in enumerate(names):
            chars = refs.create_dataset(f"c{i}", data=np.array([ord(c) for c in name], dtype=np.uint16)[:, None])
            chars.attrs["MATLAB_class"] = np.bytes_("char")
            cells.append(chars.ref)
        ids = f.create_dataset("stimulusID", data=np.array(cells, dtype=h5py.ref_dtype)[None, :])
        ids.attrs["MATLAB_class"] = np.bytes_("cell")
        responses = f.create_dataset("tEvokedResp", data=values.T)
        responses.attrs["MATLAB_class"] = np.bytes_("double")
    with open(tmp, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, written by evolver rig-sim".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    tmp.replace(path)


def _pending_blocks(folder: Path, done: set[int]) -> dict[int, list[Path]]:
    import re

    blocks: dict[int, list[Path]] = {}
    for path in folder.iterdir():
        match = re.match(IMAGE_FILE, path.name)
        if match and int(match[1]) not in done:
            blocks.setdefault(int(match[1]), []).append(path)
    return blocks


def serve_folder(folder: Path, sim: RigSim) -> None:
    """Answer every block of images that appears in `folder` (its set of files stable for one poll)."""
    import re

    scores = Path(sim.config.scores) if sim.config.scores else folder
    for where in (folder, scores):
        if not where.is_dir():
            raise BadInput(f"The folder {where} does not exist.")
    done = {n for p in scores.iterdir() if (n := block_number(p.name)) is not None}
    seen: dict[int, tuple[int, float]] = {}  # block -> (files, since when that many)
    idle_since = time.monotonic()
    while not sim.config.idle_exit or time.monotonic() - idle_since < sim.config.idle_exit:
        for number, paths in sorted(_pending_blocks(folder, done).items()):
            if seen.get(number, (0,))[0] != len(paths):
                seen[number] = (len(paths), time.monotonic())
            if time.monotonic() - seen[number][1] < STABLE_SECONDS:  # still being written
                continue
            paths.sort(key=lambda p: int(re.match(IMAGE_FILE, p.name)[2]))
            names = [p.name for p in paths]
            ids = [re.match(IMAGE_FILE, n)[3] for n in names]
            answered, values = sim.responses(ids, torch.stack([_image(p.read_bytes()) for p in paths]))
            time.sleep(sim.faults.late)
            path = scores / f"block{number:03d}.{sim.config.format}"
            if sim.garbage():
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(b"this is not a response file")
                tmp.replace(path)
                _wait_set_aside(path)
                answered, values = sim.responses(ids, torch.stack([_image(p.read_bytes()) for p in paths]))
            sim.log(number, answered, values)
            repeat = 2 if sim.faults.twice else 1
            rows, cells = [ids.index(i) for i in answered] * repeat, np.concatenate([values] * repeat)
            if sim.config.format == "mat":
                write_mat(path, [names[r][:-4] for r in rows], cells)
            else:
                _write_h5(path, rows, cells, sim.faults.in_place)
            done.add(number)
            idle_since = time.monotonic()
            sim.finished_block()
        time.sleep(0.02)


def _wait_set_aside(path: Path, seconds: float = 120) -> None:
    """Wait until the adapter has moved a malformed file out of the way (or it is gone)."""
    deadline = time.monotonic() + seconds
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


# ------------------------------------------------------------------------------------ ZeroMQ protocol

def serve_zmq(address: str, sim: RigSim) -> None:
    """Connect to evolver at `address`, say hello, answer blocks, send heartbeats while idle. It outlives
    evolver processes: ZeroMQ reconnects it to the next one, which finds it by its heartbeat."""
    import zmq

    from neurons.rig_zmq import PROTOCOL

    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 1000)
    socket.connect(address)
    token = [sim.config.token.encode()] if sim.config.token else []

    def send(message: dict | bytes) -> None:  # [token, JSON] with a token: evolver checks it before parsing
        socket.send_multipart([*token, message if isinstance(message, bytes) else json.dumps(message).encode()])

    send({"type": "hello", "protocol": PROTOCOL})
    idle_since = last_beat = time.monotonic()
    while not sim.config.idle_exit or time.monotonic() - idle_since < sim.config.idle_exit:
        if time.monotonic() - last_beat > 1.0:
            send({"type": "heartbeat"})
            last_beat = time.monotonic()
        if not socket.poll(100, zmq.POLLIN):
            continue
        header, *pngs = socket.recv_multipart()
        block = json.loads(header)
        ids = [str(i) for i in block["ids"]]
        answered, values = sim.responses(ids, torch.stack([_image(p) for p in pngs]))
        late_until = time.monotonic() + sim.faults.late
        while time.monotonic() < late_until:  # a late rig is alive: its heartbeats go on
            time.sleep(min(0.5, late_until - time.monotonic()))
            send({"type": "heartbeat"})
        if sim.garbage():
            send(b"\x80garbage that is not JSON")
            continue  # the real answer comes when the block is served again
        message = {"type": "responses", "session": block.get("session"), "block": block["block"], "ids": answered,
                   "responses": values.tolist()}
        for _ in range(2 if sim.faults.twice else 1):
            send(message)
        sim.log(block["block"], answered, values, block.get("session"))
        idle_since = time.monotonic()
        sim.finished_block()
    socket.close()
