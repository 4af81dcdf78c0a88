"""The scheduling rule, with no sockets and no threads: which waiting request runs next.

- Work-conserving: while a slot (a worker thread, an async task, a worker process) is
  free and any request waits, the request runs. A client alone can use every slot.
- Fair under contention: when a slot frees, the next request comes from the waiting
  clients in turn (round robin over clients, each client's requests in arrival order),
  so a client waits at most one turn of each other client, never a whole queue.
- Bounded: one client may have at most max_waiting requests waiting; add() refuses more.

The thread and async runners take jobs with next() as their workers free up (the slots
are their own); the MDP broker pairs jobs with workers through dispatch() (the slots are
the workers' addresses, least recently used first).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

Slot = TypeVar("Slot", bound=Hashable)
Job = TypeVar("Job")


class Scheduler(Generic[Slot, Job]):
    """Pairs waiting jobs with free slots. Call dispatch() after every add() and release()
    and start what it returns; then no slot is free while a job waits."""

    def __init__(self, slots: Iterable[Slot] = (), max_waiting: int = 64) -> None:
        self.max_waiting = max_waiting
        # Dicts keep insertion order: the free slots least recently used first, and the
        # clients with waiting jobs in the order of their turns.
        self.free: dict[Slot, None] = dict.fromkeys(slots)
        # Lists, not deques: a client rarely has many waiting (64 at most), and a deque
        # costs ten times a short list's memory, for every client of a burst.
        self.waiting: dict[Hashable, list[Job]] = {}
        self.queued = 0

    def add(self, client: Hashable, job: Job, first: bool = False) -> bool:
        """Queue a client's job; False if that client already has max_waiting waiting.

        first puts the job ahead of every other (a request re-run after its worker died),
        and is never refused.
        """
        if first:
            jobs = self.waiting.pop(client, [])
            jobs.insert(0, job)
            self.waiting = {client: jobs, **self.waiting}  # and the client's turn comes first
        elif (waiting := self.waiting.get(client)) is None:
            self.waiting[client] = [job]  # a newcomer's turn comes after the others'
        elif len(waiting) < self.max_waiting:
            waiting.append(job)
        else:
            return False
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
        return job

    def dispatch(self) -> list[tuple[Slot, Job]]:
        """Take jobs for free slots, client by client in turn: the (slot, job) to start."""
        started = []
        while self.free and self.waiting:  # next()'s steps, without a call per job
            slot = next(iter(self.free))
            del self.free[slot]
            client = next(iter(self.waiting))
            jobs = self.waiting.pop(client)
            started.append((slot, jobs.pop(0)))
            if jobs:
                self.waiting[client] = jobs  # to the back of the turns
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

    def drain(self) -> list[Job]:
        """Take every waiting job out, in turn order (at shutdown, with no slot to come)."""
        jobs = [job for client_jobs in self.waiting.values() for job in client_jobs]
        self.waiting.clear()
        self.queued = 0
        return jobs
