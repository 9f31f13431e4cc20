"""The listening end of a `zmq:` rig, in a process of its own.

A flood of TCP connections takes one file descriptor each before anything can refuse it: ZeroMQ's I/O
thread accepts them as fast as they come. In the run's own process that starved its records ("Too many
open files"), however quickly the excess was cut. Here it can only exhaust this process's descriptors.

Run as `python rig_listener.py ADDRESS PARENT MAX_BYTES ALIVE_FD` (a script: it imports no evolver
package, so it starts in a fraction of a second, without torch). It binds a ROUTER on ADDRESS, connects
a PAIR to PARENT (an ipc:// endpoint in a folder only the user can enter) and forwards, in one loop:
- a rig's message to the parent as [sender, frame, ...] (at most 2 frames and MAX_BYTES in all);
- the parent's [peer, frame, ...] to that peer;
- notices as [CONTROL, kind, detail]: b"listening" PORT once bound, b"failed" WHY if it cannot bind,
  b"dropped" SENDER for a message over the limits, b"gone" PEER for a send to a connection that is gone.
It keeps at most MAX_CONNECTIONS connections, cutting each one beyond as it is accepted, and exits when
ALIVE_FD (the read end of a pipe whose write end only the parent holds) reaches its end: when the parent
closes it, or dies (then it removes PARENT's socket file and folder, which the parent could not).
"""
from __future__ import annotations

import os
import signal
import socket
import sys

MAX_CONNECTIONS = 32
HANDSHAKE_SECONDS = 3  # ZeroMQ drops a connection that has not finished its handshake in this time
CONTROL = b""  # a notice's first frame: a rig's connection id is never empty
QUEUED = 1000  # messages the parent has not read yet; beyond them a flood's messages are dropped


class ConnectionGuard:
    """Counts the ROUTER's open connections from ZeroMQ's monitor events and cuts each one accepted beyond
    `limit`: its TCP connection is shut down, and ZeroMQ, seeing it end, closes it. Connections already open,
    the rig's, are not cut; only a TCP connection to `port` is (a descriptor closed and reused before its
    event is read may be another of the socket's: a rig cut so reconnects, and is taken back by its next
    message)."""

    def __init__(self, port: int, limit: int = MAX_CONNECTIONS):
        self.port, self.limit, self.open, self.cut = port, limit, set(), 0

    def event(self, event: dict) -> None:
        """`event`: one of ZeroMQ's monitor events, parsed."""
        import zmq

        descriptor = event["value"]
        if event["event"] == zmq.EVENT_DISCONNECTED:
            self.open.discard(descriptor)
        elif len(self.open) < self.limit:
            self.open.add(descriptor)
        else:
            self._cut(descriptor)

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


def _forward(router, parent, max_bytes: int) -> None:
    """One rig message to the parent. One with more frames or bytes than a rig's message may have is
    received a frame at a time and dropped (memory stays bounded), the parent told of it."""
    import zmq

    sender = router.recv()
    frames, size = [], 0
    while router.getsockopt(zmq.RCVMORE):
        frame = router.recv()
        size += len(frame)
        if frames is not None and (len(frames) >= 2 or size > max_bytes):
            frames = None
        elif frames is not None:
            frames.append(frame)
    try:
        parent.send_multipart([sender, *frames] if frames is not None else [CONTROL, b"dropped", sender], zmq.NOBLOCK)
    except zmq.Again:  # the parent has QUEUED messages unread: this one is a flood's
        pass


def _serve_one(router, parent) -> None:
    import zmq

    peer, *frames = parent.recv_multipart()
    try:
        router.send_multipart([peer, *frames])
    except zmq.ZMQError as err:
        if err.errno != zmq.EHOSTUNREACH:
            raise
        parent.send_multipart([CONTROL, b"gone", peer])


def serve(address: str, parent_address: str, max_bytes: int, alive: int) -> None:
    import zmq
    from zmq.utils.monitor import parse_monitor_message  # now: once flooded, no descriptor is left to import with

    context = zmq.Context()
    parent = context.socket(zmq.PAIR)
    parent.setsockopt(zmq.LINGER, 0)
    parent.setsockopt(zmq.SNDHWM, QUEUED)
    parent.connect(parent_address)
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # larger messages: the connection is dropped
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_SECONDS * 1000)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer fails, rather than vanish
    monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
    try:
        router.bind(address)
    except zmq.ZMQError as err:
        parent.send_multipart([CONTROL, b"failed", str(err).encode()])
        return
    port = int(router.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
    guard = ConnectionGuard(port)
    parent.send_multipart([CONTROL, b"listening", str(port).encode()])
    poller = zmq.Poller()
    for source in (monitor, router, parent, alive):
        poller.register(source, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if alive in ready:
            break
        while monitor.poll(0):  # cuts first: each waiting connection holds a descriptor
            guard.event(parse_monitor_message(monitor.recv_multipart()))
        if router in ready:
            _forward(router, parent, max_bytes)
        if parent in ready:
            _serve_one(router, parent)
    context.destroy(linger=0)
    _remove_endpoint(parent_address)


def _remove_endpoint(address: str) -> None:
    """The parent's ipc endpoint and its folder, which a parent killed outright could not remove."""
    path = address.removeprefix("ipc://")
    for remove in (os.unlink, os.rmdir):
        try:
            remove(path)
        except OSError:  # removed by the parent already, or not ours to remove
            return
        path = os.path.dirname(path)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; the parent then closes ALIVE_FD
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
