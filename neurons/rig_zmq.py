"""`zmq:tcp://HOST:PORT`, a rig over ZeroMQ (neurons.recorded's docstring): evolver binds and serves
blocks (a JSON header + PNG bytes); the rig connects, says hello and answers with a JSON message."""
from __future__ import annotations

import hmac
import json
import os
import re
import socket
import threading
import time
import weakref

import numpy as np

from evolver_common import BadInput
from evolver_common.images import png_bytes
from evolver_common.secrets import REDACTED, redact
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


# A flood of connections must not take the process's file descriptors (the run's records need them). The
# socket keeps at most MAX_CONNECTIONS at once, the rig's among them, and cuts each one beyond as it comes;
# ZeroMQ itself drops a connection that has not finished its handshake within HANDSHAKE_SECONDS.
MAX_CONNECTIONS = 32
HANDSHAKE_SECONDS = 3


class ConnectionGuard:
    """Counts a socket's open connections from ZeroMQ's monitor events, in a thread of its own (the socket
    itself is the main thread's), and cuts each accepted beyond `limit`: its TCP connection is shut down,
    and ZeroMQ, seeing it end, closes it. Connections already open, the rig's, are not cut; only a TCP
    connection to `port` is (a descriptor closed and reused before its event is read may be another of the
    socket's: a rig cut so reconnects, and is taken back by its next message)."""

    def __init__(self, router, port: int, limit: int = MAX_CONNECTIONS):
        import zmq

        self.address, self.port, self.limit, self.cut = f"inproc://evolver-connection-guard-{id(self)}", port, limit, 0
        router.monitor(self.address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.socket, self.open, self.stopping = router, set(), threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="evolver-connection-guard")
        self.thread.start()

    def _watch(self) -> None:
        import zmq
        from zmq.utils.monitor import parse_monitor_message

        events = self.socket.context.socket(zmq.PAIR)
        events.connect(self.address)
        try:
            while not self.stopping.is_set():
                if not events.poll(100):
                    continue
                event = parse_monitor_message(events.recv_multipart())
                descriptor = event["value"]
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    self.open.discard(descriptor)
                elif len(self.open) < self.limit:
                    self.open.add(descriptor)
                else:
                    self._cut(descriptor)
        finally:
            events.close(linger=0)

    def _cut(self, descriptor: int) -> None:
        try:
            connection = socket.socket(fileno=descriptor)
        except OSError:  # already closed by ZeroMQ
            return
        try:
            if connection.family in (socket.AF_INET, socket.AF_INET6) and connection.getsockname()[1] == self.port:
                connection.shutdown(socket.SHUT_RDWR)
                self.cut += 1
        except OSError:
            pass
        finally:
            connection.detach()  # ZeroMQ owns the descriptor and closes it

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.socket.disable_monitor()


def _close_socket(guard: ConnectionGuard, router) -> None:
    guard.stop()
    router.close()


class NetworkRig(RecordedNeuron):
    """A rig over ZeroMQ (see the module docstring). evolver binds a ROUTER socket; the rig connects a
    DEALER and sends JSON messages: {"type": "hello"} first, {"type": "heartbeat"} while idle, and
    {"type": "responses", "block": N, "ids": [...], "responses": [[...], ...]} for a block. With a token
    every message is two frames, [token, JSON]: the token is compared (in constant time) before the JSON
    is parsed. A message is at most `max_bytes` in all. A block goes out as [header JSON {"type": "block",
    "block": N, "ids": [...]}, one PNG per image]."""

    kind = "zmq"
    address_fields = 3  # tcp://HOST:PORT
    options = {**RecordedNeuron.options, "token": str, "token_env": str, "max_bytes": int}

    def __init__(self, spec: str, **kwargs):
        import zmq

        super().__init__(spec, **kwargs)
        match = re.fullmatch(r"tcp://(?P<host>[^:/]+|\[[^\]]+\]):(?P<port>\d+)", self.address)
        if not match:
            raise BadInput(f"'{redact(spec)}': the address must be tcp://HOST:PORT, got '{self.address}'. {RIG_HELP}")
        self.token = rig_token(self.settings.get("token"), self.settings.get("token_env"), spec)
        if match["host"] not in LOOPBACK and not self.token:
            raise BadInput(f"'{spec}': listening on {match['host']}, beyond this machine, needs a shared secret: "
                           "add :token=SECRET here and give the rig the same token (or bind to 127.0.0.1).")
        self.max_bytes = self._number("max_bytes", 1 << 20)
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)  # larger messages: the connection is dropped
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_SECONDS * 1000)
        self.guard = ConnectionGuard(self.socket, int(match["port"]))
        # the port is let go when the rig is (the guard's thread would otherwise keep its socket open)
        self._close = weakref.finalize(self, _close_socket, self.guard, self.socket)
        try:
            self.socket.bind(self.address)
        except zmq.ZMQError as err:
            self.close()
            raise BadInput(f"'{redact(spec)}': cannot listen on {self.address} ({err}).") from None
        self.guard.port = int(self.socket.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])  # if given 0
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer fails, rather than vanish
        self.peer: bytes | None = None
        self.lost = False  # whether the rig's connection went away after it said hello

    def close(self) -> None:
        self._close()

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
        """Serve `block` to the rig. A rig whose connection is gone (ZeroMQ knows its id no more: it reconnected,
        under a new id) is forgotten, and its next heartbeat or answer on the new connection names it again."""
        import zmq

        header = json.dumps({"type": "block", "block": block.number, "ids": block.ids}).encode()
        try:
            self.socket.send_multipart([self.peer, header, *(png_bytes(image) for image in block.images)])
        except zmq.ZMQError as err:
            if err.errno != zmq.EHOSTUNREACH:
                raise
            self.log.note("reconnects", f"block {block.number}: the rig's connection is gone; waiting for it on a new "
                                        "one")
            self.peer, self.lost = None, True

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
