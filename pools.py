"""Where server.py runs a handler in its own process: worker threads, or one asyncio
event loop for an `async def` handler, or inline in the poll loop (--workers 0).

Threads and tasks take jobs (slot, (route, body)) in batches from the poll loop and
hand each reply back through done(slot, route, reply); they never touch a socket.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable

import handlers
from handlers import Handler

# A request handed to the workers: (slot, (route, body)); its reply comes back as
# done(slot, route, reply). Workers take jobs in lists: one hand-over serves a batch.
Job = tuple[int, tuple[list[bytes], bytes]]
Done = Callable[[int, list[bytes], bytes], None]
Workers = tuple[Callable[[list[Job]], None], Callable[[], None]]  # (submit jobs, stop)


def start_threads(handler: Handler, count: int, done: Done) -> Workers:
    """count worker threads on one shared queue, so an idle one always takes the next job.
    Returns (submit, stop): stop() lets each thread finish its job and joins them all."""
    jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    def work() -> None:
        while (job := jobs.get()) is not None:
            slot, (route, body) = job
            done(slot, route, handlers.call(handler, body))

    # Started up front: creating threads on demand delays the first requests of a burst.
    threads = [threading.Thread(target=work, name=f"worker-{n}") for n in range(count)]
    for thread in threads:
        thread.start()

    def stop() -> None:
        for _ in threads:
            jobs.put(None)  # one stop mark per thread; any thread may take any mark
        for thread in threads:
            thread.join()

    def submit(started: list[Job]) -> None:
        for job in started:
            jobs.put(job)

    return submit, stop


def start_event_loop(handler: Handler, done: Done) -> Workers:
    """One asyncio event loop in one thread; each job becomes a task there, no thread each.
    Returns (submit, stop), as start_threads() does."""
    import asyncio  # only here: a plain server need not carry it

    loop = asyncio.new_event_loop()
    tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to its tasks
    incoming: deque[Job] = deque()
    start_requested = threading.Event()

    async def run(slot: int, route: list[bytes], body: bytes) -> None:
        done(slot, route, await handlers.call_async(handler, body))

    def start_incoming() -> None:
        start_requested.clear()  # before draining, as for the poll loop's wake-ups
        while incoming:
            slot, (route, body) = incoming.popleft()
            task = loop.create_task(run(slot, route, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def submit(started: list[Job]) -> None:
        incoming.extend(started)
        # One hand-over to the loop's thread serves every job queued before it runs.
        if not start_requested.is_set():
            start_requested.set()
            loop.call_soon_threadsafe(start_incoming)

    thread = threading.Thread(target=loop.run_forever, name="event-loop")
    thread.start()

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    return submit, stop


def inline(handler: Handler) -> Callable[[bytes], bytes]:
    """--workers 0: the handler runs in the poll loop's thread, one request at a time; an
    async one runs to completion on an event loop of that thread's own."""
    if not handlers.is_async(handler):
        return lambda body: handlers.call(handler, body)
    import asyncio

    loop = asyncio.new_event_loop()
    return lambda body: loop.run_until_complete(handlers.call_async(handler, body))
