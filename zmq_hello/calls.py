"""The rules of a client's calls, apart from sockets (sans-IO): how a request is framed,
which reply belongs to which call, when a try has run out and which server the next
one goes to. Client (threads) and AsyncClient (asyncio) carry out what it decides.

A request travels as [call frame, b"", body], or, for a service of the MDP broker, as
an MDP/0.2 request behind it: [call frame, b"", b"MDPC02", REQUEST, service, body]. The
call frame is the call's token and the try's deadline, the time it will wait
(zmq_hello.deadlines). The server echoes it, and a reply is matched to its call by the
token alone: a reply nobody waits for any more (its call gave up, or it belongs to
another client that used the same routing id) is dropped on arrival. The token stays
the same across a call's tries, so a late reply to an earlier try counts.

A call made inside a handler waits no longer than the handler's own caller will
(deadlines.time_remaining()), and its tries carry that shorter deadline on.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

from zmq_hello import deadlines
from zmq_hello.envelope import ERROR_PREFIX
from zmq_hello.mdp import RFC18

DEFAULT_TIMEOUT = 2.5  # seconds each try waits
DEFAULT_RETRIES = 3  # tries after the first
# MDP/0.2 (ZeroMQ RFC 18): the client's protocol frame, and the commands it sends and gets.
MDP_CLIENT, MDP_REQUEST, MDP_PARTIAL, MDP_FINAL = (
    RFC18.header,
    RFC18.request,
    RFC18.partial,
    RFC18.final,
)
Curve = tuple[bytes, bytes, bytes]  # (public key, secret key, server's public key)


class NoReply(TimeoutError):
    """Every try of a request timed out: no server answered."""

    def __init__(
        self, endpoints: Sequence[str], tries: int, timeout: float, cut_short: bool = False
    ) -> None:
        self.endpoints = list(endpoints)
        self.tries = tries
        self.timeout = timeout
        tried = "try" if tries == 1 else "tries"
        text = f"no reply from {', '.join(endpoints)} after {tries} {tried} of {timeout:g} s"
        if cut_short:  # a call inside a handler, whose own caller gave up
            text = f"no reply from {', '.join(endpoints)} before the handler's deadline"
        super().__init__(text)


class ServerError(Exception):
    """The server answered with an error; str() is its message, reply the whole body."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        super().__init__(reply[len(ERROR_PREFIX) :].decode("utf-8", "backslashreplace"))


class Call:
    """One request in flight: what it sends, where its current try went, until when that
    try waits, and what has come back. limit: when the handler it is made in gives up,
    if it is made in one (no try waits past it)."""

    __slots__ = (
        "token",
        "frames",
        "service",
        "timeout",
        "limit",
        "deadline",
        "endpoint",
        "reply",
        "partials",
        "waiter",
    )

    def __init__(
        self,
        token: bytes,
        body: bytes,
        service: bytes | None,
        timeout: float,
        limit: float | None = None,
    ) -> None:
        self.token = token
        # The first frame, the call frame, is set for each try (Calls.begin_try).
        if service is None:
            self.frames = [token, b"", body]
        else:
            self.frames = [token, b"", MDP_CLIENT, MDP_REQUEST, service, body]
        self.service = service
        self.timeout = timeout
        self.limit = limit
        self.deadline = 0.0  # when the current try gives up (time.monotonic())
        self.endpoint: str | None = None  # where the current try was sent, if it was
        self.reply: bytes | None = None  # the final reply's body, once it came
        self.partials: list[bytes] = []  # partial replies not yet handed to the caller
        self.waiter: Any = None  # the I/O layer's way to wake this call's caller

    @property
    def done(self) -> bool:
        return self.reply is not None

    def take_partials(self) -> list[bytes]:
        """The partial replies not yet handed to the caller; from now on, they are."""
        partials, self.partials = self.partials, []
        return partials

    def result(self) -> bytes:
        """The reply body; ServerError if the server answered with an error."""
        assert self.reply is not None
        if self.reply.startswith(ERROR_PREFIX):
            raise ServerError(self.reply)
        return self.reply


