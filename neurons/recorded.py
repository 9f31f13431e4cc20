"""Recorded neurons: a real rig shows the images and sends back spike counts.

`RecordedNeuron` is the base class a lab subclasses for its own rig (and registers under the
entry-point group `evolver.neurons`, so `--neuron myrig:channel=3` works once its package is
installed). A subclass implements `exchange(block)`: show the block's images, return what came back
as {image id: responses (channels,)}, and may return early or leave ids out (they become NaN).
The base class numbers blocks, selects channels and matches every response to its image by id.

Two rigs come with evolver:

- `folder:PATH` — XDream's file exchange: images written as `block{NNN}_{iii}_{imageid}.png`,
  responses read from `block{NNN}.mat` (MATLAB v7.3/HDF5: `stimulusID`, `tEvokedResp`) or
  `block{NNN}.h5` (`scores`, optional `indices`), in PATH or in the folder `scores=DIR` names.
- `zmq:tcp://HOST:PORT` — over ZeroMQ: evolver binds and serves blocks (a JSON header + PNG bytes);
  the rig connects, says hello, answers with a JSON message; heartbeats, timeouts, and a restarted
  rig is served the pending block again. Loopback by default; another address needs `token=`.
  Nothing received is unpickled, and messages over `max_bytes` are refused by the socket.

Options, after the address: `channel=N` (default 0), `channels=1,5,9` or `channels=0-3` (their
mean), `channels=all` (the mean of all); `timeout=S` (seconds to wait for a block's responses,
default 30), `retries=K` (times a block is served again after a timeout, default 2),
`connect_timeout=S` (how long the first block waits for a rig that has not answered yet, default
120), for the folder `scores=DIR` (where the rig writes its responses, as XDream's rigs do beside
the image folder), and for zmq `token=T` (recorded as `token=REDACTED`) or `token_env=NAME` (read from that
environment variable) and `max_bytes=B`.
"""
from __future__ import annotations

import hmac
import io
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evolver_common import BadInput, RigError, write_atomic
from neurons.base import Neuron
from neurons.spec import index_set

RIG_HELP = ("A recorded neuron is written folder:PATH[:OPTIONS] (XDream's file exchange) or "
            "zmq:tcp://HOST:PORT[:OPTIONS] (ZeroMQ), OPTIONS being name=value fields separated by ':': "
            "channel=N, channels=1,5,9 | A-B | all (their mean), timeout=SECONDS, retries=K, "
            "connect_timeout=SECONDS, for a folder scores=DIR (a separate response folder), and for zmq token=T (or "
            "token_env=NAME, read from that environment variable) and max_bytes=B.")
BLOCK_FILE = re.compile(r"^block(\d{3,})\.(mat|h5)$")
EXCHANGE_FILE = re.compile(r"^block(\d{3,})(?:_\d+_.+\.png|\.(?:mat|h5)(?:\.malformed)?)$")


@dataclass
class Block:
    """What one presentation holds: images (n, 3, H, W) in [0, 1] with their ids (unique strings)."""

    number: int
    images: torch.Tensor
    ids: list[str]


