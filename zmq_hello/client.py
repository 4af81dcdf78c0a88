"""Client: a long-lived, thread-safe client of server.py, many requests in flight.

    with Client("tcp://127.0.0.1:5555") as client:
        reply = client.request(b"Hello")

It keeps one DEALER socket per server for its lifetime. pyzmq sockets are not
thread-safe (two threads in one socket crash the process), so every use of a socket
happens under one lock and never blocks. Waiting is done outside the lock: one calling
thread at a time, the reader, waits on the sockets' descriptors for whoever is waiting;
the others wait on their own event, and whichever thread takes a reply off a socket
hands it to its call. A thread that is alone is its own reader, so a loop of calls costs
about what a bare DEALER does. Which reply is whose, and where a retry goes, is decided
in zmq_hello.calls; this module carries it out.

request() is the one-shot function client.py has always had, kept for code that
imports it: it is built on a Client kept per thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence

import zmq

from zmq_hello.calls import BaseClient, Call, Calls, Curve, NoReply, ServerError, endpoint_list
from zmq_hello.sockets import allow_ipv6

__all__ = ["Client", "NoReply", "ServerError", "request"]

HEARTBEAT_IVL_MS = 1000  # a frozen or vanished server's connection is dropped within
HEARTBEAT_TIMEOUT_MS = 3000  # about 3 s, and made again when it is back
# As plain ints: pyzmq's constants are enums, and enum arithmetic in the request path
# cost more than the rest of it together (a profile: 15 us of 23 us a call).
EVENTS, POLLIN, NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
# getsockopt() without its conversion of the result to an enum, for the same reason.
get_option: Callable[[zmq.Socket, int], int] = zmq.backend.Socket.get  # type: ignore[assignment]


def connect(
    context: zmq.Context, endpoint: str, routing_id: bytes | None, curve: Curve | None
) -> zmq.Socket:
    """A DEALER connected to endpoint, set up as every client's is."""
    dealer: zmq.Socket = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)  # never wait on close for an unsent request
    # Queue only to a connection that is up: a request for a server that is down then
    # fails over at once instead of waiting, queued, for that server to come back.
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    # Never stop reading a connection: libzmq 4.3 aborts on a stopped connection that the
    # peer resets (docs/reliability.md). Replies only come for requests sent.
    dealer.setsockopt(zmq.RCVHWM, 0)
    dealer.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    if routing_id is not None:
        dealer.setsockopt(zmq.ROUTING_ID, routing_id)
    if curve:
        dealer.curve_publickey, dealer.curve_secretkey, dealer.curve_serverkey = curve
    allow_ipv6(dealer, endpoint)
    try:
        dealer.connect(endpoint)
    except zmq.ZMQError:
        dealer.close(linger=0)
        raise
    return dealer


