"""Recorded neurons: a real rig shows the images and sends back spike counts.

`RecordedNeuron` is the base class a lab subclasses for its own rig (and registers under the
entry-point group `evolver.neurons`, so `--neuron myrig:channel=3` works once its package is
installed). A subclass implements `exchange(block)`: show the block's images, return what came back
as {image id: responses (channels,)}, and may return early or leave ids out (they become NaN).
The base class numbers blocks, selects channels and matches every response to its image by id.

Two rigs come with evolver (neurons.rig_folder and neurons.rig_zmq; the file formats in neurons.rig_files):

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

import re
import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolver_common import BadInput, RigError
from evolver_common.secrets import redact
from evolver_common.specs import parse_spec, typed_options
from neurons.base import Neuron
from neurons.spec import index_set

RIG_HELP = ("A recorded neuron is written folder:PATH[:OPTIONS] (XDream's file exchange) or "
            "zmq:tcp://HOST:PORT[:OPTIONS] (ZeroMQ), OPTIONS being name=value fields separated by ':': "
            "channel=N, channels=1,5,9 | A-B | all (their mean), timeout=SECONDS, retries=K, "
            "connect_timeout=SECONDS, for a folder scores=DIR (a separate response folder), and for zmq token=T (or "
            "token_env=NAME, read from that environment variable) and max_bytes=B.")


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
    early: int = 0
    reconnects: int = 0
    events: deque[str] = field(default_factory=lambda: deque(maxlen=RigLog.KEPT))

    KEPT = 1000  # the latest events kept: a rig that errs all session long costs no more memory

    def note(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.events.append(message)
        warnings.warn(message, stacklevel=3)


class ChannelSelection:
    """XDream's channel choice: one channel, the mean of a list, or the mean of all."""

    def __init__(self, options: dict[str, str], spec: str):
        if "channel" in options and "channels" in options:
            raise BadInput(f"'{redact(spec)}': give channel= or channels=, not both. {RIG_HELP}")
        text = options.get("channels", options.get("channel", "0"))
        self.channels = None if text == "all" else index_set(text, spec, RIG_HELP)

    def __call__(self, responses: np.ndarray) -> np.ndarray:
        """The responses (n,) from every channel's (n, channels): NaN where a chosen channel is missing."""
        if self.channels is None:
            with warnings.catch_warnings():  # an image no channel answered is NaN, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmean(responses, axis=1) if np.isnan(responses).any() else responses.mean(axis=1)
        if max(self.channels) >= responses.shape[1]:
            return np.full(len(responses), np.nan)
        return responses[:, list(self.channels)].mean(axis=1)

    def __str__(self) -> str:
        return "all" if self.channels is None else ",".join(map(str, self.channels))


class RecordedNeuron(Neuron):
    """The base of recorded neurons (see the module docstring). Subclasses set `kind` and implement
    `exchange`; the spec is `KIND:ADDRESS[:name=value...]`."""

    kind = "recorded"
    noisy = True
    address_fields = 1  # ':'-separated fields of the address (a URL such as tcp://h:p has 3)
    options = {"channel": str, "channels": str, "timeout": float, "retries": int, "connect_timeout": float}

    def __init__(self, spec: str, weights: str | Path = "pretrained", device: str = "auto", precision: str = "auto"):
        self.spec = spec.strip()
        address, self.settings = self.parse(spec)
        self.address = ":".join(address)
        self.channels = ChannelSelection(self.settings, spec)
        self.timeout = self._number("timeout", 30.0)
        self.retries = self._number("retries", 2)
        self.connect_timeout = self._number("connect_timeout", 120.0)  # the first block's wait
        self.answered = False  # whether the rig has answered a block yet
        self.weights = f"recorded ({self.kind} rig at {self.address}, channels {self.channels})"
        self.next_block = 0
        self.log = RigLog()

    @classmethod
    def parse(cls, spec: str) -> tuple[tuple[str, ...], dict[str, Any]]:
        parsed = parse_spec(spec, RIG_HELP, cls.address_fields)
        if not parsed.address or not all(parsed.address):
            raise BadInput(f"Malformed recorded-neuron spec '{spec}'. {RIG_HELP}")
        return parsed.address, typed_options(parsed.options, cls.options, f"'{redact(spec)[:200]}'", RIG_HELP,
                                             max_int=float("inf"))

    def _number(self, name: str, default: float) -> float:
        value = self.settings.get(name, default)
        if not 0 <= value < 1e9:
            raise BadInput(f"'{redact(self.spec)[:200]}': {name} must be a number from 0 to 1e9, got {value:.6g}.")
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

    def respond_channels(self, images: torch.Tensor, ids: Iterable[str] | None = None) -> np.ndarray:
        """Every channel's responses to one block, (n, channels) float64: NaN for an image not answered, and
        beyond the channels an image's answer held."""
        ids = [str(i) for i in ids] if ids is not None else [f"{self.next_block}-{i}" for i in range(len(images))]
        block = Block(self.next_block, images, ids)
        answered = self.exchange(block)
        self.answered = True
        self.next_block += 1
        rows = [np.atleast_1d(np.asarray(answered[i], dtype=np.float64)) if i in answered else np.empty(0)
                for i in ids]
        responses = np.full((len(ids), max([len(r) for r in rows] + [1])), np.nan)
        for k, row in enumerate(rows):
            responses[k, :len(row)] = row
        return responses

    def respond(self, images: torch.Tensor, ids: Iterable[str] | None = None) -> np.ndarray:
        """The chosen channels' responses (n,) (`channel=`, `channels=`)."""
        return self.channels(self.respond_channels(images, ids))

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.respond(images)

    def channel(self, number: int) -> Channel:
        """This rig's channel `number` alone, as a session's thread follows it (its spec names the channel)."""
        return Channel(self, number)

    def state_dict(self) -> dict:
        return {"next_block": self.next_block}

    def load_state_dict(self, state: dict) -> None:
        self.next_block = int(state["next_block"])


class Channel(Neuron):
    """One channel of a rig: it answers through the rig (one block for all that share it) and names its channel
    where a run records its neuron (`spec`, `weights`), as `KIND:ADDRESS:...:channel=N` would."""

    noisy = True

    def __init__(self, rig: RecordedNeuron, number: int):
        self.rig = rig
        self.spec = re.sub(r":channels?=[^:]*", "", rig.spec) + f":channel={number}"
        self.channels = ChannelSelection({"channel": str(number)}, self.spec)
        self.weights = f"recorded ({rig.kind} rig at {rig.address}, channels {self.channels})"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.respond(images)

    def respond(self, images: torch.Tensor, ids: Iterable[str] | None = None) -> np.ndarray:
        return self.channels(self.rig.respond_channels(images, ids))

    def state_dict(self) -> dict:
        return self.rig.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rig.load_state_dict(state)