@dataclass
class RigLog:
    """What went wrong at the rig, counted: the run records it."""

    timeouts: int = 0
    unknown_ids: int = 0
    duplicates: int = 0
    malformed: int = 0
    late: int = 0
    events: list[str] = field(default_factory=list)

    def note(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.events.append(message)
        warnings.warn(message, stacklevel=3)


def png(image: torch.Tensor) -> bytes:
    """(3, H, W) in [0, 1] → PNG bytes."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def parse_options(spec: str, address_fields: int) -> tuple[list[str], dict[str, str]]:
    """(address fields, options) of `KIND:ADDRESS...:name=value...`."""
    parts = spec.strip().split(":")
    options = {}
    while len(parts) > 1 + address_fields and "=" in parts[-1]:
        name, _, value = parts.pop().partition("=")
        options[name] = value
    return parts[1:], options


class ChannelSelection:
    """XDream's channel choice: one channel, the mean of a list, or the mean of all."""

    def __init__(self, options: dict[str, str], spec: str):
        if "channel" in options and "channels" in options:
            raise BadInput(f"'{spec}': give channel= or channels=, not both. {RIG_HELP}")
        text = options.get("channels", options.get("channel", "0"))
        self.channels = None if text == "all" else index_set(text, spec, RIG_HELP)

    def __call__(self, responses: np.ndarray) -> float:
        """One response from a (channels,) array; NaN if a chosen channel is missing."""
        responses = np.atleast_1d(np.asarray(responses, dtype=np.float64))
        if self.channels is None:
            return float(responses.mean())
        if max(self.channels) >= len(responses):
            return float("nan")
        return float(responses[list(self.channels)].mean())

    def __str__(self) -> str:
        return "all" if self.channels is None else ",".join(map(str, self.channels))


class RecordedNeuron(Neuron):
    """The base of recorded neurons (see the module docstring). Subclasses set `kind` and implement
    `exchange`; the spec is `KIND:ADDRESS[:name=value...]`."""

    kind = "recorded"
    noisy = True
    address_fields = 1  # ':'-separated fields of the address (a URL such as tcp://h:p has 3)
    options = ("channel", "channels", "timeout", "retries", "connect_timeout")

    def __init__(self, spec: str, weights: str | Path = "pretrained", device: str = "auto", precision: str = "auto"):
        self.spec = spec.strip()
        address, self.settings = self.parse(spec)
        self.address = ":".join(address)
        self.channels = ChannelSelection(self.settings, spec)
        self.timeout = self._number("timeout", 30.0, float)
        self.retries = self._number("retries", 2, int)
        self.connect_timeout = self._number("connect_timeout", 120.0, float)  # the first block's wait
        self.answered = False  # whether the rig has answered a block yet
        self.weights = f"recorded ({self.kind} rig at {self.address}, channels {self.channels})"
        self.next_block = 0
        self.log = RigLog()

    @classmethod
    def parse(cls, spec: str) -> tuple[list[str], dict[str, str]]:
        address, options = parse_options(spec, cls.address_fields)
        if not address or not all(address):
            raise BadInput(f"Malformed recorded-neuron spec '{spec}'. {RIG_HELP}")
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise BadInput(f"'{spec}': unknown option '{unknown[0]}'; valid: {', '.join(cls.options)}. {RIG_HELP}")
        return address, options

    def _number(self, name: str, default, kind):
        try:
            value = kind(self.settings.get(name, default))
        except ValueError:
            raise BadInput(f"'{self.spec[:200]}': {name} must be a number, got '{self.settings[name][:40]}'.") from None
        if not 0 <= value < 1e9:  # NaN fails this too
            raise BadInput(f"'{self.spec[:200]}': {name} must be a number from 0 to 1e9, got {value:.6g}.")
        return value

    def _timed_out(self, block: Block, attempt: int) -> None:
        self.log.note("timeouts", f"block {block.number}: no responses within {self.timeout:g} s "
                                  f"(attempt {attempt + 1} of {self.retries + 1})")

    def _gave_up(self, block: Block) -> RigError:
        return RigError(f"The rig at {self.address} answered no responses for block {block.number} after "
                        f"{self.retries + 1} waits of {self.timeout:g} s. Everything up to the last finished "
                        "generation is recorded; restart the rig and continue with `evolver run --resume RUN`.")

    def exchange(self, block: Block) -> dict[str, np.ndarray]:
        """Show `block` and return {image id: responses (channels,)} for the images that were answered."""
        raise NotImplementedError

    def _match(self, block: Block, ids: list[str], values: np.ndarray) -> dict[str, np.ndarray]:
        """Responses by image id: ids the block does not hold are counted and dropped, repeats too."""
        answered: dict[str, np.ndarray] = {}
        known = set(block.ids)
        for image_id, row in zip(ids, values):
            if image_id not in known:
                self.log.note("unknown_ids", f"block {block.number}: a response for '{image_id}', which the block "
                                             "did not show, was ignored")
            elif image_id in answered:
                self.log.note("duplicates", f"block {block.number}: a second response for '{image_id}' was ignored")
            else:
                answered[image_id] = row
        return answered

    def respond(self, images: torch.Tensor, ids: Iterable[str] | None = None) -> np.ndarray:
        ids = [str(i) for i in ids] if ids is not None else [f"{self.next_block}-{i}" for i in range(len(images))]
        block = Block(self.next_block, images, ids)
        answered = self.exchange(block)
        self.answered = True
        self.next_block += 1
        return np.array([self.channels(answered[i]) if i in answered else np.nan for i in ids])

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.respond(images)

    def state_dict(self) -> dict:
        return {"next_block": self.next_block}

    def load_state_dict(self, state: dict) -> None:
        self.next_block = int(state["next_block"])


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


class FolderRig(RecordedNeuron):
    """XDream's file-exchange protocol (see the module docstring).

    A response file is read once it is whole: its size and time unchanged across two polls (a rig may
    write it in place, as MATLAB's `save` and h5py do), and one that does not read is retried until it
    has been unchanged for `settle_seconds` before it is set aside. Each run claims the folders with a
    session id (`evolver-session.json`, and in the run's state): block files left by another session
    are refused before the first block, this run's own from an interrupted block moved to `stale/`."""

    kind = "folder"
    options = (*RecordedNeuron.options, "scores")
    poll_seconds = 0.02
    settle_seconds = 0.5
    SESSION_FILE = "evolver-session.json"

    def __init__(self, spec: str, **kwargs):
        super().__init__(spec, **kwargs)
        self.folder = Path(self.address)
        self.scores = Path(self.settings.get("scores", self.address))
        for folder, what in ((self.folder, "exchange"), (self.scores, "scores")):
            if not folder.is_dir():
                raise BadInput(f"'{spec}': the {what} folder {folder} does not exist. Create it and point the rig "
                               "at it.")
        self.session = uuid.uuid4().hex
        self.claimed = False

    def state_dict(self) -> dict:
        return {**super().state_dict(), "session": self.session}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.session = str(state.get("session", self.session))

    def image_name(self, block: Block, index: int) -> str:
        return f"block{block.number:03d}_{index:03d}_{block.ids[index]}.png"

    def exchange(self, block: Block) -> dict[str, np.ndarray]:
        if not self.claimed:
            self._claim()
        names = [self.image_name(block, i) for i in range(len(block.ids))]
        for name, image in zip(names, block.images):
            write_atomic(self.folder / name, png(image))
        for attempt in range(self.retries + 1):
            answered = self._wait(block, names)
            if answered is not None:
                return answered
            self._timed_out(block, attempt)
        raise self._gave_up(block)

    def _claim(self) -> None:
        """Before this process's first block: refuse the folders if they hold another session's blocks
        at or after the next one (their responses would be taken for this run's)."""
        marker = self.folder / self.SESSION_FILE
        try:
            ours = json.loads(marker.read_text()).get("session") == self.session
        except (OSError, ValueError, AttributeError):
            ours = False
        later = sorted({p for folder in (self.folder, self.scores) for p in folder.iterdir()
                        if (n := exchange_block(p.name)) is not None and n >= self.next_block})
        if later and not ours:
            shown = ", ".join(p.name for p in later[:4]) + (f" and {len(later) - 4} more" if len(later) > 4 else "")
            raise BadInput(f"The exchange folder {self.folder} holds block files of another session ({shown}), from "
                           f"block {self.next_block} on: the rig would answer them, or their responses be taken for "
                           "this run's. Move them away, or give the run an empty folder.")
        for path in later:  # this run's own, from a block it was stopped in: kept, out of the way
            (path.parent / "stale").mkdir(exist_ok=True)
            path.replace(path.parent / "stale" / path.name)
        write_atomic(marker, json.dumps({"session": self.session, "pid": os.getpid(),
                                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self.claimed = True

    def _wait(self, block: Block, names: list[str]) -> dict[str, np.ndarray] | None:
        # a rig may start after evolver: until it has answered once, wait connect_timeout
        deadline = time.monotonic() + (self.timeout if self.answered else max(self.timeout, self.connect_timeout))
        seen: dict[Path, tuple[tuple[int, int], float]] = {}  # file -> (size and time, unchanged since)
        while time.monotonic() < deadline:
            for suffix in ("mat", "h5"):
                path = self.scores / f"block{block.number:03d}.{suffix}"
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                signature, now = (stat.st_size, stat.st_mtime_ns), time.monotonic()
                if path not in seen or seen[path][0] != signature:  # new, or still being written
                    seen[path] = (signature, now)
                    continue
                parsed = self._read(path, block, names, final=now - seen[path][1] >= self.settle_seconds)
                if parsed is not None:
                    return parsed
            time.sleep(self.poll_seconds)
        return None

    def _read(self, path: Path, block: Block, names: list[str], final: bool) -> dict[str, np.ndarray] | None:
        try:
            ids, values = read_mat_responses(path) if path.suffix == ".mat" else read_h5_responses(path, block.ids)
        except Exception as err:  # noqa: BLE001 - a rig's file fails to parse in many ways; all mean "not readable"
            if final:  # unchanged for settle_seconds and still unreadable: the rig's fault, set aside
                self.log.note("malformed", f"block {block.number}: {path.name} could not be read "
                                           f"({type(err).__name__}: {err}); waiting for a readable one")
                path.replace(path.with_name(path.name + ".malformed"))  # kept for the lab, out of the way
            return None
        by_name = {**{n: i for n, i in zip(names, block.ids)}, **{n[:-4]: i for n, i in zip(names, block.ids)}}
        return self._match(block, [by_name.get(i, i) for i in ids], values)


def exchange_block(name: str) -> int | None:
    """The block an exchange file belongs to (`block012_003_7.png`, `block012.h5`, `block012.mat.malformed`
    → 12), or None."""
    match = EXCHANGE_FILE.match(name)
    return int(match[1]) if match else None


def block_number(name: str) -> int | None:
    """The block a response file is for, from its name (`block012.h5` → 12), or None."""
    match = BLOCK_FILE.match(name)
    return int(match[1]) if match else None


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_OPTION = re.compile(r"(token=)[^:\s'\"]+")
REDACTED = "REDACTED"  # what records hold instead of a literal token


def rig_token(value: str | None, variable: str | None, spec: str) -> str | None:
    """The shared secret: `token=SECRET` as given (recorded as `token=REDACTED`), or `token_env=NAME`, read from the
    environment variable NAME (kept off the command line and out of the records)."""
    if value is not None and variable is not None:
        raise BadInput(f"'{redact(spec)}': give token= or token_env=, not both.")
    if value == REDACTED:
        raise BadInput(f"'{redact(spec)}': this spec's token was kept out of the records. Give the neuron again with "
                       "its token (--neuron ...:token=SECRET), or use token_env=NAME.")
    if variable is not None:
        value = os.environ.get(variable)
        if not value:
            raise BadInput(f"'{redact(spec)}': token_env={variable} names an environment variable that is not set. "
                           "Set it to the rig's shared secret.")
    return value


def redact(text: str) -> str:
    """`text` with every literal `token=SECRET` written `token=REDACTED`, for anything recorded or shown."""
    return TOKEN_OPTION.sub(rf"\1{REDACTED}", text)


# A rig's message is a flat object with two lists: deeper nesting is garbage, refused before it is parsed.
MAX_JSON_DEPTH = 8
MESSAGE_TYPES = ("hello", "heartbeat", "responses")


def parse_message(data: bytes) -> dict | None:
    """A rig's JSON message, or None when it is not one (not UTF-8 JSON, nested too deep, not an object
    of a known type). Integers are read as floats, so a 5,000-digit number is a number (inf), not an
    error."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:  # JSON nesting outside strings, counted before the recursive parser sees it
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return None
        elif byte in (0x5D, 0x7D):
            depth -= 1
    try:
        message = json.loads(data.decode("utf-8"), parse_int=float)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) and message.get("type") in MESSAGE_TYPES else None


class NetworkRig(RecordedNeuron):
    """A rig over ZeroMQ (see the module docstring). evolver binds a ROUTER socket; the rig connects a
    DEALER and sends JSON messages: {"type": "hello"} first, {"type": "heartbeat"} while idle, and
    {"type": "responses", "block": N, "ids": [...], "responses": [[...], ...]} for a block. With a token
    every message is two frames, [token, JSON]: the token is compared (in constant time) before the JSON
    is parsed. A message is at most `max_bytes` in all. A block goes out as [header JSON {"type": "block",
    "block": N, "ids": [...]}, one PNG per image]."""

    kind = "zmq"
    address_fields = 3  # tcp://HOST:PORT
    options = (*RecordedNeuron.options, "token", "token_env", "max_bytes")

    def __init__(self, spec: str, **kwargs):
        import zmq

        super().__init__(spec, **kwargs)
        match = re.fullmatch(r"tcp://(?P<host>[^:/]+|\[[^\]]+\]):(?P<port>\d+)", self.address)
        if not match:
            raise BadInput(f"'{spec}': the address must be tcp://HOST:PORT, got '{self.address}'. {RIG_HELP}")
        self.token = rig_token(self.settings.get("token"), self.settings.get("token_env"), spec)
        if match["host"] not in LOOPBACK and not self.token:
            raise BadInput(f"'{spec}': listening on {match['host']}, beyond this machine, needs a shared secret: "
                           "add :token=SECRET here and give the rig the same token (or bind to 127.0.0.1).")
        self.max_bytes = self._number("max_bytes", 1 << 20, int)
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)  # larger messages: the connection is dropped
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.bind(self.address)
        except zmq.ZMQError as err:
            raise BadInput(f"'{spec}': cannot listen on {self.address} ({err}).") from None
        self.peer: bytes | None = None

    def close(self) -> None:
        self.socket.close()

    def _receive(self, until: float) -> tuple[bytes, dict | None] | None:
        """The next message before `until` (monotonic seconds) as (sender, message), message None if it was
        malformed; None at the deadline. Messages without the token are dropped before they are parsed."""
        import zmq

        while (left := until - time.monotonic()) > 0:
            if not self.socket.poll(int(left * 1000) + 1, zmq.POLLIN):
                continue
            sender, frames = self._frames()
            if frames is None:
                self.log.note("malformed", f"a message over {self.max_bytes} bytes or of more than 2 frames was "
                                           "dropped unread")
                continue
            if self.token is not None:
                if not frames or not hmac.compare_digest(frames[0], self.token.encode()):
                    self.log.note("malformed", "a message with a wrong or missing token was ignored")
                    continue
                frames = frames[1:]
            message = parse_message(frames[0]) if len(frames) == 1 else None
            if message is None:
                self.log.note("malformed", "a message from the rig that is not one JSON object of a known type (at "
                                           f"most {self.max_bytes} bytes, nested at most {MAX_JSON_DEPTH} deep) was "
                                           "ignored")
            return sender, message
        return None

    def _frames(self) -> tuple[bytes, list[bytes] | None]:
        """(sender, frames) of the next message; frames None when it has more frames or bytes than a rig's
        message may (those are received one frame at a time and dropped, so memory stays bounded)."""
        import zmq

        sender = self.socket.recv()
        frames, size = [], 0
        while self.socket.getsockopt(zmq.RCVMORE):
            frame = self.socket.recv()
            size += len(frame)
            if frames is not None and (len(frames) >= 2 or size > self.max_bytes):
                frames = None  # drain the rest, keep nothing
            elif frames is not None:
                frames.append(frame)
        return sender, frames

    def _send(self, block: Block) -> None:
        header = json.dumps({"type": "block", "block": block.number, "ids": block.ids}).encode()
        self.socket.send_multipart([self.peer, header, *(png(image) for image in block.images)])

    def _await_rig(self) -> None:
        """Before the first block: wait for the rig to connect (it may start after evolver)."""
        deadline = time.monotonic() + max(self.connect_timeout, self.timeout)
        while self.peer is None and (received := self._receive(deadline)) is not None:
            sender, message = received
            if message is not None and message["type"] == "hello":
                self.peer = sender

    def exchange(self, block: Block) -> dict[str, np.ndarray]:
        if self.peer is None:
            self._await_rig()
        heard = False
        for attempt in range(self.retries + 1):
            deadline = time.monotonic() + self.timeout
            # Served again only to a rig that went silent: one that sends heartbeats is still
            # presenting, and a second copy would only queue behind the first.
            if self.peer is not None and not heard:
                self._send(block)
            heard = False
            while (received := self._receive(deadline)) is not None:
                sender, message = received
                heard = heard or sender == self.peer
                if message is None:  # a garbled answer: ask for the block again
                    if sender == self.peer:
                        self._send(block)
                elif message["type"] == "hello":  # a (re)started rig: it gets the block in hand
                    self.peer, heard = sender, True
                    self._send(block)
                elif message["type"] == "responses" and sender != self.peer:
                    self.log.note("malformed", "responses from a connection that is not the rig's (no hello) were "
                                               "ignored")
                elif message["type"] == "responses":
                    answered = self._responses(block, message)
                    if answered is not None:
                        return answered
            self._timed_out(block, attempt)
        raise self._gave_up(block)

    def _responses(self, block: Block, message: dict) -> dict[str, np.ndarray] | None:
        if message.get("block") != block.number:
            self.log.note("late", f"responses for block {message.get('block')} arrived during block "
                                  f"{block.number} and were ignored")
            return None
        ids, values = message.get("ids"), message.get("responses")
        try:
            if not isinstance(ids, list) or not isinstance(values, list) or len(ids) != len(values):
                raise ValueError("ids and responses must be lists of one length")
            rows = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in values]
        except (TypeError, ValueError) as err:
            self.log.note("malformed", f"block {block.number}: malformed responses ignored ({err})")
            return None
        return self._match(block, [str(i) for i in ids], rows)
