"""`zmq:tcp://HOST:PORT`, a rig over ZeroMQ (neurons.recorded's docstring): evolver binds and serves
blocks (a JSON header + PNG bytes); the rig connects, says hello and answers with a JSON message.

The rig program may run across evolver processes: one already running when a run starts or resumes is
found by its heartbeat (ZeroMQ reconnects it to the new socket by itself). Protocol 2 names each evolver
process's session in every block so the rig can tell a new run from the last one, and so that answers of
an earlier session, queued in the rig's socket while no run listened, are told apart and ignored. A
protocol-1 rig (no session) still works."""
from __future__ import annotations

import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import weakref

import numpy as np

from evolver_common import BadInput, RigError
from evolver_common.images import png_bytes
from evolver_common.secrets import REDACTED, redact
from neurons import rig_listener
from neurons.recorded import RIG_HELP, Block, RecordedNeuron

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


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


# A rig's message is a flat object with two lists: deeper nesting is garbage, refused before it is parsed.
MAX_JSON_DEPTH = 8
MESSAGE_TYPES = ("hello", "heartbeat", "responses")
PROTOCOL = 2  # 1: no sessions; 2: blocks name their session, answers may echo it


MAX_DIGITS = 100  # Python refuses to read integers of over 4,300 digits; none of a rig's has a hundred


def _integer(text: str) -> int | float:
    return int(text) if len(text) <= MAX_DIGITS else float("nan")


def parse_message(data: bytes) -> dict | None:
    """A rig's JSON message, or None when it is not one (not UTF-8 JSON, nested too deep, not an object
    of a known type). Integers are integers (an image id 17 is "17"); one of more than MAX_DIGITS digits
    is missing (NaN), not an error."""
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
        message = json.loads(data.decode("utf-8"), parse_int=_integer)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) and message.get("type") in MESSAGE_TYPES else None


class Listener:
    """The rig's listening socket, served by `neurons.rig_listener` in a process of its own (why: its
    docstring). `socket` is this process's end, a PAIR: [sender, frame, ...] from a rig, [peer, frame, ...]
    to one, and the listener's notices as [CONTROL, kind, detail]."""

    STARTUP_SECONDS = 60  # a fresh interpreter and pyzmq, on a loaded machine
    SEND_SECONDS = 10  # the listener takes each message as it comes; longer, and it is gone or stuck

    def __init__(self, address: str, max_bytes: int, spec: str):
        import zmq

        self.folder = tempfile.mkdtemp(prefix="evolver-rig-")  # mode 0700: only this user can connect
        self.socket = zmq.Context.instance().socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDTIMEO, self.SEND_SECONDS * 1000)  # a PAIR without its peer would block
        self.socket.bind(f"ipc://{self.folder}/listener")
        alive, self.alive = os.pipe()
        self.process = subprocess.Popen([sys.executable, rig_listener.__file__, address, f"ipc://{self.folder}/listener",
                                         str(max_bytes), str(alive)], pass_fds=[alive], stdin=subprocess.DEVNULL)
        os.close(alive)
        self._close = weakref.finalize(self, Listener._stop, self.socket, self.alive, self.process, self.folder)
        kind, detail = self._first_notice(spec)
        if kind != b"listening":
            self.close()
            raise BadInput(f"'{redact(spec)}': cannot listen on {address} ({detail.decode(errors='replace')}).")
        self.port = int(detail)

    def _first_notice(self, spec: str) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + self.STARTUP_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.socket.poll(100):
                _, kind, detail = self.socket.recv_multipart()
                return kind, detail
        self.close()
        raise RigError(f"'{redact(spec)}': the process that listens for the rig "
                       + (f"ended (exit code {self.process.returncode})" if self.process.poll() is not None else
                          f"did not start in {self.STARTUP_SECONDS} s") + "; its error, if any, is printed above.")

    def check(self, spec: str) -> None:
        """Raises RigError if the listening process has ended (it never does on its own)."""
        if self.process.poll() is not None:
            raise RigError(f"'{redact(spec)}': the process that listens for the rig ended (exit code "
                           f"{self.process.returncode}). Everything up to the last finished generation is recorded; "
                           "continue with `evolver run --resume RUN`.")

    def send(self, frames: list[bytes], spec: str) -> None:
        """[peer, frame, ...] to the rig. RigError if the listener does not take it."""
        import zmq

        try:
            self.socket.send_multipart(frames)
        except zmq.Again:
            self.check(spec)
            raise RigError(f"'{redact(spec)}': the process that listens for the rig took no message in "
                           f"{self.SEND_SECONDS} s. Everything up to the last finished generation is recorded; "
                           "continue with `evolver run --resume RUN`.") from None

    def close(self) -> None:
        self._close()

    @staticmethod
    def _stop(pair, alive: int, process: subprocess.Popen, folder: str) -> None:
        os.close(alive)  # the listener sees the pipe end, and exits
        pair.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