class Client(BaseClient):
    """A client of one server, or of several for failover, shared by threads:
    Client(endpoints, *, timeout=2.5, retries=3, curve=None, routing_id=None), the
    arguments as BaseClient (zmq_hello.calls) reads them."""

    def _open(self) -> None:
        self._start()
        self._connect()
        _clients.add(self)

    def _start(self) -> None:
        """Fresh state with no sockets: at start, and in a forked child."""
        self._lock = threading.Lock()
        self._calls = Calls(self.endpoints)  # a forked child's calls are its own
        self._sockets: dict[str, zmq.Socket] = {}  # by endpoint
        self._reader: Call | None = None  # the call whose thread waits on the sockets
        self._followers: list[Call] = []  # calls whose threads wait on their own event
        self._blocked: list[Call] = []  # calls whose try waits for a connection up
        self._wake_fd = -1

    def _connect(self) -> None:
        context: zmq.Context = zmq.Context.instance()  # a forked child gets a new one (pyzmq)
        try:
            for endpoint in self.endpoints:
                self._sockets[endpoint] = connect(context, endpoint, self.routing_id, self.curve)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        # The reader waits on each socket's descriptor (libzmq signals on it when the
        # socket has news) and on a pipe that other threads write to when they took
        # the reader's own reply, or when the client closes.
        self._wake_read, self._wake_fd = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_fd, False)
        # Descriptors are plain ints: closed by close(), or when the client is collected.
        self._pipe_closer = weakref.finalize(self, _close_pipe, self._wake_read, self._wake_fd)
        self._poller = select.poll()
        self._poller.register(self._wake_read, select.POLLIN)
        for dealer in self._sockets.values():
            self._poller.register(get_option(dealer, zmq.FD), select.POLLIN)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self,
        body: bytes,
        *,
        service: str | bytes | None = None,
        timeout: float | None = None,
        on_partial: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Send body and return the reply's body.

        service: a service of the server's MDP broker (its workers). timeout: this
        call's seconds per try, instead of the client's. on_partial(body) is called, in
        this thread, with each partial reply of a streaming MDP/0.2 worker; each one
        gives the try another timeout. Made inside a handler, the call waits no longer
        than the handler's own caller will (zmq_hello.time_remaining()). Raises NoReply
        when every try timed out (or the handler's time ran out), ServerError when the
        server answered with an error, ValueError once the client is closed.
        """
        return self._request(body, service, timeout, on_partial)

    def _request(
        self,
        body: bytes,
        service: str | bytes | None = None,
        timeout: float | None = None,
        on_partial: Callable[[bytes], None] | None = None,
        on_try: Callable[[int], None] | None = None,
    ) -> bytes:
        """request(), and on_try(attempt) as each try is sent, 0 for the first (for
        client.py, which reports them)."""
        service, timeout = self._arguments(service, timeout)
        call: Call | None = None
        try:
            for attempt in range(1 + self.retries):
                if on_try is not None:
                    on_try(attempt)
                with self._lock:
                    self._check_open()
                    if call is None:
                        call = self._calls.open(body, service, timeout)
                    if not self._calls.begin_try(call, time.monotonic()):
                        raise self._no_reply(timeout, attempt, cut_short=True)
                    self._send(call)
                    self._pump(call)
                if self._wait_try(call, on_partial):
                    return call.result()
                with self._lock:
                    self._calls.timed_out(call)
            cut = call is not None and self._calls.cut_short(call, time.monotonic())
            raise self._no_reply(timeout, cut_short=cut)
        finally:
            if call is not None:
                with self._lock:
                    self._calls.close(call)
                    if call in self._blocked:
                        self._blocked.remove(call)
                    if self._reader is None:
                        self._hand_over()  # woken to read, this thread leaves instead

    def close(self) -> None:
        """Close the sockets and fail the calls in flight (ValueError), at once: a
        request not yet sent is dropped, not waited for."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for follower in self._followers:
                follower.waiter.set()
            if self._reader is not None:
                self._wake_reader()
        # The reader may be inside poll() on the sockets' descriptors: wait for it to
        # leave before the sockets (and those descriptors) go.
        deadline = time.monotonic() + 1.0
        while self._reader is not None and time.monotonic() < deadline:
            time.sleep(0.001)
        with self._lock:
            self._close_sockets()
        _clients.discard(self)

    def _close_sockets(self) -> None:
        for dealer in self._sockets.values():
            dealer.close(linger=0)
        self._sockets = {}
        if self._wake_fd >= 0:
            self._pipe_closer()
            self._wake_fd = -1

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the client is closed")
        if not self._sockets:  # first use in a forked child
            self._connect()

    def _send(self, call: Call) -> None:
        """Send call's try to the first server whose connection is up and has room;
        with none, the try waits for one (_pump sends it)."""
        for endpoint in self._calls.order:
            try:
                self._sockets[endpoint].send_multipart(call.frames, NOBLOCK)
            except zmq.Again:
                continue
            call.endpoint = endpoint
            return
        self._blocked.append(call)

    def _pump(self, me: Call) -> None:
        """Take every reply waiting on the sockets to its call, and send the tries that
        waited for a connection. Runs under the lock after any use of a socket: libzmq
        signals a socket's descriptor only for news since its state was last read, so
        whoever used a socket must also read what is waiting, or nobody would be woken
        for it."""
        now = time.monotonic()
        for dealer in self._sockets.values():
            while True:
                events: int = get_option(dealer, EVENTS)
                if not events & POLLIN:
                    break
                call = self._calls.route(dealer.recv_multipart(NOBLOCK), now)
                if call is me and me.done and len(self._calls.pending) == 1:
                    return  # alone and answered: whoever sends next reads what else waits
                if call is None or call is me:
                    continue
                if call is self._reader:
                    self._wake_reader()
                elif call.waiter is not None:
                    call.waiter.set()
        if self._blocked:
            blocked, self._blocked = self._blocked, []
            for call in blocked:
                if call.deadline > now:
                    self._calls.resend_frame(call, now)  # it waited: less time to tell
                    self._send(call)
            # The sends used the sockets, sent or not: a refused send reads a socket's
            # commands too (which clears its descriptor), so read EVENTS last, and go
            # round again while it shows a reply to take or room to send.
            if len(self._blocked) < len(blocked) or any(
                get_option(dealer, EVENTS) for dealer in self._sockets.values()
            ):
                self._pump(me)

    def _wake_reader(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._wake_fd, b"\0")

    def _wait_try(self, call: Call, on_partial: Callable[[bytes], None] | None) -> bool:
        """Wait for call's reply until its try's deadline: True if it came."""
        while True:
            if call.partials:
                with self._lock:
                    partials = call.take_partials()
                for part in partials:
                    if on_partial is not None:
                        on_partial(part)
            if call.done:
                return True
            left = call.deadline - time.monotonic()
            if left <= 0:
                return False
            self._wait(call, left)

    def _wait(self, call: Call, left: float) -> None:
        """Wait up to left seconds for news for call: as the reader, on the sockets, if
        nobody else is; else on call's own event."""
        with self._lock:
            self._check_open()
            if call.done or call.partials:
                return
            reading = self._reader is None
            if reading:
                self._reader = call
            else:
                if call.waiter is None:
                    call.waiter = threading.Event()
                call.waiter.clear()
                self._followers.append(call)
        if not reading:
            try:
                call.waiter.wait(min(left, 3600.0))
            finally:  # also when the wait raised (KeyboardInterrupt, a signal handler)
                with self._lock:
                    self._followers.remove(call)
            return
        ready: list[tuple[int, int]] = []
        try:
            # At most an hour a wait: poll() refuses a timeout past about 24 days.
            ready = self._poller.poll(min(left, 3600.0) * 1000)
        finally:
            with self._lock:
                self._reader = None
                for fd, _ in ready:
                    if fd == self._wake_read:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_read, 4096)
                if not self._closed:
                    self._pump(call)
                    if call.done or call.partials or time.monotonic() >= call.deadline:
                        self._hand_over()

    def _hand_over(self) -> None:
        """The reader stops reading for now: wake a waiting thread whose reply has not
        come, to read in its place (one whose reply came will not read)."""
        for follower in self._followers:
            if not follower.done and not follower.partials:
                follower.waiter.set()
                return