class Calls:
    """The calls in flight of one client, by token, and the order of its servers."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.order = list(endpoints)  # each try goes to the first of these that is up
        self.pending: dict[bytes, Call] = {}
        # A random prefix (per client and per process, so a forked child's tokens differ
        # from its parent's) and a counter: unique without a system call per request.
        self.prefix = os.urandom(4)
        self.counter = itertools.count()

    def open(self, body: bytes, service: bytes | None, timeout: float) -> Call:
        """A new call; made inside a handler, it is limited by the handler's deadline."""
        token = self.prefix + (next(self.counter) & 0xFFFFFFFF).to_bytes(4, "big")
        call = Call(token, body, service, timeout, deadlines.handler_deadline())
        self.pending[token] = call
        return call

    def close(self, call: Call) -> None:
        """The caller is done with call (answered, given up, cancelled): a reply that
        comes for it later is dropped."""
        self.pending.pop(call.token, None)

    def begin_try(self, call: Call, now: float) -> bool:
        """Ready call's next try: its deadline, in the call frame too. False if the
        handler the call is made in has run out of time: no try is left."""
        timeout = call.timeout
        if call.limit is not None:
            timeout = min(timeout, call.limit - now)
            if timeout <= 0:
                return False
        call.deadline = now + timeout
        call.frames[0] = deadlines.call_frame(call.token, timeout)
        call.endpoint = None
        return True

    def resend_frame(self, call: Call, now: float) -> None:
        """A try sent late (it waited for a connection) tells the time it has left."""
        call.frames[0] = deadlines.call_frame(call.token, call.deadline - now)

    def cut_short(self, call: Call, now: float) -> bool:
        """Whether the handler call is made in has run out of time (NoReply says so)."""
        return call.limit is not None and now >= call.limit

    def timed_out(self, call: Call) -> None:
        """Call's try got no reply in time: its server goes last for every call."""
        if call.endpoint is not None and call.endpoint in self.order:
            self.order.remove(call.endpoint)
            self.order.append(call.endpoint)

    def route(self, frames: list[bytes], now: float) -> Call | None:
        """Take a reply: the call it advanced (its final reply, or one more partial one,
        which gives the try another timeout), or None if nobody waits for it."""
        call = self.pending.get(deadlines.token_of(frames[0]))
        if call is None or len(frames) < 3 or frames[1] != b"":
            return None
        if call.service is None:
            if len(frames) != 3:
                return None
            call.reply = frames[2]
        else:
            if len(frames) != 6:
                return None
            _token, _empty, header, command, service, body = frames
            if header != MDP_CLIENT or service != call.service:
                return None
            if command == MDP_FINAL:
                call.reply = body
            elif command == MDP_PARTIAL:
                call.partials.append(body)
                call.deadline = now + call.timeout
                if call.limit is not None and call.limit < call.deadline:
                    call.deadline = call.limit
            else:
                return None
        return call


class BaseClient:
    """What Client and AsyncClient share: the settings they are made with, checked, and
    how a call's own arguments are read. A subclass makes its sockets in _open().

    endpoints: one endpoint or a sequence; each try goes to the first, in order, whose
    connection is up, and a try that timed out puts its server last. timeout: seconds
    each try waits; retries: tries after the first. curve: (public key, secret key,
    server's public key) to encrypt with CURVE. routing_id: this client's routing id;
    by default the server gives each connection its own.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        curve: Curve | None = None,
        routing_id: bytes | None = None,
    ) -> None:
        check_settings(timeout, retries)
        self.endpoints = endpoint_list(endpoints)
        self.timeout = timeout
        self.retries = retries
        self.curve = curve
        self.routing_id = routing_id
        self._calls = Calls(self.endpoints)
        self._closed = False
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _arguments(
        self, service: str | bytes | None, timeout: float | None
    ) -> tuple[bytes | None, float]:
        """A call's service as bytes, and its timeout: its own, or the client's."""
        if timeout is None:
            timeout = self.timeout
        else:
            check_settings(timeout, 0)
        if isinstance(service, str):
            service = service.encode()
        return service, timeout

    def _no_reply(
        self, timeout: float, tries: int | None = None, cut_short: bool = False
    ) -> NoReply:
        """Every try timed out (tries: how many were made, if not all); cut_short: the
        handler the call is made in ran out of time."""
        tries = 1 + self.retries if tries is None else tries
        return NoReply(self.endpoints, tries, timeout, cut_short)


def endpoint_list(endpoints: str | Sequence[str]) -> list[str]:
    """endpoints as a list, each once, in their order; ValueError if there is none."""
    order = [endpoints] if isinstance(endpoints, str) else list(dict.fromkeys(endpoints))
    if not order:
        raise ValueError("no endpoint given")
    return order


def check_settings(timeout: float, retries: int) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be above 0 seconds, got {timeout!r}")
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number 0 or more, got {retries!r}")
