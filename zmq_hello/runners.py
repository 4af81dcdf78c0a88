"""Where server.py runs a handler in its own process, behind the interface every mode
shares (the MDP broker in broker.py is the fourth): worker threads, one asyncio event
loop for an `async def` handler, or inline in the poll loop (--workers 0).

The poll loop hands each request to submit(), and after each batch of them, and after
every wake-up, takes the requests that ended from collect(). Threads and tasks never
touch a socket: they put replies on a queue and wake the loop through a Waker. Each
runner owns its scheduler: a thread or a task that finishes takes the next request by
the fair rule itself, with no round trip through the poll loop, so the workers never
wait for the loop to hand out work.

A request with a deadline (zmq_hello.deadlines) is not started once its caller has given
up, nor, if it waited for a worker, once too little time is left for a handler to answer
(deadlines.Pace): it ends Expired. Its handler sees the deadline (time_remaining()).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from zmq_hello import deadlines, handlers
from zmq_hello.deadlines import NO_DEADLINE, PASSED, DeadlineSlot, Pace
from zmq_hello.envelope import Ending, Expired, Reply, Request, construct
from zmq_hello.handlers import Handler
from zmq_hello.majordomo import BUSY, TOO_MANY, refuse
from zmq_hello.scheduler import Limits, Scheduler

if TYPE_CHECKING:
    import asyncio

    import zmq


monotonic = deadlines.monotonic
NO_ENDINGS: list[Ending] = []  # shared, never appended to: most calls have none to give
ABANDON_JOIN_SECONDS = 1.0  # for the event loop to cancel its tasks when abandoning them


class Status(NamedTuple):
    """A runner's state for the summary line."""

    waiting: int  # requests taken and not yet started
    workers: str  # the workers now: '4 threads, 1 busy'


class Load(NamedTuple):
    """One service's requests and workers now, for metrics: read from the scraping thread,
    so made of counts that are each read in one step (and may be a moment apart)."""

    service: bytes
    waiting: int  # requests taken and not yet started
    idle: int  # workers with no request
    busy: int  # workers running a request: the requests running


class Runner(Protocol):
    """What the poll loop needs of a mode: requests in, endings out, a summary, a stop."""

    sockets: list[zmq.Socket]  # more sockets for the loop to poll (the broker's backend)

    def submit(self, request: Request) -> bytes | Ending | None:
        """Take a request; None if it ends later, in collect(); else how it ends at once:
        bytes, the body of its reply (inline), or an Ending (refused: its error, or
        nothing for an MDP client)."""
        ...

    def collect(self, ready: dict | None, stopping: bool = False) -> list[Ending]:
        """After a wake-up (ready: the poll's result) or a batch of submit() (ready:
        None): start what was taken; the requests that ended. stopping: the server is
        stopping, and a request no worker will ever run ends now."""
        ...

    def wait_ms(self, longest: int) -> int:
        """How long the poll may wait before the runner has something to do."""
        ...

    def serves(self, service: bytes) -> bool:
        """Whether a worker serves service now (mmi.service answers 200)."""
        ...

    def accepts(self, request: Request) -> bool:
        """Whether an MDP client's request may ever be served here: False, and it ends
        unanswered at once (MDP has no error reply)."""
        ...

    def status(self) -> Status: ...

    def loads(self) -> list[Load]:
        """Each service's load now. Called from another thread (metrics): reads only."""
        ...

    def stop(self, abandon: bool = False) -> None:
        """Once nothing is in flight: end the workers. abandon: the stop's grace is over
        with requests in flight: end what can be ended at once (worker processes are
        killed); threads still running are left to exit."""
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


class OneService:
    """What the in-process runners share: one handler, serving the server's one service
    (--service) to MDP clients as it serves plain ones."""

    service: bytes
    sockets: list[zmq.Socket] = []

    def serves(self, service: bytes) -> bool:
        return service == self.service

    def accepts(self, request: Request) -> bool:
        # A handler takes one frame; and no worker for another service will ever come.
        return request.service == self.service and not request.body_head