def _close_pipe(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


# Every open Client, so that a forked child can forget its parent's sockets (pyzmq:
# a child must not use them; closing them there would be a no-op that warns).
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_inherited: list[zmq.Socket] = []


def _after_fork_in_child() -> None:
    for client in list(_clients):
        _inherited.extend(client._sockets.values())
        if client._wake_fd >= 0:  # the child's own copies of the pipe's descriptors
            client._pipe_closer()
        client._start()  # sockets are made again on first use


os.register_at_fork(after_in_child=_after_fork_in_child)


class Kept(threading.local):
    """This thread's Client of its last answered request(), for the next one to use."""

    def __init__(self) -> None:
        self.key: tuple | None = None  # (routing id, endpoints, curve, retries)
        self.client: Client | None = None


kept = Kept()


def request(
    endpoints: str | Sequence[str],
    routing_id: bytes,
    body: bytes,
    timeout: float,
    retries: int,
    on_try: Callable[[int], None] = lambda attempt: None,
    curve: Curve | None = None,
    service: bytes | None = None,
    on_partial: Callable[[bytes], None] = lambda part: None,
) -> bytes | None:
    """Send body to one of the servers at endpoints and return the reply body (an
    ERROR: ... body if the server answered with an error), or None when every try timed
    out. The one-shot function of client.py, kept for code that imports it.

    A call that got its reply leaves its Client open for the next call in the same
    thread with the same routing id, servers and settings, which uses it: a loop of
    calls with one fixed id never reconnects under it, so it never meets the server
    still holding the connection just closed (which would ignore the new one).
    """
    key = (routing_id, tuple(endpoint_list(endpoints)), curve, retries)
    client, kept.client = kept.client, None
    if client is not None and kept.key != key:
        client.close()
        client = None
    if client is None:
        client = Client(
            endpoints, timeout=timeout, retries=retries, curve=curve, routing_id=routing_id
        )
    try:
        reply = client._request(body, service, timeout, on_partial, on_try)
    except NoReply:
        client.close()
        return None
    except ServerError as error:
        reply = error.reply
    except BaseException:
        client.close()
        raise
    kept.key, kept.client = key, client
    return reply
