"""Multipart messages in and out, without the per-frame costs of pyzmq's helpers.

send_multipart combines flag enums for every frame and recv_multipart asks the socket
for RCVMORE after every frame; with ready-made int flags and Frame.more, a 6-frame MDP
message costs a third as much. The server's frontend and backend, and worker.py, send
and receive through here.
"""

from __future__ import annotations

import zmq
from zmq.backend import Frame as CompiledFrame
from zmq.backend import Socket as CompiledSocket

# zmq.Socket.send is a Python wrapper (for the draft routing_id and group options) over
# the compiled send; calling that directly halves the cost of each frame.
send_frame = CompiledSocket.send
# Likewise every attribute of a zmq.Socket or zmq.Frame is looked up through their
# class's __getattr__ hook (socket options as attributes), a slow path in CPython: the
# compiled methods and properties, called directly, save 3 % of a broker's instructions
# per request (callgrind), the frames of MDP messages being many.
recv_frame = CompiledSocket.recv
get_option = CompiledSocket.get
frame_bytes = CompiledFrame.bytes.__get__
frame_more = CompiledFrame.more.__get__  # type: ignore[attr-defined]  # a property

# Messages read from one socket per wake-up at most, so that replies never wait long
# behind reads, nor one socket's traffic behind another's.
READ_BATCH = 32

SEND_MORE = int(zmq.SNDMORE | zmq.DONTWAIT)
SEND_LAST = int(zmq.DONTWAIT)
# As plain ints: pyzmq's enums make getsockopt(EVENTS) & POLLIN cost 40 % more.
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)


def send(socket: zmq.Socket, frames: list[bytes]) -> None:
    """Send without ever blocking: zmq.Again if the peer's queue is full (or, on a
    DEALER, no peer is connected), zmq.ZMQError(EHOSTUNREACH) on a ROUTER with
    ROUTER_MANDATORY if the peer is gone. Only the first frame can fail: the rest of a
    message always follows it."""
    for frame in frames[:-1]:
        send_frame(socket, frame, SEND_MORE)
    send_frame(socket, frames[-1], SEND_LAST)


def send_routed(socket: zmq.Socket, route: list[bytes], body: bytes) -> None:
    """send(socket, [*route, body]), without building that list: a reply's hot path."""
    for frame in route:
        send_frame(socket, frame, SEND_MORE)
    send_frame(socket, body, SEND_LAST)


def receive(socket: zmq.Socket, keep: int = 1_000_000) -> tuple[list[bytes], int]:
    """The next message (which must be waiting), keeping at most `keep` frames; returns
    (frames kept, frames in the message). Frames past `keep` are read and dropped."""
    frame = recv_frame(socket, 0, False)
    received = [frame]
    # Frames first, bytes after in one map(): the loop per frame is what a message costs.
    for _ in range(keep - 1):
        if not frame_more(frame):
            return list(map(frame_bytes, received)), len(received)
        frame = recv_frame(socket, 0, False)
        received.append(frame)
    count = len(received)
    while frame_more(frame):
        frame = recv_frame(socket, 0, False)
        count += 1
    return list(map(frame_bytes, received)), count


def readable(socket: zmq.Socket) -> bool:
    """Whether a message is waiting: the check between the reads of a batch."""
    events: int = get_option(socket, EVENTS)  # type: ignore[assignment]  # no cast(): a call
    return bool(events & POLLIN)
