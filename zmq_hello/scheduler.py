"""The scheduling rule, with no sockets and no threads: which waiting request runs next.

- Work-conserving: while a slot (a worker thread, an async task, a worker process) is
  free and any request waits, the request runs. A client alone can use every slot.
- Fair under contention: when a slot frees, the next request comes from the waiting
  clients in turn (round robin over clients, each client's requests in arrival order),
  so a client waits at most one turn of each other client, never a whole queue.
- Bounded: one client may have at most max_waiting requests waiting; add() refuses more.
  Schedulers that share a Backlog (the broker's, one a service) are bounded together:
  so many jobs waiting in all of them, and so many of one client's, whatever the number
  of queues it spreads them over. A job that a free slot will take at once is never
  refused: a service with an idle worker is served whatever waits elsewhere.

The thread and async runners take jobs with next() as their workers free up (the slots
are their own); the MDP broker pairs jobs with workers through dispatch() (the slots are
the workers' addresses, least recently used first).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

Slot = TypeVar("Slot", bound=Hashable)
Job = TypeVar("Job")


@dataclass(frozen=True)
class Limits:
    """How many jobs may wait: one client's in one queue, one client's in all the queues
    of a Backlog, and everyone's in all of them."""

    per_queue: int = 64
    per_client: int = 256
    total: int = 10_000


class Backlog:
    """The count of waiting jobs that several schedulers share, in all and by client."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.by_client: dict[Hashable, int] = {}

    @property
    def full(self) -> bool:
        return self.total >= self.limits.total

    def take(self, client: Hashable, force: bool = False) -> bool:
        """Count one more job of client's; False (nothing counted) past a limit, unless
        force."""
        held = self.by_client.get(client, 0)
        if not force and (held >= self.limits.per_client or self.total >= self.limits.total):
            return False
        self.by_client[client] = held + 1
        self.total += 1
        return True

    def give_back(self, client: Hashable, count: int = 1) -> None:
        """count of client's jobs no longer wait (started, withdrawn, drained)."""
        held = self.by_client[client] - count
        if held:
            self.by_client[client] = held
        else:  # a client with nothing waiting costs no memory
            del self.by_client[client]
        self.total -= count


class Scheduler(Generic[Slot, Job]):
    """Pairs waiting jobs with free slots. Call dispatch() after every add() and release()
    and start what it returns; then no slot is free while a job waits."""

    def __init__(
        self, slots: Iterable[Slot] = (), max_waiting: int = 64, backlog: Backlog | None = None
    ) -> None:
        self.max_waiting = max_waiting
        self.backlog = backlog
        # Dicts keep insertion order: the free slots least recently used first, and the
        # clients with waiting jobs in the order of their turns.
        self.free: dict[Slot, None] = dict.fromkeys(slots)
        # Lists, not deques: a client rarely has many waiting (64 at most), and a deque
        # costs ten times a short list's memory, for every client of a burst.
        self.waiting: dict[Hashable, list[Job]] = {}
        self.queued = 0

    def add(self, client: Hashable, job: Job, first: bool = False) -> bool:
        """Queue a client's job; False if that client already has max_waiting waiting, or
        the shared backlog is full for it, unless a free slot will take the job at once.

        first puts the job ahead of every other (a request re-run after its worker died),
        and is never refused.
        """
        waiting = self.waiting.get(client)
        starts_now = len(self.free) > self.queued
        if not (first or starts_now) and waiting is not None and len(waiting) >= self.max_waiting:
            return False
        backlog = self.backlog
        if backlog is not None and not backlog.take(client, first or starts_now):
            return False
        if first:
            jobs = self.waiting.pop(client, [])
            jobs.insert(0, job)
            self.waiting = {client: jobs, **self.waiting}  # and the client's turn comes first
        elif waiting is None:
            self.waiting[client] = [job]  # a newcomer's turn comes after the others'
        else:
            waiting.append(job)
        self.queued += 1
        return True

    def next(self) -> Job:
        """Take the next job in turn order (one must be waiting: check queued)."""
        client = next(iter(self.waiting))
        jobs = self.waiting.pop(client)
        job = jobs.pop(0)
        if jobs:
            self.waiting[client] = jobs  # to the back of the turns
        self.queued -= 1
        if self.backlog is not None:
            self.backlog.give_back(client)
        return job

    def dispatch(self) -> list[tuple[Slot, Job]]:
        """Take jobs for free slots, client by client in turn: the (slot, job) to start."""
        started = []
        backlog = self.backlog
        while self.free and self.waiting:  # next()'s steps, without a call per job
            slot = next(iter(self.free))
            del self.free[slot]
            client = next(iter(self.waiting))
            jobs = self.waiting.pop(client)
            started.append((slot, jobs.pop(0)))
            if jobs:
                self.waiting[client] = jobs  # to the back of the turns
            if backlog is not None:
                backlog.give_back(client)
        self.queued -= len(started)
        return started

    def release(self, slot: Slot) -> None:
        """A slot is free again: it becomes the most recently used free slot."""
        self.free.pop(slot, None)
        self.free[slot] = None

    def remove(self, slot: Slot) -> None:
        """A slot is gone (a worker died); if it was free, it is no longer offered."""
        self.free.pop(slot, None)

    def withdraw(self, client: Hashable, job: Job) -> None:
        """Take one waiting job out (a request expiring), wherever it is in its turn."""
        jobs = self.waiting[client]
        for index, waiting in enumerate(jobs):
            if waiting is job:
                del jobs[index]
                break
        else:
            raise ValueError("that job is not waiting")
        if not jobs:
            del self.waiting[client]
        self.queued -= 1
        if self.backlog is not None:
            self.backlog.give_back(client)

    def drain(self) -> list[Job]:
        """Take every waiting job out, in turn order (at shutdown, with no slot to come)."""
        jobs = [job for client_jobs in self.waiting.values() for job in client_jobs]
        if self.backlog is not None:
            for client, client_jobs in self.waiting.items():
                self.backlog.give_back(client, len(client_jobs))
        self.waiting.clear()
        self.queued = 0
        return jobs
