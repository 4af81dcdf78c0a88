"""AsyncClient: Client for asyncio, on zmq.asyncio, many requests in flight.

    async with AsyncClient("tcp://127.0.0.1:5555") as client:
        reply = await client.request(b"Hello")

One DEALER socket per server, and one task per socket that reads every reply and hands
it to the call it belongs to (zmq_hello.calls decides which). Calls never receive from
a socket themselves, so cancelling one (asyncio.wait_for, task.cancel()) never cancels
a receive: a receive cancelled after it took a message would drop that message (pyzmq
issue 1925). A cancelled call's late reply is dropped by the reader, like any reply
nobody waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
import zmq.asyncio

from zmq_hello.calls import BaseClient, Call, NoReply, ServerError
from zmq_hello.client import connect

__all__ = ["AsyncClient", "NoReply", "ServerError"]


class AsyncClient(BaseClient):
    """A client of one server, or of several for failover, for one asyncio event loop.

    The same arguments, behaviour and exceptions as Client; it belongs to the event
    loop that first uses it.
    """

    def _open(self) -> None:
        self._sockets: dict[str, zmq.asyncio.Socket] = {}  # by endpoint
        context = zmq.asyncio.Context.instance()
        try:
            for endpoint in self.endpoints:
                dealer = connect(context, endpoint, self.routing_id, self.curve)
                self._sockets[endpoint] = dealer  # type: ignore[assignment]
        except zmq.ZMQError:
            for dealer in self._sockets.values():
                dealer.close(linger=0)
            raise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers: list[asyncio.Task] = []
        # One timer for the earliest deadline of all calls, not one a call: most calls
        # are answered long before it, and a timer each cost more than the rest of a call.
        self._alarm: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(
        self,
        body: bytes,
        *,
        service: str | bytes | None = None,
        timeout: float | None = None,
        on_partial: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Send body and return the reply's body; as Client.request."""
        service, timeout = self._arguments(service, timeout)
        loop = self._check_open()
        call = self._calls.open(body, service, timeout)
        try:
            for attempt in range(1 + self.retries):
                if not self._calls.begin_try(call, loop.time()):
                    raise self._no_reply(timeout, attempt, cut_short=True)
                self._set_alarm(call.deadline)
                await self._send(call)
                if await self._wait_try(call, on_partial):
                    return call.result()
                self._calls.timed_out(call)
            raise self._no_reply(timeout, cut_short=self._calls.cut_short(call, loop.time()))
        finally:
            self._calls.close(call)

    async def close(self) -> None:
        """Close the sockets and end the calls in flight (ValueError)."""
        if self._closed:
            return
        self._closed = True
        if self._alarm is not None:
            self._alarm.cancel()
        for call in list(self._calls.pending.values()):
            if call.waiter is not None and not call.waiter.done():
                call.waiter.set_result(None)
        for dealer in self._sockets.values():
            dealer.close(linger=0)  # cancels the readers' receives
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers = []

    def _check_open(self) -> asyncio.AbstractEventLoop:
        """The client's event loop, the running one; its readers start on first use."""
        if self._closed:
            raise ValueError("the client is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._readers = [loop.create_task(self._read(d)) for d in self._sockets.values()]
        elif loop is not self._loop:
            raise RuntimeError("this AsyncClient belongs to another event loop")
        return loop

    def _set_alarm(self, deadline: float) -> None:
        if self._alarm is None or deadline < self._alarm.when():
            if self._alarm is not None:
                self._alarm.cancel()
            assert self._loop is not None
            self._alarm = self._loop.call_at(deadline, self._on_alarm)

    def _on_alarm(self) -> None:
        """Wake the calls whose try has run out, and set the alarm for the next."""
        self._alarm = None
        assert self._loop is not None
        now, earliest = self._loop.time(), None
        for call in self._calls.pending.values():
            if call.deadline <= now:
                if call.waiter is not None and not call.waiter.done():
                    call.waiter.set_result(None)
            elif earliest is None or call.deadline < earliest:
                earliest = call.deadline
        if earliest is not None:
            self._set_alarm(earliest)

    async def _read(self, dealer: zmq.asyncio.Socket) -> None:
        """Hand each reply on dealer to its call, for the client's lifetime."""
        route, now = self._calls.route, asyncio.get_running_loop().time
        while True:
            frames = await dealer.recv_multipart()
            call = route(frames, now())
            if call is not None and call.waiter is not None and not call.waiter.done():
                call.waiter.set_result(None)

    async def _send(self, call: Call) -> None:
        """Send call's try to the first server whose connection is up and has room, or,
        with none, to the first that comes up before the try's deadline."""
        for endpoint in self._calls.order:
            # zmq.asyncio returns a Future, done at once unless queued.
            sent: asyncio.Future = self._sockets[endpoint].send_multipart(  # type: ignore[assignment]
                call.frames, zmq.NOBLOCK
            )
            if not sent.done():  # queued behind a send that waits: that server is not up
                sent.cancel()
            elif sent.exception() is None:
                call.endpoint = endpoint
                return
        # Queued on every socket, for pyzmq to send when its connection is up; the first
        # to leave is the try, the others are cancelled unsent. (Two servers up in the
        # same turn of the loop may both get it: a request may run twice, as on a retry.)
        sends = {
            asyncio.ensure_future(self._sockets[endpoint].send_multipart(call.frames)): endpoint
            for endpoint in self._calls.order
        }
        try:
            left = call.deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait(sends, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for send in sends:
                send.cancel()
        for send in done:
            if not send.cancelled() and send.exception() is None:
                call.endpoint = sends[send]
        if self._closed:
            raise ValueError("the client is closed")

    async def _wait_try(self, call: Call, on_partial: Callable[[bytes], None] | None) -> bool:
        """Wait for call's reply until its try's deadline: True if it came."""
        loop = asyncio.get_running_loop()
        while True:
            if call.partials:
                for part in call.take_partials():
                    if on_partial is not None:
                        on_partial(part)
                self._set_alarm(call.deadline)
            if call.done:
                return True
            if call.deadline <= loop.time():
                return False
            call.waiter = loop.create_future()
            await call.waiter
            if self._closed:
                raise ValueError("the client is closed")