class Pool(OneService):
    """What threads and tasks share: a scheduler and a count of free workers behind one
    lock, and a queue of replies.

    A request submitted while a worker is free goes to a worker at once; only while all
    are busy does it wait in the scheduler (so only then does the per-client cap count
    it), and a worker that finishes takes the next waiting request itself. So a free
    worker means nothing waits, and nothing waits while a worker is free.
    """

    kind = "workers"  # for the summary line: threads, tasks

    def __init__(
        self, handler: Handler, count: int, limits: Limits, waker: Waker, service: bytes
    ) -> None:
        self.handler = handler
        self.service = service
        self.count = count
        self.waker = waker
        self.lock = threading.Lock()  # for scheduler and free: the loop adds, workers take
        # One queue: its own count bounds the whole backlog, with no Backlog to keep.
        self.max_backlog = limits.total
        self.scheduler: Scheduler[int, Request] = Scheduler((), limits.per_queue)
        self.free = count  # workers with no request
        self.finished: queue.SimpleQueue[Reply | Expired] = queue.SimpleQueue()
        self.pace = Pace()  # how long the handler takes, timed on requests with a deadline

    def submit(self, request: Request) -> Ending | None:
        if request.deadline == PASSED:  # it came with no time left: it would only take a place
            return Expired(request, self.service)
        with self.lock:
            if self.free:
                self.free -= 1
                self.hand_over(request)
                return None
            full = self.scheduler.queued >= self.max_backlog
            if not full and self.scheduler.add(request.route[0], request):
                return None
        return refuse(request, BUSY if full else TOO_MANY)

    def hand_over(self, request: Request) -> None:
        """Give request to a free worker (called under the lock)."""
        raise NotImplementedError

    def next_request(self) -> Request | None:
        """For a worker that finished: the next waiting request, or None (it is free)."""
        with self.lock:
            if self.scheduler.queued:
                return self.scheduler.next()
            self.free += 1
            return None

    def done(self, request: Request, body: bytes) -> None:
        # Reply(route, body, final, request), without a call.
        self.finished.put(construct(Reply, (request.route, body, True, request)))
        self.waker.wake()

    def starts(self, request: Request, waited: bool, now: float) -> bool:
        """Whether a request with a deadline is still worth its handler's time (see the
        module); if not, it ends Expired."""
        deadline = request.deadline
        worth = self.pace.worth_starting(deadline, now) if waited else deadline > now
        if worth:
            return True
        self.finished.put(Expired(request, self.service))
        self.waker.wake()
        return False

    def collect(self, ready: dict | None, stopping: bool = False) -> list[Ending]:
        finished = self.finished
        if finished.empty():
            return NO_ENDINGS
        endings: list[Ending] = []
        while not finished.empty():
            endings.append(finished.get())
        return endings

    def wait_ms(self, longest: int) -> int:
        return longest

    def status(self) -> Status:
        busy = self.count - self.free
        return Status(self.scheduler.queued, f"{self.count} {self.kind}, {busy} busy")

    def loads(self) -> list[Load]:
        free = self.free
        return [Load(self.service, self.scheduler.queued, free, self.count - free)]


