"""server.py's Majordomo (MDP) broker: requests to worker processes behind the backend.

Workers (worker.py, majortomo's, the guide's) connect to the backend ROUTER and register
for the service with READY. The scheduler hands each request to the least recently used
idle worker; the worker answers with FINAL (or PARTIALs, then FINAL). Only server.py's
poll loop calls into the Broker, so only that thread touches the backend socket.

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

import itertools
import logging
import time
from dataclasses import dataclass
from logging import INFO

import zmq

from zmq_hello import mdp, wire
from zmq_hello.envelope import Reply, Request, construct, error_reply
from zmq_hello.incidents import Incidents
from zmq_hello.runners import NO_REPLIES, TOO_MANY
from zmq_hello.scheduler import Scheduler
from zmq_hello.supervisor import Supervisor

LIVENESS = 3  # heartbeat intervals of silence after which an idle worker is dead
READ_BATCH = 32  # backend messages read per wake-up at most
MAX_FRAMES = 32  # frames kept of a worker's message: MDP needs 7, more is hostile

log = logging.getLogger("server")


@dataclass
class Worker:
    """A registered MDP worker, by the routing id it connected with."""

    framing: mdp.Framing
    expires: float  # dead after this, if idle and silent
    key: bytes = b""  # the request it holds, by the address frame it was sent with
    request: Request | None = None
    untried: bool = False  # a local worker that has yet to answer: its supervisor asks


def named(address: bytes) -> str:
    """A worker's address for the log: worker.py's are host/pid, others' may be binary."""
    return address.decode("utf-8", "backslashreplace")


