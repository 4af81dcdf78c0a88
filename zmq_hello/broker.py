"""server.py's Majordomo (MDP) broker: requests to worker processes behind the backend.

Workers (worker.py, majortomo's, the guide's) connect to the backend ROUTER and register
for a service with READY; any name but the mmi. ones (RFC 8: the broker's own). Each
service has its own scheduler: its waiting requests, round robin over their clients,
and its idle workers, least recently used first. A request goes to an idle worker of
its service at once, whatever waits for others; the worker answers with FINAL (or
PARTIALs, then FINAL). Plain clients' requests go to the server's --service; MDP
clients name theirs. A request for a service with no worker waits --no-worker-timeout
for one to register, then expires (a request waiting for a busy worker never does).
Only server.py's poll loop calls into the Broker, so only that thread touches the
backend socket.

Liveness. An idle worker is dead after LIVENESS heartbeat intervals without a word from
it. A busy one may be silent (MDP workers send heartbeats only while they wait), so
libzmq's own connection heartbeats (HEARTBEAT_IVL on the backend, answered by the peer's
I/O thread whatever its Python code does) drop a frozen or vanished peer, and the next
heartbeat sent to it fails: that is how the loop learns. A worker that dies holding a
request: the request runs once more, ahead of the queue; if that worker dies on it too,
the client gets ERROR: worker failed, so a request that kills workers cannot take the
whole fleet down.

Local workers (--processes) are the Supervisor's; the broker tells it what it learns.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from logging import INFO

import zmq

from zmq_hello import mdp, wire
from zmq_hello.envelope import Reply, Request, construct, error_reply, printable
from zmq_hello.incidents import KIND_BURST, Incidents
from zmq_hello.runners import NO_REPLIES, refusal
from zmq_hello.scheduler import Backlog, Limits, Scheduler
from zmq_hello.supervisor import Supervisor

LIVENESS = 3  # heartbeat intervals of silence after which an idle worker is dead
READ_BATCH = 32  # backend messages read per wake-up at most
MAX_FRAMES = 32  # frames kept of a worker's message: MDP needs 7, more is hostile
SERVICES_SHOWN = 10  # in the summary line, the busiest first
MAX_NAME_SHOWN = 100  # characters of a worker's address or a service's name in a log line


@dataclass(eq=False)  # by identity: a service is a key of the broker's dicts
class Service:
    """One service: its own fair queue of waiting requests and its own idle workers."""

    name: bytes
    scheduler: Scheduler[bytes, Request]  # free: its idle workers, least recently used first
    workers: int = 0  # registered for it
    # While no worker is registered: when each waiting request expires, oldest first.
    expiring: deque[tuple[float, Request]] = field(default_factory=deque)

    def __str__(self) -> str:
        return f"'{named(self.name)}'"


@dataclass
class Worker:
    """A registered MDP worker, by the routing id it connected with."""

    framing: mdp.Framing
    expires: float  # dead after this, if idle and silent
    service: Service
    request_head: list[bytes] = field(default_factory=list)  # a REQUEST's first frames
    final_head: list[bytes] = field(default_factory=list)  # and a FINAL's, as it sends them
    key: bytes = b""  # the request it holds, by the address frame it was sent with
    request: Request | None = None
    untried: bool = False  # a local worker that has yet to answer: its supervisor asks


def named(address: bytes) -> str:
    """A worker's address or a service's name for the log: they may be binary, or hold a
    newline that would forge a log line of its own, so each is escaped."""
    return printable(address, MAX_NAME_SHOWN)


class Broker:
    """The Runner for MDP workers: any number of services, each with its own queue and its
    own idle workers; requests for a service nobody serves wait, then expire."""

    def __init__(
        self,
        backend: zmq.Socket,
        service: bytes,
        heartbeat: float,
        limits: Limits,
        no_worker_timeout: float,
        incidents: Incidents,
        supervisor: Supervisor | None = None,
    ) -> None:
        """backend is bound already; plain clients' requests go to service; problems and
        churn go to incidents, a line a flood."""
        self.backend = backend
        self.sockets = [backend]
        self.default = service
        self.heartbeat = heartbeat
        # One backlog for all services: made-up service names do not multiply a client's share.
        self.backlog = Backlog(limits)
        self.no_worker_timeout = no_worker_timeout
        self.incidents = incidents
        self.supervisor = supervisor
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        # Services that may have an idle worker and a waiting request, for flush().
        self.pending: dict[Service, None] = {}
        self.orphaned: dict[Service, None] = {}  # with requests waiting for any worker
        self.expired = 0
        self.keys = itertools.count()
        self.replies: list[Reply] = []  # gathered while reading, for collect()
        self.next_heartbeat = 0.0
        self.next_tick = 0.0  # the next heartbeat, restart or expiry, whichever is sooner
        self.open(service)
        if supervisor:
            supervisor.start()

    # The Runner interface.

    def submit(self, request: Request) -> bytes | None:
        name = request.service or self.default
        service = self.services.get(name) or self.open(name)
        if not service.scheduler.add(request.route[0], request):
            self.close_if_unused(service)
            return refusal(self.backlog.full)
        if service.scheduler.free:
            self.pending[service] = None
        elif not service.workers:
            self.expire_later(service, request)
        return None

    def flush(self) -> list[Reply]:
        # A loop: a worker found gone as a request is sent to it puts that request back.
        while self.pending:
            pending, self.pending = self.pending, {}
            for service in pending:
                scheduler = service.scheduler
                while scheduler.free and scheduler.queued:
                    for address, request in scheduler.dispatch():
                        self.start(address, request)
        if not self.replies:  # the common case, checked on every turn of the poll loop
            return NO_REPLIES
        replies, self.replies = self.replies, []
        return replies

    def collect(self, ready: dict) -> list[Reply]:
        if self.backend in ready:
            self.read()
        self.tick()
        return self.flush()  # workers just freed take waiting requests before more are read

    def wait_ms(self, longest: int) -> int:
        return max(0, min(longest, round((self.next_tick - time.monotonic()) * 1000)))

    def serves(self, service: bytes) -> bool:
        found = self.services.get(service)
        return found is not None and found.workers > 0

    def accepts(self, request: Request) -> bool:
        return True  # a service nobody serves yet may have a worker soon: it waits

    def waiting(self) -> int:
        return self.backlog.total

    def describe(self) -> str:
        busy = Counter(worker.service.name for worker in self.workers.values() if worker.request)

        def load(service: Service) -> tuple[int, int]:
            return (busy[service.name] + service.scheduler.queued, service.workers)

        # The busiest services only: the line stays short whatever names clients make up.
        shown = heapq.nlargest(SERVICES_SHOWN, self.services.values(), key=load)
        services = " / ".join(
            f"{service} {service.workers} connected, {busy[service.name]} busy, "
            f"{service.scheduler.queued} waiting"
            for service in shown
        )
        if len(self.services) > len(shown):
            services += f" / {len(self.services) - len(shown)} more services"
        return (
            f"{len(self.workers)} connected, {sum(busy.values())} busy; by service: "
            f"{services}; {self.expired} requests expired with no worker"
        )

    def unservable(self) -> list[Reply]:
        replies = []
        for service in list(self.services.values()):
            if service.scheduler.queued and not self.may_serve(service):
                # Shutting down with no worker left to run them: waiting would be forever.
                service.expiring.clear()
                self.orphaned.pop(service, None)
                replies += [
                    error_reply(request, "no worker available")
                    for request in service.scheduler.drain()
                ]
        return replies

    def stop(self) -> None:
        """At shutdown, once nothing is in flight: DISCONNECT to all, local ones ended."""
        for address, worker in self.workers.items():
            self.send(address, mdp.build(worker.framing, mdp.DISCONNECT))
        if self.supervisor:
            self.supervisor.stop()

    def abandon(self) -> None:
        for address, worker in self.workers.items():
            self.send(address, mdp.build(worker.framing, mdp.DISCONNECT))
        if self.supervisor:
            self.supervisor.kill()

    def may_serve(self, service: Service) -> bool:
        """Whether a worker is registered for service, or a local one may yet be."""
        if service.workers:
            return True
        supervisor = self.supervisor  # local workers serve the default service only
        return bool(supervisor and service.name == self.default and supervisor.may_serve())

    # Services, and requests that nobody serves.

    def open(self, name: bytes) -> Service:
        service = self.services[name] = Service(
            name, Scheduler((), self.backlog.limits.per_queue, self.backlog)
        )
        return service

    def close_if_unused(self, service: Service) -> None:
        """A service with no worker and no request is forgotten: names cost nothing."""
        if not (service.workers or service.scheduler.queued or service.name == self.default):
            self.services.pop(service.name, None)

    def expire_later(self, service: Service, request: Request) -> None:
        deadline = time.monotonic() + self.no_worker_timeout
        service.expiring.append((deadline, request))
        if service not in self.orphaned:
            self.orphaned[service] = None
            self.next_tick = min(self.next_tick, deadline)

    def orphan(self, service: Service) -> None:
        """Its last worker is gone: what waits for it starts waiting for a new one."""
        deadline = time.monotonic() + self.no_worker_timeout
        waiting = service.scheduler.waiting.values()
        service.expiring = deque((deadline, request) for jobs in waiting for request in jobs)
        if service.expiring:
            self.orphaned[service] = None
            self.next_tick = min(self.next_tick, deadline)
        else:
            self.close_if_unused(service)

    def expire(self, now: float) -> None:
        """Requests that waited --no-worker-timeout for a worker that never came."""
        for service in list(self.orphaned):
            expiring = service.expiring
            while expiring and expiring[0][0] <= now:
                _, request = expiring.popleft()
                service.scheduler.withdraw(request.client, request)
                self.replies.append(error_reply(request, "no worker for this service"))
                self.expired += 1
                self.incidents.add(
                    "requests expired",
                    f"requests for service {service} expired: no worker registered within "
                    f"{self.no_worker_timeout:g} s (--no-worker-timeout)",
                )
            if not expiring:
                del self.orphaned[service]
                self.close_if_unused(service)

    # Requests out, replies back.

    def start(self, address: bytes, request: Request) -> None:
        worker = self.workers[address]
        worker.key = next(self.keys).to_bytes(8, "big")
        worker.request = request
        try:
            wire.send(
                self.backend,
                [address, *worker.request_head, worker.key, b"", *request.body_head, request.body],
            )
        except zmq.ZMQError:
            self.forget(address, "is gone")

    def read(self) -> None:
        """Handle what the workers sent, up to a batch."""
        for _ in range(READ_BATCH):
            frames, count = wire.receive(self.backend, MAX_FRAMES)
            if count <= MAX_FRAMES:
                self.handle(frames[0], frames[1:])
            else:
                self.refuse(frames[0], f"{count} frames, more than MDP has")
            if not wire.readable(self.backend):
                return

    def handle(self, address: bytes, frames: list[bytes]) -> None:
        worker = self.workers.get(address)
        # The common message, the FINAL of the request held, in one frame; parse() and the
        # checks below have the rest.
        if worker and worker.request and (reply := mdp.carried(frames, worker.final_head)):
            key, parts = reply
            if key == worker.key and len(parts) == 1:
                worker.expires = time.monotonic() + LIVENESS * self.heartbeat
                self.replies.append(construct(Reply, (worker.request.route, parts[0], True)))
                self.finished(address, worker)
                return
        try:
            message = mdp.parse(frames)
        except mdp.ProtocolError as exc:
            self.refuse(address, str(exc))
            return
        command = message.command
        if worker is None:
            if command == mdp.READY:
                self.register(address, message)
            elif command != mdp.DISCONNECT:
                # Declared dead a moment ago, or registered with the server before a restart.
                self.incidents.add(
                    "messages from workers not registered",
                    f"{command} from worker {named(address)}, which is not registered",
                )
                self.send(address, mdp.build(message.framing, mdp.DISCONNECT))
            return
        worker.expires = time.monotonic() + LIVENESS * self.heartbeat
        if command == mdp.HEARTBEAT:
            return
        request = worker.request
        if command in (mdp.FINAL, mdp.PARTIAL) and request and message.address == worker.key:
            final = command == mdp.FINAL
            route: list[bytes] | None = request.route
            if not final and request.dialect:
                route = request.dialect.partial_route(request)  # None: MDP/0.1 has no PARTIAL
            if route is not None:
                # A reply of several frames keeps them: all but the last travel as envelope.
                *envelope, body = message.body
                route = route + envelope if envelope else route
                self.replies.append(construct(Reply, (route, body, final)))
            if final:
                self.finished(address, worker)
        elif command == mdp.DISCONNECT:
            # A worker that leaves says so between requests (worker.py's --max-requests
            # sends it right after its last reply): one sent a request meanwhile never ran
            # it, so it runs elsewhere with no mark against it.
            self.forget(address, "disconnected", died=False)
        else:  # READY again, a REQUEST, a reply for a request it does not hold
            held = " for a request it does not hold" if command in (mdp.FINAL, mdp.PARTIAL) else ""
            self.incidents.add(
                "unexpected worker commands",
                f"unexpected {command} from worker {named(address)}{held}",
            )
            self.disconnect(address, f"sent an unexpected {command}")

    def finished(self, address: bytes, worker: Worker) -> None:
        """A worker's FINAL came: it is free, and its service's queue may go on."""
        worker.request = None
        worker.key = b""
        service = worker.service
        service.scheduler.release(address)
        if service.scheduler.queued:
            self.pending[service] = None
        if worker.untried and self.supervisor:
            worker.untried = False
            self.supervisor.served(address)

    def refuse(self, address: bytes, why: str) -> None:
        """A message that is not MDP: logged, and its sender, if a worker, disconnected."""
        self.incidents.add(
            "bad worker messages", f"a bad message from worker {named(address)}: {why}"
        )
        if address in self.workers:
            self.disconnect(address, "sent a bad message")

    def register(self, address: bytes, message: mdp.Message) -> None:
        name = named(address)
        if message.address.startswith(mdp.MMI_PREFIX):
            self.incidents.add(
                "workers registering for mmi. services",
                f"worker {name} registered for '{named(message.address)}': mmi. services "
                "are the broker's own (RFC 8); sent DISCONNECT",
            )
            self.send(address, mdp.build(message.framing, mdp.DISCONNECT))
            return
        service = self.services.get(message.address) or self.open(message.address)
        expires = time.monotonic() + LIVENESS * self.heartbeat
        request_head = mdp.head(message.framing, mdp.REQUEST)
        final_head = mdp.head(message.framing, mdp.FINAL)
        worker = Worker(message.framing, expires, service, request_head, final_head)
        self.workers[address] = worker
        service.workers += 1
        service.scheduler.release(address)
        if service.expiring:  # what waited for a worker has one
            service.expiring.clear()
            self.orphaned.pop(service, None)
        if service.scheduler.queued:
            self.pending[service] = None
        if self.supervisor:
            worker.untried = self.supervisor.registered(address)
        self.incidents.add(
            "workers registering",
            f"worker {name} ready for {service} ({message.framing})",
            INFO,
            KIND_BURST,
        )

    def send(self, address: bytes, frames: list[bytes]) -> bool:
        """Send without ever blocking the loop; False if the worker cannot be reached."""
        try:
            wire.send(self.backend, [address, *frames])
        except zmq.ZMQError:
            return False
        return True

    # Deaths and re-runs.

    def disconnect(self, address: bytes, why: str) -> None:
        """Tell a worker that broke the protocol to go (it may register again)."""
        self.send(address, mdp.build(self.workers[address].framing, mdp.DISCONNECT))
        self.forget(address, why)

    def forget(self, address: bytes, why: str, died: bool = True) -> None:
        """A worker is gone: its request runs once more elsewhere, or fails."""
        worker = self.workers.pop(address)
        service = worker.service
        service.scheduler.remove(address)
        service.workers -= 1
        name = named(address)
        request = worker.request
        if request is None:
            self.incidents.add("workers leaving", f"worker {name} {why}", burst=KIND_BURST)
        elif not died:
            self.incidents.add(
                "workers leaving",
                f"worker {name} {why} before it ran a request: running it elsewhere",
                INFO,
                KIND_BURST,
            )
            service.scheduler.add(request.client, request, first=True)
        elif not request.worker_died:
            self.incidents.add(
                "workers gone holding a request",
                f"worker {name} {why} holding a request: running it once more",
                burst=KIND_BURST,
            )
            service.scheduler.add(request.client, request._replace(worker_died=True), first=True)
        else:
            self.incidents.add(
                "workers gone holding a request",
                f"worker {name} {why} holding a request that a worker died on before",
                burst=KIND_BURST,
            )
            self.replies.append(error_reply(request, "worker failed"))
        if service.scheduler.free and service.scheduler.queued:
            self.pending[service] = None
        elif not service.workers:
            self.orphan(service)
        if self.supervisor:
            if died:
                self.supervisor.hung(address)  # a silent local worker is hung: end it
            else:  # it said it is leaving: it exits by itself
                self.supervisor.retiring(address)

    def tick(self) -> None:
        """Once a heartbeat interval: heartbeats to every worker, and the dead found.

        Busy workers get them too: they are harmless to an MDP worker, and a send to a
        peer that libzmq dropped fails, which tells a dead busy worker from a slow one.
        """
        if self.supervisor and self.supervisor.child_exited:
            self.reap()
        now = time.monotonic()
        if now < self.next_tick:  # the common case, on every turn of the poll loop
            return
        if self.orphaned:
            self.expire(now)
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat
            for address, worker in list(self.workers.items()):
                if worker.request is None and now > worker.expires:
                    self.forget(address, f"was silent for {LIVENESS} heartbeats")
                elif not self.send(address, mdp.build(worker.framing, mdp.HEARTBEAT)):
                    self.forget(address, "is gone")
            self.reap()  # in case a SIGCHLD came before the loop could see it
        restart = self.supervisor.restart() if self.supervisor else None
        expiries = [service.expiring[0][0] for service in self.orphaned]
        self.next_tick = min(self.next_heartbeat, restart or self.next_heartbeat, *expiries)

    def reap(self) -> None:
        """Local workers that exited: forgotten, so that their requests run again."""
        if not self.supervisor:
            return
        for address, how in self.supervisor.reap():
            if address in self.workers:
                self.forget(address, f"exited ({how})")
        self.next_tick = 0.0  # restarts are planned: tick() starts those that are due