class NetworkRig(RecordedNeuron):
    """A rig over ZeroMQ (see the module docstring). evolver binds a ROUTER socket; the rig connects a
    DEALER and sends JSON messages: {"type": "hello"} first, {"type": "heartbeat"} while idle, and
    {"type": "responses", "block": N, "ids": [...], "responses": [[...], ...]} for a block. With a token
    every message is two frames, [token, JSON]: the token is compared (in constant time) before the JSON
    is parsed. A message is at most `max_bytes` in all. A block goes out as [header JSON {"type": "block",
    "protocol": 2, "session": S, "block": N, "ids": [...]}, one PNG per image]; S is new for each process
    (a run, a resumed run), and an answer that echoes another session's S is ignored."""

    kind = "zmq"
    address_fields = 3  # tcp://HOST:PORT
    options = {**RecordedNeuron.options, "token": str, "token_env": str, "max_bytes": int}

    def __init__(self, spec: str, **kwargs):
        super().__init__(spec, **kwargs)
        match = re.fullmatch(r"tcp://(?P<host>[^:/]+|\[[^\]]+\]):(?P<port>\d+)", self.address)
        if not match:
            raise BadInput(f"'{redact(spec)}': the address must be tcp://HOST:PORT, got '{self.address}'. {RIG_HELP}")
        self.token = rig_token(self.settings.get("token"), self.settings.get("token_env"), spec)
        if match["host"] not in LOOPBACK and not self.token:
            raise BadInput(f"'{spec}': listening on {match['host']}, beyond this machine, needs a shared secret: "
                           "add :token=SECRET here and give the rig the same token (or bind to 127.0.0.1).")
        self.max_bytes = self._number("max_bytes", 1 << 20)
        self.listener = Listener(self.address, self.max_bytes, spec)
        self.socket = self.listener.socket
        self.session = uuid.uuid4().hex[:12]
        self.peer: bytes | None = None
        self.lost = False  # whether the rig's connection went away after it said hello

    def close(self) -> None:
        self.listener.close()

    def _receive(self, until: float) -> tuple[bytes, dict | None] | None:
        """The next message before `until` (monotonic seconds) as (sender, message), message None if it was
        malformed; None at the deadline. Messages without the token are dropped before they are parsed."""
        while (left := until - time.monotonic()) > 0:
            if not self.socket.poll(int(min(left, 1.0) * 1000) + 1):
                self.listener.check(self.spec)
                continue
            sender, *frames = self.socket.recv_multipart()
            if sender == rig_listener.CONTROL:
                self._notice(*frames)
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

    def _notice(self, kind: bytes, detail: bytes) -> None:
        """A notice from the listener: a message it dropped, or a connection a block could not be sent on
        (the rig reconnected, under a new id): that rig is forgotten, and its next heartbeat or answer on the
        new connection names it again."""
        if kind == b"dropped":
            self.log.note("malformed", f"a message over {self.max_bytes} bytes or of more than 2 frames was "
                                       "dropped unread")
        elif kind == b"gone" and detail == self.peer:
            self.log.note("reconnects", "the rig's connection is gone; waiting for it on a new one")
            self.peer, self.lost = None, True

    def _send(self, block: Block) -> None:
        header = json.dumps({"type": "block", "protocol": PROTOCOL, "session": self.session, "block": block.number,
                             "ids": block.ids}).encode()
        self.listener.send([self.peer, header, *(png_bytes(image) for image in block.images)], self.spec)

    def _await_rig(self) -> None:
        """Before the first block: wait for the rig to connect (it may start after evolver). Its hello names
        it, or its heartbeat where the hello was lost with a connection the socket dropped."""
        deadline = time.monotonic() + max(self.connect_timeout, self.timeout)
        while self.peer is None and (received := self._receive(deadline)) is not None:
            sender, message = received
            if message is not None and message["type"] in ("hello", "heartbeat"):
                self.peer = sender

    def exchange(self, block: Block) -> dict[str, np.ndarray]:
        if self.peer is None and not self.lost:
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
                if self.lost and message is not None and message["type"] in ("heartbeat", "responses"):
                    self.peer, self.lost = sender, False  # the rig, reconnected
                    if message["type"] == "heartbeat":
                        self._send(block)
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
        if message.get("session", self.session) != self.session:
            self.log.note("late", f"responses of an earlier session ({str(message['session'])[:40]}) arrived during "
                                  f"block {block.number} and were ignored")
            return None
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
