"""Where server.py runs a handler in its own process, behind the interface every mode
shares (the MDP broker in broker.py is the fourth): worker threads, one asyncio event
loop for an `async def` handler, or inline in the poll loop (--workers 0).

The poll loop hands each request to submit(), then calls flush() once a batch, and takes
replies from collect() after every wake-up. Threads and tasks never touch a socket: they
put replies on a queue and wake the loop through a Waker. Each runner owns its scheduler:
a thread or a task that finishes takes the next request by the fair rule itself, with no
round trip through the poll loop, so the workers never wait for the loop to hand out work.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from zmq_hello import handlers
from zmq_hello.envelope import Reply, Request, error_reply
from zmq_hello.handlers import Handler
from zmq_hello.scheduler import Scheduler

if TYPE_CHECKING:
    import asyncio

    import zmq


NO_REPLIES: list[Reply] = []  # shared, never appended to: most calls have none to give
TOO_MANY = "too many requests from this client"
ABANDON_JOIN_SECONDS = 1.0  # for the event loop to cancel its tasks when abandoning them


class Runner(Protocol):
    """What the poll loop needs of a mode: requests in, replies out, a summary, a stop."""

    sockets: list[zmq.Socket]  # more sockets for the loop to poll (the broker's backend)

    def submit(self, request: Request) -> list[Reply]:
        """Take a request; the replies ready at once: inline, its answer; for a client
        with too many requests waiting already, an error."""
        ...

    def flush(self) -> list[Reply]:
        """Start what submit() took since the last flush; the replies ready at once."""
        ...

    def collect(self, ready: dict) -> list[Reply]:
        """After a wake-up (ready: the poll's result): the replies that came back."""
        ...

    def wait_ms(self, longest: int) -> int:
        """How long the poll may wait before the runner has something to do."""
        ...

    def waiting(self) -> int:
        """Requests taken and not yet started."""
        ...

    def describe(self) -> str:
        """The workers now, for the summary line: '4 threads, 1 busy'."""
        ...

    def unservable(self) -> list[Reply]:
        """At shutdown: error replies for waiting requests that no worker will ever run."""
        ...

    def stop(self) -> None:
        """Once nothing is in flight: end the workers."""
        ...

    def abandon(self) -> None:
        """At the end of the stop's grace, with requests in flight: end what can be ended
        at once (worker processes are killed); threads still running are left to exit."""
        ...


class Waker:
    """A socketpair the poll loop watches: threads (and signals) write a byte to wake it.

    One wake-up serves every reply queued before the loop drains: clear() resets the flag
    before the loop drains, so a reply put after the drain always sees it clear.
    """

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.fd = self.reader.fileno()
        self.requested = threading.Event()

    def wake(self) -> None:
        if not self.requested.is_set():
            self.requested.set()
            # A full buffer means wake-ups are already pending: the loop will wake.
            with contextlib.suppress(BlockingIOError):
                self.writer.send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.reader.recv(4096)
        self.requested.clear()

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class Pool:
    """What threads and tasks share: a scheduler behind a lock, and a queue of replies."""

    sockets: list[zmq.Socket] = []

    def __init__(self, handler: Handler, count: int, max_waiting: int, waker: Waker) -> None:
        self.handler = handler
        self.count = count
        self.waker = waker
        self.scheduler: Scheduler[int, Request] = Scheduler((), max_waiting)
        self.lock = threading.Lock()  # the scheduler's: the loop adds, the workers take
        self.finished: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self.started = 0  # requests taken by a worker (under the lock)
        self.collected = 0  # replies handed to the loop (the loop's thread only)

    def submit(self, request: Request) -> list[Reply]:
        with self.lock:
            if self.scheduler.add(request.route[0], request):
                return NO_REPLIES
        return [error_reply(request.route, TOO_MANY)]

    def done(self, route: list[bytes], reply: bytes) -> None:
        self.finished.put(Reply(route, reply))
        self.waker.wake()

    def collect(self, ready: dict) -> list[Reply]:
        replies = []
        while not self.finished.empty():
            replies.append(self.finished.get())
        self.collected += len(replies)
        return replies

    def wait_ms(self, longest: int) -> int:
        return longest

    def waiting(self) -> int:
        return self.scheduler.queued

    def unservable(self) -> list[Reply]:
        return []

    def busy(self) -> int:
        return self.started - self.collected - self.finished.qsize()


class Threads(Pool):
    """count worker threads; each takes the next request by the fair rule when it frees."""

    def __init__(self, handler: Handler, count: int, max_waiting: int, waker: Waker) -> None:
        super().__init__(handler, count, max_waiting, waker)
        # One token per request submitted and None per thread to stop: a thread that gets
        # a token takes whichever request's turn it is then, not the token's own request.
        self.tokens: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        # Started up front: creating threads on demand delays the first requests of a burst.
        # Daemons, so that a handler that never returns cannot keep an abandoning server up.
        self.threads = [
            threading.Thread(target=self.work, name=f"worker-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def work(self) -> None:
        while self.tokens.get():
            with self.lock:
                request = self.scheduler.next()
                self.started += 1
            self.done(request.route, handlers.call(self.handler, request.body))

    def submit(self, request: Request) -> list[Reply]:
        if refused := super().submit(request):
            return refused
        self.tokens.put(True)
        return NO_REPLIES

    def flush(self) -> list[Reply]:
        return []

    def describe(self) -> str:
        return f"{self.count} threads, {self.busy()} busy"

    def stop(self) -> None:
        """Let each thread finish its request, and join them all."""
        for _ in self.threads:
            self.tokens.put(None)
        for thread in self.threads:
            thread.join()

    def abandon(self) -> None:
        pass  # a thread inside a handler cannot be stopped; as a daemon it ends with us


class Tasks(Pool):
    """An `async def` handler: up to count tasks at once on one event loop in one thread."""

    def __init__(self, handler: Handler, count: int, max_waiting: int, waker: Waker) -> None:
        super().__init__(handler, count, max_waiting, waker)
        import asyncio  # only here: a server with a plain handler need not carry it

        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self.running = 0  # tasks now (the event loop's thread only)
        self.start_requested = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, name="event-loop", daemon=True)
        self.thread.start()

    def flush(self) -> list[Reply]:
        # Read without the lock: a task that ends lowers running before it looks for more
        # work under the lock, so either it sees the requests just added or this sees room.
        if self.running < self.count and not self.start_requested.is_set():
            self.start_requested.set()  # one hand-over to the loop's thread serves a batch
            self.loop.call_soon_threadsafe(self.start_waiting)
        return []

    def start_waiting(self) -> None:
        self.start_requested.clear()  # before taking, as for the poll loop's wake-ups
        with self.lock:
            while self.running < self.count and self.scheduler.queued:
                self.start(self.scheduler.next())

    def start(self, request: Request) -> None:
        self.running += 1
        self.started += 1
        task = self.loop.create_task(self.run(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, request: Request) -> None:
        reply = await handlers.call_async(self.handler, request.body)
        self.running -= 1
        self.done(request.route, reply)
        # Unlocked first, as flush() reads running: a request added after this read
        # finds running already lowered, and flush() starts it.
        if self.scheduler.queued:
            with self.lock:
                if self.scheduler.queued:
                    self.start(self.scheduler.next())

    def describe(self) -> str:
        return f"{self.count} tasks, {self.busy()} busy"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def abandon(self) -> None:
        def cancel_all() -> None:
            for task in self.tasks:
                task.cancel()
            self.loop.call_soon(self.loop.stop)  # after the cancellations have run

        self.loop.call_soon_threadsafe(cancel_all)
        self.thread.join(ABANDON_JOIN_SECONDS)


class Inline:
    """--workers 0: the handler runs in the poll loop's thread, one request at a time; an
    async one runs to completion on an event loop of that thread's own."""

    sockets: list[zmq.Socket] = []

    def __init__(self, handler: Handler) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.answer: Callable[[bytes], bytes] = functools.partial(handlers.call, handler)
        if handlers.is_async(handler):
            import asyncio

            loop = self.loop = asyncio.new_event_loop()
            self.answer = lambda body: loop.run_until_complete(handlers.call_async(handler, body))

    def submit(self, request: Request) -> list[Reply]:
        return [Reply(request.route, self.answer(request.body))]

    def flush(self) -> list[Reply]:
        return NO_REPLIES

    def collect(self, ready: dict) -> list[Reply]:
        return []

    def wait_ms(self, longest: int) -> int:
        return longest

    def waiting(self) -> int:
        return 0

    def describe(self) -> str:
        return "none (inline)"

    def unservable(self) -> list[Reply]:
        return []

    def stop(self) -> None:
        if self.loop:
            self.loop.close()

    def abandon(self) -> None:
        self.stop()
