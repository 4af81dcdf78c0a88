"""Deadlines, with no sockets: how a caller's remaining time travels with its request,
what a handler sees of it (time_remaining()), and when a waiting request is no longer
worth starting (Pace).

What travels is a duration, the milliseconds the caller will still wait for this try,
since the clocks of two machines differ: the receiver turns it into a deadline on its
own monotonic clock when it reads the request, as gRPC does with grpc-timeout.

- From a client (Client, AsyncClient, client.py) to the server, in the call frame, the
  one envelope frame before the empty delimiter: the call's 8-byte token, MARK, and the
  milliseconds as 4 bytes big-endian. The server echoes the frame as it came; the client
  matches the reply by the token alone. A frame of any other shape carries none.
- From the broker to a worker, in the client address of MDP's REQUEST (an opaque frame
  that any worker echoes in its reply): server.py's own addresses are text, and one for
  a request with a deadline ends in "+" and the milliseconds left when it was sent
  (3f9a01c2.1b+480). Workers of other implementations echo it unread; worker.py reads it.
"""

from __future__ import annotations

import contextvars
import re
import struct
import time

NO_DEADLINE = float("inf")  # the deadline of a request that carries none: it never passes
PASSED = 0.0  # that of a request that came with 0 ms left: passed on any monotonic clock
TOKEN_BYTES = 8  # a call's token, as zmq_hello.calls makes it
MARK = b"zhDL"  # after the token: the call frame carries a deadline
CALL_FRAME_BYTES = TOKEN_BYTES + len(MARK) + 4
# (mark, milliseconds) of a call frame, in one C call: a request's hot path.
unpack_call_frame = struct.Struct(f">{TOKEN_BYTES}x{len(MARK)}sL").unpack
MAX_MS = 0xFFFFFFFF  # about 49 days: a longer wait travels as this
# The address server.py's broker gives a worker for a request, with its deadline (see
# Majordomo.start): a text prefix, a dot, a hex counter, "+", the milliseconds left.
ADDRESS_WITH_DEADLINE = re.compile(rb"[0-9a-f]{8}\.[0-9a-f]+\+([0-9]{1,10})")

monotonic = time.monotonic


class DeadlineSlot:
    """Where a runner puts the deadline of the request whose handler it runs next, for
    time_remaining(): one per thread (and per task of an async runner), set before each
    handler call, NO_DEADLINE for a request without one. An attribute, because a context
    variable set and reset per request cost 4 % of an inline request (callgrind): each
    set copies the context's mapping."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float = NO_DEADLINE) -> None:
        self.deadline = deadline  # time.monotonic()


# This thread's (or task's) DeadlineSlot: a task copies its creator's context, so an async runner
# gives each handler task a DeadlineSlot of its own (Tasks.run_with_deadline).
current: contextvars.ContextVar[DeadlineSlot | None] = contextvars.ContextVar(
    "zmq_hello_deadline", default=None
)


def this_slot() -> DeadlineSlot:
    """The DeadlineSlot of this thread (or task), made on first use; a runner keeps it."""
    found = current.get()
    if found is None:
        found = DeadlineSlot()
        current.set(found)
    return found


def handler_deadline() -> float | None:
    """The deadline of the handler running here (time.monotonic()), or None."""
    found = current.get()
    return None if found is None or found.deadline == NO_DEADLINE else found.deadline


def time_remaining() -> float | None:
    """Inside a handler: the seconds its caller will still wait for the reply (0 once it
    gave up), or None if the request carried no deadline. Outside a handler, None.

    Client.request() and AsyncClient.request() made inside a handler wait no longer than
    this, and pass the shorter deadline on."""
    deadline = handler_deadline()
    if deadline is None:
        return None
    return max(0.0, deadline - monotonic())


def call_frame(token: bytes, seconds: float) -> bytes:
    """The call frame of a try that waits seconds: the token and the deadline. The
    milliseconds are cut down, never up: no callee is told of time its caller lacks."""
    ms = MAX_MS if seconds >= MAX_MS / 1000 else max(0, int(seconds * 1000))  # inf too
    return token + MARK + ms.to_bytes(4, "big")


def token_of(frame: bytes) -> bytes:
    """The call's token in a call frame, with a deadline or without."""
    return frame[:TOKEN_BYTES] if len(frame) == CALL_FRAME_BYTES else frame


def from_call_frame(frame: bytes, now: float) -> float:
    """The deadline a call frame read at now carries, on this process's clock; NO_DEADLINE
    if the frame carries none, PASSED if its caller had no time left to give."""
    if len(frame) != CALL_FRAME_BYTES:
        return NO_DEADLINE
    mark, ms = unpack_call_frame(frame)
    if mark != MARK:
        return NO_DEADLINE
    return now + ms * 0.001 if ms else PASSED


def with_deadline(address: bytes, seconds: float) -> bytes:
    """A worker's client address for a request whose caller waits seconds more."""
    return b"%s+%d" % (address, max(0, int(seconds * 1000)))


def from_address(address: bytes) -> float | None:
    """The deadline a worker's client address carries, from now; None if it carries none
    (every address from a broker of another implementation)."""
    if b"+" not in address:  # the common case, checked in C
        return None
    match = ADDRESS_WITH_DEADLINE.fullmatch(address)
    if match is None:
        return None
    return monotonic() + int(match[1]) / 1000


class Pace:
    """How long a service's handler has taken lately: an exponentially weighted moving
    average of its run times, as TCP keeps of round trips (RFC 6298's weight of 1/8).

    A request that waited for a worker starts only if its caller will still wait
    HEADROOM times that long: one with less would most likely be answered after its
    caller gave up, and under overload it would take a worker from one that can still
    be answered in time. A request that finds a worker free starts whatever its time
    left (unless that is none): nothing waits behind it.
    """

    WEIGHT = 0.125
    HEADROOM = 1.5

    def __init__(self) -> None:
        self.mean = 0.0  # seconds; 0 until a run is timed: every request is worth starting

    def timed(self, seconds: float) -> None:
        """A handler with a deadline ran for seconds."""
        self.mean += (seconds - self.mean) * self.WEIGHT

    def worth_starting(self, deadline: float, now: float) -> bool:
        """Whether a request that waited, with this deadline, may still be answered in time."""
        return deadline - now > self.mean * self.HEADROOM
