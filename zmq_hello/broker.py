"""server.py's Majordomo (MDP) broker as a Runner: the I/O around the broker core.

The core (majordomo.Majordomo) holds every MDP rule and no I/O. This adapter feeds it
the time and what the backend ROUTER receives, sends what it decides, logs its
incidents, and passes its news about workers to the Supervisor of local worker
processes (--processes), whose exits it feeds back in turn. Only server.py's poll loop
calls into it, so only that thread touches the backend socket.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import zmq

from zmq_hello import wire
from zmq_hello.envelope import Ending, Request
from zmq_hello.incidents import Incidents
from zmq_hello.majordomo import MAX_FRAMES, Majordomo
from zmq_hello.runners import NO_ENDINGS, Load, Status

if TYPE_CHECKING:
    from zmq_hello.supervisor import Supervisor

monotonic = time.monotonic


class Broker:
    """The Runner for MDP workers: any number of services, each with its own queue and its
    own idle workers; requests for a service nobody serves wait, then expire."""

    def __init__(
        self,
        backend: zmq.Socket,
        core: Majordomo,
        incidents: Incidents,
        supervisor: Supervisor | None = None,
    ) -> None:
        """backend is bound already; supervisor, if any, started."""
        self.backend = backend
        self.sockets = [backend]
        self.core = core
        self.serves = core.serves
        self.incidents = incidents
        self.supervisor = supervisor
        # The time of the latest wake-up: requests read in its batch are taken at it.
        self.now = monotonic()

    def submit(self, request: Request) -> Ending | None:
        return self.core.submit(self.now, request)

    def accepts(self, request: Request) -> bool:
        return True  # a service nobody serves yet may have a worker soon: it waits

    def collect(self, ready: dict | None, stopping: bool = False) -> list[Ending]:
        core = self.core
        if ready is not None:  # a wake-up; None: right after a batch of requests
            now = self.now = monotonic()
            if self.backend in ready:
                self.read(now)
            if self.supervisor is not None:
                for address, how in self.supervisor.tend(now):
                    core.exited(now, address, how)
            core.tick(now)
        if stopping:
            supervisor = self.supervisor
            core.shut(supervisor is not None and supervisor.may_serve())
        return self.carry_out(self.now)

    def read(self, now: float) -> None:
        """Hand the core what the workers sent, up to a batch."""
        backend, handle = self.backend, self.core.worker_message
        for _ in range(wire.READ_BATCH):
            frames, count = wire.receive(backend, MAX_FRAMES)
            handle(now, frames, count)
            if not wire.readable(backend):
                return

    def carry_out(self, now: float) -> list[Ending]:
        """Do what the core decided: requests started, sends, logs, the supervisor told;
        the requests that ended, for the loop to answer."""
        core = self.core
        # Heartbeats go first, so that a worker found gone by one gets no request; a
        # request whose worker is found gone goes to another at the next flush().
        while True:
            if core.to_workers:
                sends, core.to_workers = core.to_workers, []
                for frames in sends:
                    try:
                        wire.send(self.backend, frames)
                    except zmq.ZMQError:  # never blocks: a peer gone, or its queue full
                        core.unreachable(now, frames)
            core.flush(now)
            if not core.to_workers:
                break
        if core.incidents:
            for incident in core.incidents:
                self.incidents.record(incident)
            core.incidents.clear()
        if core.news:
            if self.supervisor is not None:
                for news in core.news:
                    self.supervisor.hear(now, news)
            core.news.clear()
        if not core.endings:  # the common case, checked on every turn of the poll loop
            return NO_ENDINGS
        endings, core.endings = core.endings, []
        return endings

    def wait_ms(self, longest: int) -> int:
        due = self.core.next_tick
        if self.supervisor is not None:
            due = min(due, self.supervisor.next_due)
        return max(0, min(longest, round((due - monotonic()) * 1000)))

    def status(self) -> Status:
        return Status(self.core.waiting(), self.core.describe())

    def loads(self) -> list[Load]:
        # A copy first (one step): the poll loop may add or forget a service meanwhile.
        loads = []
        for service in self.core.services.copy().values():
            idle = len(service.scheduler.free)
            busy = max(0, service.workers - idle)  # a worker registering is counted first
            loads.append(Load(service.name, service.scheduler.queued, idle, busy))
        return loads

    def stop(self, abandon: bool = False) -> None:
        """DISCONNECT to every worker; local ones ended (killed, if abandoning)."""
        self.core.stop()
        for frames in self.core.to_workers:
            # A worker gone already needs no goodbye.
            with contextlib.suppress(zmq.ZMQError):
                wire.send(self.backend, frames)
        self.core.to_workers.clear()
        if self.supervisor is not None:
            if abandon:
                self.supervisor.kill()
            else:
                self.supervisor.stop()