class Broker:
    """The Runner for MDP workers: one service, its idle workers least recently used first."""

    def __init__(
        self,
        backend: zmq.Socket,
        service: bytes,
        heartbeat: float,
        max_waiting: int,
        incidents: Incidents,
        supervisor: Supervisor | None = None,
    ) -> None:
        """backend is bound already; problems and churn go to incidents, a line a flood."""
        self.backend = backend
        self.sockets = [backend]
        self.service = service
        self.heartbeat = heartbeat
        self.incidents = incidents
        self.supervisor = supervisor
        self.scheduler: Scheduler[bytes, Request] = Scheduler((), max_waiting)
        self.workers: dict[bytes, Worker] = {}
        self.keys = itertools.count()
        self.replies: list[Reply] = []  # gathered while reading, for collect()
        self.next_heartbeat = 0.0
        self.next_tick = 0.0  # the next heartbeat, or a local worker's restart if sooner
        if supervisor:
            supervisor.start()

    # The Runner interface.

    def submit(self, request: Request) -> bytes | None:
        return None if self.scheduler.add(request.route[0], request) else TOO_MANY

    def flush(self) -> list[Reply]:
        scheduler = self.scheduler
        # A loop: a worker found gone as a request is sent to it puts that request back.
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

    def waiting(self) -> int:
        return self.scheduler.queued

    def describe(self) -> str:
        busy = sum(1 for worker in self.workers.values() if worker.request)
        return f"{len(self.workers)} connected, {busy} busy"

    def unservable(self) -> list[Reply]:
        if not self.scheduler.queued or self.can_serve():
            return []
        # Shutting down with no worker left to run them: waiting would be forever.
        return [
            error_reply(request.route, "no worker available") for request in self.scheduler.drain()
        ]

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

    def can_serve(self) -> bool:
        """Whether a worker is registered, or a local one may yet be."""
        return bool(self.workers) or bool(self.supervisor and self.supervisor.may_serve())

    # Requests out, replies back.

    def start(self, address: bytes, request: Request) -> None:
        worker = self.workers[address]
        worker.key = next(self.keys).to_bytes(8, "big")
        worker.request = request
        frames = mdp.build(worker.framing, mdp.REQUEST, worker.key, request.body)
        if not self.send(address, frames):
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
                    f"{command} from worker {named(address)}, which is not registered"
                )
                self.send(address, mdp.build(message.framing, mdp.DISCONNECT))
            return
        worker.expires = time.monotonic() + LIVENESS * self.heartbeat
        if command == mdp.HEARTBEAT:
            return
        request = worker.request
        if command in (mdp.FINAL, mdp.PARTIAL) and request and message.address == worker.key:
            final = command == mdp.FINAL
            # A reply of several frames keeps them: all but the last travel as envelope.
            *envelope, body = message.body
            route = request.route + envelope if envelope else request.route
            self.replies.append(construct(Reply, (route, body, final)))
            if final:
                worker.request = None
                worker.key = b""
                self.scheduler.release(address)
                if worker.untried and self.supervisor:
                    worker.untried = False
                    self.supervisor.served(address)
        elif command == mdp.DISCONNECT:
            # A worker that leaves says so between requests (worker.py's --max-requests
            # sends it right after its last reply): one sent a request meanwhile never ran
            # it, so it runs elsewhere with no mark against it.
            self.forget(address, "disconnected", died=False)
        else:  # READY again, a REQUEST, a reply for a request it does not hold
            held = " for a request it does not hold" if command in (mdp.FINAL, mdp.PARTIAL) else ""
            self.incidents.add(f"unexpected {command} from worker {named(address)}{held}")
            self.disconnect(address, f"sent an unexpected {command}")

    def refuse(self, address: bytes, why: str) -> None:
        """A message that is not MDP: logged, and its sender, if a worker, disconnected."""
        self.incidents.add(f"a bad message from worker {named(address)}: {why}")
        if address in self.workers:
            self.disconnect(address, "sent a bad message")

    def register(self, address: bytes, message: mdp.Message) -> None:
        name = named(address)
        if message.address != self.service:
            service = message.address.decode("utf-8", "backslashreplace")
            self.incidents.add(
                f"worker {name} registered for {service!r}, not this server's service"
            )
            self.send(address, mdp.build(message.framing, mdp.DISCONNECT))
            return
        expires = time.monotonic() + LIVENESS * self.heartbeat
        worker = self.workers[address] = Worker(message.framing, expires)
        self.scheduler.release(address)
        if self.supervisor:
            worker.untried = self.supervisor.registered(address)
        self.incidents.add(f"worker {name} ready ({message.framing})", "workers registering", INFO)

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
        self.scheduler.remove(address)
        name = named(address)
        request = worker.request
        if request is None:
            self.incidents.add(f"worker {name} {why}", "workers leaving")
        elif not died:
            log.info("worker %s %s before it ran a request: running it elsewhere", name, why)
            self.scheduler.add(request.client, request, first=True)
        elif not request.worker_died:
            log.warning("worker %s %s holding a request: running it once more", name, why)
            self.scheduler.add(request.client, request._replace(worker_died=True), first=True)
        else:
            log.warning("worker %s %s holding a request that a worker died on before", name, why)
            self.replies.append(error_reply(request.route, "worker failed"))
        if self.supervisor:
            self.supervisor.hung(address)  # a silent local worker is hung: end it

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
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat
            for address, worker in list(self.workers.items()):
                if worker.request is None and now > worker.expires:
                    self.forget(address, f"was silent for {LIVENESS} heartbeats")
                elif not self.send(address, mdp.build(worker.framing, mdp.HEARTBEAT)):
                    self.forget(address, "is gone")
            self.reap()  # in case a SIGCHLD came before the loop could see it
        restart = self.supervisor.restart() if self.supervisor else None
        self.next_tick = min(self.next_heartbeat, restart or self.next_heartbeat)

    def reap(self) -> None:
        """Local workers that exited: forgotten, so that their requests run again."""
        if not self.supervisor:
            return
        for address, how in self.supervisor.reap():
            if address in self.workers:
                self.forget(address, f"exited ({how})")
        self.next_tick = 0.0  # restarts are planned: tick() starts those that are due