class Threads(Pool):
    """count worker threads; each takes the next request by the fair rule when it frees."""

    kind = "threads"

    def __init__(
        self, handler: Handler, count: int, limits: Limits, waker: Waker, service: bytes
    ) -> None:
        super().__init__(handler, count, limits, waker, service)
        # Requests handed to free threads, and None per thread to stop.
        self.handed: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        # Started up front: creating threads on demand delays the first requests of a burst.
        # Daemons, so that a handler that never returns cannot keep an abandoning server up.
        self.threads = [
            threading.Thread(target=self.work, name=f"worker-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def hand_over(self, request: Request) -> None:
        self.handed.put(request)

    def work(self) -> None:
        # A slot of this thread's own, made here: a thread may start with a copy of its
        # creator's context (free-threaded Python does), which would share one.
        slot = DeadlineSlot()
        deadlines.current.set(slot)
        while (request := self.handed.get()) is not None:
            waited = False  # handed over at once; the next ones waited for this thread
            while request is not None:
                if request.deadline == NO_DEADLINE:
                    self.done(request, handlers.call(self.handler, request.body))
                else:
                    self.run_with_deadline(request, waited, slot)
                request = self.next_request()
                waited = True

    def run_with_deadline(self, request: Request, waited: bool, slot: DeadlineSlot) -> None:
        """Run a request with a deadline, if it is still worth it, its deadline in slot
        for the handler's time_remaining(); timed, for the pace."""
        started = monotonic()
        if not self.starts(request, waited, started):
            return
        slot.deadline = request.deadline
        try:
            body = handlers.call(self.handler, request.body)
        finally:
            slot.deadline = NO_DEADLINE
        self.pace.timed(monotonic() - started)
        self.done(request, body)

    def stop(self, abandon: bool = False) -> None:
        """Let each thread finish its request, and join them all; abandoning, leave them:
        a thread inside a handler cannot be stopped, and as a daemon it ends with us."""
        if abandon:
            return
        for _ in self.threads:
            self.handed.put(None)
        for thread in self.threads:
            thread.join()


class Tasks(Pool):
    """An `async def` handler: up to count tasks at once on one event loop in one thread."""

    kind = "tasks"

    def __init__(
        self, handler: Handler, count: int, limits: Limits, waker: Waker, service: bytes
    ) -> None:
        super().__init__(handler, count, limits, waker, service)
        import asyncio  # only here: a server with a plain handler need not carry it

        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self.handed: deque[Request] = deque()  # handed over, for the loop's thread to start
        self.thread = threading.Thread(target=self.loop.run_forever, name="event-loop", daemon=True)
        self.thread.start()

    def hand_over(self, request: Request) -> None:
        self.handed.append(request)

    def collect(self, ready: dict | None, stopping: bool = False) -> list[Ending]:
        if self.handed:  # one hand-over to the loop's thread serves the whole batch
            self.loop.call_soon_threadsafe(self.start_all)
        return super().collect(ready, stopping)

    def start_all(self) -> None:
        while self.handed:
            self.start(self.handed.popleft())

    def start(self, request: Request, waited: bool = False) -> None:
        task = self.loop.create_task(self.run(request, waited))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, request: Request, waited: bool) -> None:
        if request.deadline == NO_DEADLINE:
            self.done(request, await handlers.call_async(self.handler, request.body))
        else:
            await self.run_with_deadline(request, waited)
        if (waiting := self.next_request()) is not None:
            self.start(waiting, waited=True)

    async def run_with_deadline(self, request: Request, waited: bool) -> None:
        """As Threads.run_with_deadline, in a task."""
        started = monotonic()
        if not self.starts(request, waited, started):
            return
        # A DeadlineSlot of its own: a task shares its creator's (run() starts the next task).
        slot = deadlines.DeadlineSlot(request.deadline)
        deadlines.current.set(slot)
        try:
            body = await handlers.call_async(self.handler, request.body)
        finally:
            slot.deadline = NO_DEADLINE  # the task this one starts next has its context
        self.pace.timed(monotonic() - started)
        self.done(request, body)

    def stop(self, abandon: bool = False) -> None:
        if abandon:

            def cancel_all() -> None:
                for task in self.tasks:
                    task.cancel()
                self.loop.call_soon(self.loop.stop)  # after the cancellations have run

            self.loop.call_soon_threadsafe(cancel_all)
            self.thread.join(ABANDON_JOIN_SECONDS)
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Inline(OneService):
    """--workers 0: the handler runs in the poll loop's thread, one request at a time; an
    async one runs to completion on an event loop of that thread's own."""

    def __init__(self, handler: Handler, service: bytes) -> None:
        """Made in the thread of the poll loop, which runs the handler."""
        self.service = service
        self.slot = deadlines.this_slot()  # that thread's: a deadline for time_remaining()
        self.busy = 0  # 1 while the handler runs: for metrics, read from another thread
        self.loop: asyncio.AbstractEventLoop | None = None
        # A lambda, not functools.partial: Python calling Python stays in one eval loop,
        # while a call through partial (C) costs a frame of its own on every request.
        self.answer: Callable[[bytes], bytes] = lambda body: handlers.call(handler, body)
        if handlers.is_async(handler):
            import asyncio

            loop = self.loop = asyncio.new_event_loop()
            self.answer = lambda body: loop.run_until_complete(handlers.call_async(handler, body))

    def submit(self, request: Request) -> bytes | Ending:
        # The body alone: no Reply to build, inline, where this is the whole request.
        # Set for every request (NO_DEADLINE, if it has none), never cleared: between two
        # requests only the poll loop runs in this thread, and it never reads it.
        deadline = self.slot.deadline = request.deadline
        # Read just now, so it waited for nothing: only one that came with no time has passed.
        if deadline == PASSED:
            return Expired(request, self.service)
        self.busy = 1
        body = self.answer(request.body)
        self.busy = 0
        return body

    def collect(self, ready: dict | None, stopping: bool = False) -> list[Ending]:
        return NO_ENDINGS

    def wait_ms(self, longest: int) -> int:
        return longest

    def status(self) -> Status:
        return Status(0, "none (inline)")

    def loads(self) -> list[Load]:
        busy = self.busy  # the poll loop's thread is the one worker
        return [Load(self.service, 0, 1 - busy, busy)]

    def stop(self, abandon: bool = False) -> None:
        if self.loop:
            self.loop.close()
