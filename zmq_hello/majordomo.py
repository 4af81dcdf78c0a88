"""Every Majordomo (MDP) rule the server keeps, with no I/O: a sans-IO core, as h11 is
for HTTP. It imports no socket library and reads no clock; the time comes with each call.

The front door (client_request(), refuse()), for every mode: which frames are an MDP
client's request and in which dialect, what mmi.service answers (RFC 8), and that an
MDP client's request the server cannot serve ends with no reply, since MDP has no error
reply (a plain client gets ERROR: why).

The broker (Majordomo), for worker processes: workers register with READY for any
service but the mmi. ones; each service has its own fair queue of waiting requests
(round robin over their clients) and its own idle workers, least recently used first;
a request goes to an idle worker of its service at once, whatever waits for others. An
idle worker silent for LIVENESS heartbeats is dead (a busy one may be silent: MDP
workers send heartbeats only while they wait, so a send to it failing is how a dead busy
one is found). A request whose worker dies runs once more, ahead of the queue; if a
worker dies on it again, it ends (ERROR: worker failed). A request for a service with
no worker waits no_worker_timeout for one, then expires.

A request with a deadline (zmq_hello.deadlines) goes to a worker only while its caller
still waits: if it waited for one, only while its caller will wait longer than the
service's handlers take lately (deadlines.Pace). Otherwise it ends Expired, with nothing
sent; with no worker for its service, it waits no_worker_timeout or until its deadline,
whichever comes first. The worker gets the time left in the request's address.

Inputs (each given now, from a monotonic clock):
    submit(now, request)               a client's request for a worker
    worker_message(now, frames, n)     what a worker sent: [address, *frames], n frames
    unreachable(now, frames)           a send to a worker failed: it is gone
    exited(now, address, how)          a local worker process exited
    tick(now)                          the time came (next_tick): heartbeats, expiry
    flush(now)                         after the inputs of one wake-up: start what can
    shut(local_may_come)               at shutdown: end what no worker will ever run
    stop()                             DISCONNECT to every worker
Outputs (lists the caller takes and carries out, in order, after the inputs of each
wake-up; heartbeats are sent before flush() hands out requests):
    to_workers   [address, *frames] to send on the backend; a failed send: unreachable()
    endings      a Reply for a client, or Unanswered: a request ends with nothing sent
    incidents    Incident: what to log (rate-limited by the caller)
    news         News for the supervisor of local workers: registered, first answer,
                 hung (end it), leaving (it exits by itself)
    next_tick    when to call tick() next
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import NamedTuple

from zmq_hello import mdp
from zmq_hello.deadlines import NO_DEADLINE, Pace, with_deadline
from zmq_hello.envelope import (
    ERROR_PREFIX,
    Ending,
    Expired,
    Reply,
    Request,
    Unanswered,
    construct,
    printable,
    reply,
)
from zmq_hello.scheduler import Backlog, Limits, Scheduler

MAX_FRAMES = 32  # frames kept of a worker's message: MDP needs 7, more is hostile
SERVICES_SHOWN = 10  # in the summary line, the busiest first
MAX_NAME_SHOWN = 100  # characters of a worker's address or a service's name in a log line
TOO_MANY = "too many requests from this client"
# Why a request that waited out no_worker_timeout ends, and a plain client's reply: one
# object, so that the server tells it by identity from a handler's reply that says the same.
NO_WORKER = "no worker for this service"
NO_WORKER_REPLY = ERROR_PREFIX + NO_WORKER.encode()
BUSY = "server busy: too many requests waiting"


class Incident(NamedTuple):
    """One thing to log, as the broker core (majordomo.py) decides it with no logger: its
    kind, its text, and whether it is churn (workers coming and going), logged one by one
    up to incidents.KIND_BURST a second."""

    kind: str
    text: str
    level: int = WARNING
    churn: bool = False


class Handled(NamedTuple):
    """Frames the front door dealt with itself: what to send back at once (an mmi.
    answer, an error for a malformed plain request), and what to log, if anything."""

    reply: Reply | None
    incident: Incident | None


# What the broker tells the supervisor of local worker processes about an address.
REGISTERED = "registered"  # it sent READY
SERVED = "served"  # it answered its first request: it started well
HUNG = "hung"  # it is found dead (silent, unreachable): a process still running is hung
LEAVING = "leaving"  # it sent DISCONNECT: it exits by itself


class News(NamedTuple):
    """An event about one worker, for the supervisor (which knows which are its own)."""

    address: bytes
    event: str


def named(name: bytes) -> str:
    """A worker's address or a service's name for the log: they may be binary, or hold a
    newline that would forge a log line of its own, so each is escaped."""
    return printable(name, MAX_NAME_SHOWN)


# The front door -------------------------------------------------------------------


def refuse(request: Request, why: str, body: bytes | None = None) -> Ending:
    """How a request the server cannot serve ends: ERROR: why (or body), for a plain
    client; for an MDP client, nothing (MDP has no error reply; its own timeout ends its
    wait)."""
    if request.dialect is None:
        return reply(request.route, body or ERROR_PREFIX + why.encode(), True, request)
    return Unanswered(request, why)


def client_request(
    frames: list[bytes],
    frame_count: int,
    serves: Callable[[bytes], bool],
    max_frames: int,
    now: float,
) -> Request | Handled:
    """Frames that are not a plain request ([routing_id, ...], frame_count in all), read at
    now: an
    MDP client's Request, or what the front door does with them itself. serves(service):
    whether a worker serves it now, for mmi.service."""
    routing_id = frames[0]
    try:
        request = mdp.client_request(frames, now)
        if request and frame_count > max_frames:
            raise mdp.ProtocolError(f"over {max_frames} frames")
    except mdp.ProtocolError as exc:
        text = f"a malformed MDP request from {printable(routing_id)}: {exc}"
        return Handled(None, Incident("malformed MDP requests", text))
    if request is None:
        shape = f"over {max_frames}" if frame_count > max_frames else str(frame_count)
        who = printable(routing_id)
        text = f"malformed request from {who} ({shape} frames): answered with an error"
        error = reply([routing_id], ERROR_PREFIX + b"malformed request")
        return Handled(error, Incident("malformed requests", text))
    if request.service.startswith(mdp.MMI_PREFIX):
        return Handled(reply(request.route, management(request, serves)), None)
    return request


def management(request: Request, serves: Callable[[bytes], bool]) -> bytes:
    """RFC 8: mmi.service answers whether a worker serves the service named in the body;
    any other mmi. service is not implemented."""
    if request.service != mdp.MMI_SERVICE:
        return b"501"
    return b"200" if serves(request.body) else b"404"


def unanswered_incident(ending: Unanswered) -> Incident:
    service = named(ending.request.service)
    text = f"sent no reply to MDP requests for service '{service}': {ending.why}"
    return Incident("MDP requests unanswered", text)


# The broker -----------------------------------------------------------------------


class Expiry(NamedTuple):
    """A request waiting for its service's first worker, and when it gives up:
    no_worker_timeout after it began to wait, or at its deadline if that is sooner.
    Ordered by `at`, then `order` (as it came), in a heap."""

    at: float
    order: int
    request: Request


@dataclass(eq=False)  # by identity: a service is a key of the broker's dicts
class Service:
    """One service: its own fair queue of waiting requests and its own idle workers."""

    name: bytes
    scheduler: Scheduler[bytes, Request]  # free: its idle workers, least recently used first
    workers: int = 0  # registered for it
    # While no worker is registered: when each waiting request expires, a heap.
    expiring: list[Expiry] = field(default_factory=list)
    pace: Pace = field(default_factory=Pace)  # how long its handlers take lately

    def __str__(self) -> str:
        return f"'{named(self.name)}'"


@dataclass(eq=False)
class Worker:
    """A registered MDP worker, by the routing id it connected with."""

    address: bytes
    framing: mdp.Framing
    service: Service
    expires: float  # dead after this, if idle and silent
    request_head: list[bytes]  # a REQUEST's first frames, in its framing
    final_head: list[bytes]  # and a FINAL's, as it sends them
    key: bytes = b""  # the request it holds, by the address frame it was sent with
    request: Request | None = None
    started: float = 0.0  # when it was sent the request it holds
    answered: int = 0  # requests it finished


class Majordomo:
    """The broker's state and rules: services, workers, waiting requests. Only its
    methods change it; what they decide goes to the output lists (see the module)."""

    def __init__(
        self,
        default_service: bytes,
        heartbeat: float,
        no_worker_timeout: float,
        limits: Limits,
        key_prefix: bytes = b"",
    ) -> None:
        """Plain clients' requests go to default_service. key_prefix starts the address a
        worker gets for each request (text, never a NUL: workers in C read it as a
        string), so a worker of a broker that restarted cannot match a new request."""
        self.default = default_service
        self.heartbeat = heartbeat
        self.patience = mdp.LIVENESS * heartbeat
        self.no_worker_timeout = no_worker_timeout
        # One backlog for all services: made-up service names do not multiply a client's share.
        self.backlog = Backlog(limits)
        self.key_prefix = key_prefix
        self.keys = itertools.count()
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        # Services that may have an idle worker and a waiting request, for flush().
        self.pending: dict[Service, None] = {}
        self.orphaned: dict[Service, None] = {}  # with requests waiting for any worker
        # Requests run once more after a worker died holding them, by id() (each is held
        # here until it ends, so no other object takes its id meanwhile).
        self.reruns: dict[int, Request] = {}
        self.expired = 0  # with no worker, past no_worker_timeout
        self.expiries = itertools.count()  # ties between Expiry entries: first come first
        self.next_heartbeat = 0.0
        self.next_tick = 0.0  # the next heartbeat or expiry, whichever is sooner
        self.to_workers: list[list[bytes]] = []
        self.endings: list[Ending] = []
        self.incidents: list[Incident] = []
        self.news: list[News] = []
        self.open(default_service)

    # Questions.

    def serves(self, service: bytes) -> bool:
        """Whether a worker is registered for service now (mmi.service answers 200)."""
        found = self.services.get(service)
        return found is not None and found.workers > 0

    def waiting(self) -> int:
        return self.backlog.total

    def describe(self) -> str:
        """The workers and services now, for the summary line."""
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

    # Requests in.

    def submit(self, now: float, request: Request) -> Ending | None:
        """Take a client's request; how it ends at once if it cannot wait (its client's
        share of the backlog, or all of it, is taken), else None."""
        name = request.service or self.default
        service = self.services.get(name) or self.open(name)
        if request.deadline <= now:  # it came with no time left: it would only take a place
            return self.give_up(service, request)
        scheduler = service.scheduler
        if scheduler.free and not scheduler.queued:  # the common case: an idle worker takes it
            address = next(iter(scheduler.free))
            del scheduler.free[address]
            self.start(now, address, request)
            return None
        if not scheduler.add(request.route[0], request):
            self.close_if_unused(service)
            return refuse(request, BUSY if self.backlog.full else TOO_MANY)
        if service.scheduler.free:
            self.pending[service] = None
        elif not service.workers:
            self.expire_later(now, service, request)
        return None

    def flush(self, now: float) -> None:
        """Start every waiting request that an idle worker of its service can take, and
        end those whose caller will have given up before a worker could answer."""
        while self.pending:
            pending, self.pending = self.pending, {}
            for service in pending:
                for address, request in service.scheduler.dispatch():
                    deadline = request.deadline
                    if deadline != NO_DEADLINE and not service.pace.worth_starting(deadline, now):
                        self.endings.append(self.give_up(service, request))
                        service.scheduler.release(address)
                        self.pending[service] = None  # the worker takes the next one
                        continue
                    self.start(now, address, request)

    def start(self, now: float, address: bytes, request: Request) -> None:
        worker = self.workers[address]
        key = b"%s%x" % (self.key_prefix, next(self.keys))
        if request.deadline != NO_DEADLINE:
            key = with_deadline(key, request.deadline - now)
            worker.started = now
        worker.key = key
        worker.request = request
        self.to_workers.append(
            [address, *worker.request_head, key, b"", *request.body_head, request.body]
        )

    def give_up(self, service: Service, request: Request) -> Expired:
        """A request not started: its caller has given up, or will have before a worker
        could answer. The server logs it, as for every mode."""
        self.reruns.pop(id(request), None)
        return Expired(request, service.name)

    # Workers' messages.

    def worker_message(self, now: float, frames: list[bytes], frame_count: int) -> None:
        """What a worker sent: [address, *frames], frame_count frames in all (only the
        first MAX_FRAMES are given)."""
        address = frames[0]
        worker = self.workers.get(address)
        # The common message, the FINAL of the request held, in one frame:
        # [address, *final_head, key, b"", body]; parse() and the checks below have the rest.
        if (
            worker is not None
            and (request := worker.request) is not None
            and frame_count == len(worker.final_head) + 4
            and frames[-3] == worker.key
            and frames[-2] == b""
            and frames[1:-3] == worker.final_head
        ):
            worker.expires = now + self.patience
            # Reply(route, body, final, request), with no call.
            self.endings.append(construct(Reply, (request.route, frames[-1], True, request)))
            self.finished(now, worker)
            return
        frames = frames[1:]
        if frame_count > MAX_FRAMES:
            self.refuse_message(now, address, f"{frame_count} frames, more than MDP has")
            return
        try:
            message = mdp.parse(frames)
        except mdp.ProtocolError as exc:
            self.refuse_message(now, address, str(exc))
            return
        if worker is None:
            self.from_stranger(now, address, message)
        else:
            self.from_worker(now, worker, message)

    def from_stranger(self, now: float, address: bytes, message: mdp.Message) -> None:
        """A message from an address that is not a registered worker."""
        command = message.command
        if command == mdp.READY:
            self.register(now, address, message)
        elif command != mdp.DISCONNECT:
            # Declared dead a moment ago, or registered with the server before a restart.
            self.incidents.append(
                Incident(
                    "messages from workers not registered",
                    f"{command} from worker {named(address)}, which is not registered",
                )
            )
            self.to_workers.append([address, *mdp.build(message.framing, mdp.DISCONNECT)])

    def from_worker(self, now: float, worker: Worker, message: mdp.Message) -> None:
        """A registered worker's message, other than the common FINAL."""
        # RFC 18: any command but DISCONNECT acts as a heartbeat.
        worker.expires = now + self.patience
        command = message.command
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
                self.endings.append(reply(route, body, final, request))
            if final:
                self.finished(now, worker)
        elif command == mdp.DISCONNECT:
            # A worker that leaves says so between requests (worker.py's --max-requests
            # sends it right after its last reply): one sent a request meanwhile never ran
            # it, so it runs elsewhere with no mark against it.
            self.forget(now, worker, "disconnected", died=False)
        else:  # READY again, a REQUEST, a reply for a request it does not hold
            held = " for a request it does not hold" if command in (mdp.FINAL, mdp.PARTIAL) else ""
            self.incidents.append(
                Incident(
                    "unexpected worker commands",
                    f"unexpected {command} from worker {named(worker.address)}{held}",
                )
            )
            self.disconnect(now, worker, f"sent an unexpected {command}")

    def finished(self, now: float, worker: Worker) -> None:
        """A worker's FINAL came: it is free, and its service's queue may go on."""
        service = worker.service
        request = worker.request
        if request is not None and request.deadline != NO_DEADLINE:
            service.pace.timed(now - worker.started)
        if self.reruns:
            self.reruns.pop(id(request), None)
        worker.request = None
        worker.key = b""
        if not worker.answered:
            self.news.append(News(worker.address, SERVED))
        worker.answered += 1
        service.scheduler.release(worker.address)
        if service.scheduler.queued:
            self.pending[service] = None

    def refuse_message(self, now: float, address: bytes, why: str) -> None:
        """A message that is not MDP: logged, and its sender, if a worker, disconnected."""
        self.incidents.append(
            Incident("bad worker messages", f"a bad message from worker {named(address)}: {why}")
        )
        if (worker := self.workers.get(address)) is not None:
            self.disconnect(now, worker, "sent a bad message")

    def register(self, now: float, address: bytes, message: mdp.Message) -> None:
        name = named(address)
        if message.address.startswith(mdp.MMI_PREFIX):
            self.incidents.append(
                Incident(
                    "workers registering for mmi. services",
                    f"worker {name} registered for '{named(message.address)}': mmi. services "
                    "are the broker's own (RFC 8); sent DISCONNECT",
                )
            )
            self.to_workers.append([address, *mdp.build(message.framing, mdp.DISCONNECT)])
            return
        service = self.services.get(message.address) or self.open(message.address)
        framing = message.framing
        worker = Worker(
            address,
            framing,
            service,
            now + self.patience,
            mdp.head(framing, mdp.REQUEST),
            mdp.head(framing, mdp.FINAL),
        )
        self.workers[address] = worker
        service.workers += 1
        service.scheduler.release(address)
        if service.expiring:  # what waited for a worker has one
            service.expiring.clear()
            self.orphaned.pop(service, None)
        if service.scheduler.queued:
            self.pending[service] = None
        # A HEARTBEAT at once: a READY may have waited in the worker's queue while this
        # broker was down, and a worker that hears nothing within its liveness counts the
        # broker gone, leaving the registration just made with a request on its way.
        self.to_workers.append([address, *mdp.build(framing, mdp.HEARTBEAT)])
        self.news.append(News(address, REGISTERED))
        self.incidents.append(
            Incident(
                "workers registering", f"worker {name} ready for {service} ({framing})", INFO, True
            )
        )

    # Deaths, departures and re-runs.

    def unreachable(self, now: float, frames: list[bytes]) -> None:
        """A send of frames from to_workers failed: libzmq dropped the peer (its
        heartbeats stopped). A DISCONNECT that could not leave changes nothing."""
        worker = self.workers.get(frames[0])
        if worker is not None and frames[1:] != mdp.build(worker.framing, mdp.DISCONNECT):
            self.forget(now, worker, "is gone")

    def exited(self, now: float, address: bytes, how: str) -> None:
        """A local worker process exited: its request runs again."""
        if (worker := self.workers.get(address)) is not None:
            self.forget(now, worker, f"exited ({how})")

    def disconnect(self, now: float, worker: Worker, why: str) -> None:
        """Tell a worker that broke the protocol to go (it may register again)."""
        self.to_workers.append([worker.address, *mdp.build(worker.framing, mdp.DISCONNECT)])
        self.forget(now, worker, why)

    def forget(self, now: float, worker: Worker, why: str, died: bool = True) -> None:
        """A worker is gone: its request runs once more elsewhere, or ends."""
        address = worker.address
        del self.workers[address]
        service = worker.service
        service.scheduler.remove(address)
        service.workers -= 1
        name = named(address)
        request = worker.request
        if request is None:
            self.incidents.append(Incident("workers leaving", f"worker {name} {why}", churn=True))
        elif not died:
            self.incidents.append(
                Incident(
                    "workers leaving",
                    f"worker {name} {why} before it ran a request: running it elsewhere",
                    INFO,
                    True,
                )
            )
            service.scheduler.add(request.client, request, first=True)
        elif id(request) not in self.reruns:
            self.incidents.append(
                Incident(
                    "workers gone holding a request",
                    f"worker {name} {why} holding a request: running it once more",
                    churn=True,
                )
            )
            self.reruns[id(request)] = request
            service.scheduler.add(request.client, request, first=True)
        else:
            self.incidents.append(
                Incident(
                    "workers gone holding a request",
                    f"worker {name} {why} holding a request that a worker died on before",
                    churn=True,
                )
            )
            del self.reruns[id(request)]
            self.endings.append(refuse(request, "worker failed"))
        if service.scheduler.free and service.scheduler.queued:
            self.pending[service] = None
        elif not service.workers:
            self.orphan(now, service)
        self.news.append(News(address, HUNG if died else LEAVING))

    # Time: heartbeats, liveness, expiry.

    def tick(self, now: float) -> None:
        """Once a heartbeat interval: heartbeats to every worker, and the dead found; and
        requests that waited too long for a service's first worker, expired.

        Busy workers get heartbeats too: they are harmless to an MDP worker, and a send to
        a peer that libzmq dropped fails, which tells a dead busy worker from a slow one.
        """
        if now < self.next_tick:  # the common case, on every turn of the poll loop
            return
        if self.orphaned:
            self.expire(now)
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat
            for worker in list(self.workers.values()):
                if worker.request is None and now > worker.expires:
                    self.forget(now, worker, f"was silent for {mdp.LIVENESS} heartbeats")
                else:
                    heartbeat = mdp.build(worker.framing, mdp.HEARTBEAT)
                    self.to_workers.append([worker.address, *heartbeat])
        expiries = [service.expiring[0].at for service in self.orphaned]
        self.next_tick = min([self.next_heartbeat, *expiries])

    def open(self, name: bytes) -> Service:
        service = self.services[name] = Service(
            name, Scheduler((), self.backlog.limits.per_queue, self.backlog)
        )
        return service

    def close_if_unused(self, service: Service) -> None:
        """A service with no worker and no request is forgotten: names cost nothing."""
        if not (service.workers or service.scheduler.queued or service.name == self.default):
            self.services.pop(service.name, None)

    def expiry(self, now: float, request: Request) -> Expiry:
        """When a request waiting for a service's first worker gives up: after
        no_worker_timeout, or at its deadline if that comes first."""
        at = min(now + self.no_worker_timeout, request.deadline)
        return Expiry(at, next(self.expiries), request)

    def expire_later(self, now: float, service: Service, request: Request) -> None:
        expiry = self.expiry(now, request)
        heapq.heappush(service.expiring, expiry)
        self.orphaned[service] = None
        self.next_tick = min(self.next_tick, expiry.at)

    def orphan(self, now: float, service: Service) -> None:
        """Its last worker is gone: what waits for it starts waiting for a new one."""
        waiting = service.scheduler.waiting.values()
        service.expiring = [self.expiry(now, request) for jobs in waiting for request in jobs]
        if service.expiring:
            heapq.heapify(service.expiring)
            self.orphaned[service] = None
            self.next_tick = min(self.next_tick, service.expiring[0].at)
        else:
            self.close_if_unused(service)

    def expire(self, now: float) -> None:
        """Requests that waited for a worker that never came: no_worker_timeout, or until
        their deadline."""
        for service in list(self.orphaned):
            expiring = service.expiring
            while expiring and expiring[0].at <= now:
                request = heapq.heappop(expiring).request
                service.scheduler.withdraw(request.client, request)
                if request.deadline <= now:
                    self.endings.append(self.give_up(service, request))
                    continue
                self.reruns.pop(id(request), None)
                self.endings.append(refuse(request, NO_WORKER, NO_WORKER_REPLY))
                self.expired += 1
                self.incidents.append(
                    Incident(
                        "requests expired",
                        f"requests for service {service} expired: no worker registered within "
                        f"{self.no_worker_timeout:g} s (--no-worker-timeout)",
                    )
                )
            if not expiring:
                del self.orphaned[service]
                self.close_if_unused(service)

    # Shutdown.

    def shut(self, local_may_come: bool) -> None:
        """While the server stops: requests waiting for a service with no worker, and none
        to come, end now (waiting would be forever). local_may_come: a local worker may yet
        register for the default service."""
        for service in list(self.services.values()):
            if not service.scheduler.queued or service.workers:
                continue
            if local_may_come and service.name == self.default:
                continue
            service.expiring.clear()
            self.orphaned.pop(service, None)
            for request in service.scheduler.drain():
                self.reruns.pop(id(request), None)
                self.endings.append(refuse(request, "no worker available"))

    def stop(self) -> None:
        """DISCONNECT to every worker: the server is going."""
        for address, worker in self.workers.items():
            self.to_workers.append([address, *mdp.build(worker.framing, mdp.DISCONNECT)])
