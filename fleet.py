"""server.py's MDP workers: the worker processes behind its backend socket.

Workers (worker.py, majortomo's, the guide's) connect to the backend ROUTER and register
for the service with READY. The scheduler hands each request to the least recently used
idle worker; the worker answers with FINAL (or PARTIALs, then FINAL). Only server.py's
poll loop calls into a Fleet, so only that thread touches the backend socket.

Liveness. An idle worker is dead after LIVENESS heartbeat intervals without a word from
it. A busy one may be silent (MDP workers send heartbeats only while they wait), so
libzmq's own connection heartbeats (HEARTBEAT_IVL on the backend, answered by the peer's
I/O thread whatever its Python code does) drop a frozen or vanished peer, and the next
heartbeat sent to it fails: that is how the loop learns. A worker that dies holding a
request: the request runs once more, ahead of the queue; if that worker dies on it too,
the client gets ERROR: worker failed, so a request that kills workers cannot take the
whole fleet down.

Local workers (--processes) are worker.py processes on a private ipc:// endpoint,
restarted when they exit or go silent.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

import mdp
import wire
from scheduler import Scheduler

DEFAULT_SERVICE = "hello"
DEFAULT_HEARTBEAT = 2.5  # seconds, MDP's customary interval
LIVENESS = 3  # heartbeat intervals of silence after which an idle worker is dead
READ_BATCH = 32  # backend messages read per wake-up at most
RESTART_PAUSE_MAX = 30.0  # seconds: the longest pause before restarting a local worker
STOP_TIMEOUT = 10.0  # seconds local workers get to exit at shutdown before being killed
WORKER_FAILED = b"ERROR: worker failed"
MAX_FRAMES = 32  # frames kept of a worker's message: MDP needs 7, more is hostile

log = logging.getLogger("server")

# A request: (route, body), or (route, body, True) once its first worker died on it.
Job = tuple
Answer = Callable[[list[bytes], list[bytes], bool], None]  # (route, frames, final)


@dataclass
class Worker:
    framing: mdp.Framing
    expires: float  # dead after this, if idle and silent
    key: bytes = b""  # the request it holds, by the address frame it was sent with
    job: Job | None = None


@dataclass
class Local:
    """One --processes slot: the worker.py process that fills it, restarted as needed."""

    popen: subprocess.Popen | None = None
    address: bytes = b""  # its routing id, as worker.py sets it: host/pid
    ready: bool = False  # registered since it started: a crash after that is no start-up crash
    failures: int = 0  # start-up crashes in a row, for the pause before the next start
    restart_at: float | None = None


def named(address: bytes) -> str:
    """A worker's address for the log: worker.py's are host/pid, others' may be binary."""
    return address.decode("utf-8", "backslashreplace")


class Fleet:
    def __init__(
        self,
        backend: zmq.Socket,
        service: bytes,
        heartbeat: float,
        processes: int = 0,
        private_endpoint: str = "",
        worker_args: tuple[str, ...] = (),
    ) -> None:
        """backend is bound already; processes local workers will connect to it at
        private_endpoint, running worker.py with worker_args (the handler's flags)."""
        self.backend = backend
        self.service = service
        self.heartbeat = heartbeat
        self.workers: dict[bytes, Worker] = {}
        self.keys = itertools.count()
        self.next_heartbeat = 0.0
        self.next_tick = 0.0  # the next heartbeat, or a local worker's restart if sooner
        self.processes = processes
        self.local: list[Local] = []
        self.local_args = [
            str(Path(__file__).with_name("worker.py")),
            "--connect",
            private_endpoint,
            "--service",
            service.decode(),
            "--heartbeat",
            str(heartbeat),
            "--parent",
            str(os.getpid()),
            *worker_args,
        ]

    def attach(self, scheduler: Scheduler, answer: Answer, incident: Callable[[str], None]) -> None:
        """Start: workers become the scheduler's slots, replies go to answer(route, frames,
        final), and problems to incident(what); local workers are started."""
        self.scheduler = scheduler
        self.answer = answer
        self.incident = incident
        self.local = [Local() for _ in range(self.processes)]
        for local in self.local:
            self.spawn(local)

    def can_serve(self) -> bool:
        """Whether a worker is registered, or a local one may yet be (one that crashed
        before it ever registered is not counted on)."""
        return bool(self.workers) or any(local.failures == 0 for local in self.local)

    def wait_ms(self, longest: int) -> int:
        """How long the poll may wait before the fleet has something to do."""
        return max(0, min(longest, round((self.next_tick - time.monotonic()) * 1000)))

    # Requests out, replies back.

    def start(self, started: list[tuple[bytes, Job]]) -> None:
        """Send each job to the worker the scheduler picked for it."""
        for address, job in started:
            worker = self.workers[address]
            worker.key = next(self.keys).to_bytes(8, "big")
            worker.job = job
            frames = mdp.build(worker.framing, mdp.REQUEST, worker.key, job[1])
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
                self.incident(f"{command} from worker {named(address)}, which is not registered")
                self.send(address, mdp.build(message.framing, mdp.DISCONNECT))
            return
        worker.expires = time.monotonic() + LIVENESS * self.heartbeat
        if command == mdp.HEARTBEAT:
            return
        if command in (mdp.FINAL, mdp.PARTIAL) and worker.job and message.address == worker.key:
            final = command == mdp.FINAL
            self.answer(worker.job[0], message.body, final)
            if final:
                worker.job = None
                worker.key = b""
                self.scheduler.release(address)
        elif command == mdp.DISCONNECT:
            self.forget(address, "disconnected")
        else:  # READY again, a REQUEST, a reply for a request it does not hold
            held = "a request it does not hold" if command in (mdp.FINAL, mdp.PARTIAL) else ""
            self.incident(
                f"unexpected {command} from worker {named(address)}{held and ' for ' + held}"
            )
            self.disconnect(address, f"sent an unexpected {command}")

    def refuse(self, address: bytes, why: str) -> None:
        """A message that is not MDP: logged, and its sender, if a worker, disconnected."""
        self.incident(f"a bad message from worker {named(address)}: {why}")
        if address in self.workers:
            self.disconnect(address, "sent a bad message")

    def register(self, address: bytes, message: mdp.Message) -> None:
        name = named(address)
        if message.address != self.service:
            service = message.address.decode("utf-8", "backslashreplace")
            self.incident(f"worker {name} registered for {service!r}, not this server's service")
            self.send(address, mdp.build(message.framing, mdp.DISCONNECT))
            return
        expires = time.monotonic() + LIVENESS * self.heartbeat
        self.workers[address] = Worker(message.framing, expires)
        self.scheduler.release(address)
        for local in self.local:
            if local.address == address:
                local.ready, local.failures = True, 0
        log.info("worker %s ready (%s)", name, message.framing)

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

    def forget(self, address: bytes, why: str) -> None:
        """A worker is gone: its request runs once more elsewhere, or fails."""
        worker = self.workers.pop(address)
        self.scheduler.remove(address)
        name = named(address)
        if worker.job is None:
            log.warning("worker %s %s", name, why)
        elif len(worker.job) == 2:
            route, body = worker.job
            log.warning("worker %s %s holding a request: running it once more", name, why)
            self.scheduler.add(route[0], (route, body, True), first=True)
        else:
            log.warning("worker %s %s holding a request that a worker died on before", name, why)
            self.answer(worker.job[0], [WORKER_FAILED], True)
        for local in self.local:  # a silent local worker is hung: end it, to start anew
            if local.address == address and local.popen and local.popen.poll() is None:
                local.popen.kill()

    def tick(self) -> None:
        """Once a heartbeat interval: heartbeats to every worker, and the dead found.

        Busy workers get them too: they are harmless to an MDP worker, and a send to a
        peer that libzmq dropped fails, which tells a dead busy worker from a slow one.
        """
        now = time.monotonic()
        if now < self.next_tick:  # the common case, on every turn of the poll loop
            return
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat
            for address, worker in list(self.workers.items()):
                if worker.job is None and now > worker.expires:
                    self.forget(address, f"was silent for {LIVENESS} heartbeats")
                elif not self.send(address, mdp.build(worker.framing, mdp.HEARTBEAT)):
                    self.forget(address, "is gone")
            self.reap()  # in case a SIGCHLD came before the loop could see it
        self.restart_local()

    def busy(self) -> int:
        return sum(1 for worker in self.workers.values() if worker.job)

    def stop(self) -> None:
        """At shutdown, once nothing is in flight: DISCONNECT to all, local ones ended."""
        for address, worker in self.workers.items():
            self.send(address, mdp.build(worker.framing, mdp.DISCONNECT))
        self.stop_local()

    # Local worker processes (--processes).

    def spawn(self, local: Local) -> None:
        local.popen = subprocess.Popen([sys.executable, *self.local_args], stdin=subprocess.DEVNULL)
        local.address = f"{socket.gethostname()}/{local.popen.pid}".encode()
        local.ready, local.restart_at = False, None

    def reap(self) -> None:
        """After SIGCHLD: note local workers that exited, and plan their restarts."""
        now = time.monotonic()
        for local in self.local:
            if local.popen is None or (code := local.popen.poll()) is None:
                continue
            how = f"signal {-code}" if code < 0 else f"code {code}"
            if local.address in self.workers:
                self.forget(local.address, f"exited ({how})")
            if local.ready:
                pause = 0.0
            else:  # it never registered: a start-up crash, so wait longer each time
                pause = min(0.5 * 2**local.failures, RESTART_PAUSE_MAX)
                local.failures += 1
            log.warning(
                "local worker pid %d exited (%s): restarting in %.1f s", local.popen.pid, how, pause
            )
            local.popen, local.restart_at = None, now + pause
        self.restart_local()

    def restart_local(self) -> None:
        """Start the local workers whose pause is over; plan the next tick."""
        now = time.monotonic()
        for local in self.local:
            if local.popen is None and local.restart_at is not None and now >= local.restart_at:
                self.spawn(local)
        pending = [local.restart_at for local in self.local if local.popen is None]
        self.next_tick = min([self.next_heartbeat, *pending])

    def stop_local(self) -> None:
        running = [local.popen for local in self.local if local.popen]
        self.local = []  # nothing is restarted from here on
        for popen in running:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for popen in running:
            try:
                popen.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("local worker pid %d did not exit: killed", popen.pid)
                popen.kill()
                popen.wait()


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """server.py's flags for MDP workers."""
    group = parser.add_argument_group(
        "worker processes (MDP)",
        "Requests go to Majordomo workers (worker.py, or any MDP/0.1 or 0.2 worker) "
        "instead of threads: one request per worker at a time.",
    )
    group.add_argument(
        "--backend",
        metavar="ENDPOINT",
        help="accept MDP workers here (e.g. tcp://127.0.0.1:5556); beyond loopback only "
        "with CURVE (--curve-secret and --curve-workers)",
    )
    group.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="start N local worker.py processes running the same --handler, on a private "
        "ipc:// endpoint, and restart any that exits or hangs",
    )
    group.add_argument(
        "--service",
        default=DEFAULT_SERVICE,
        metavar="NAME",
        help=f"the MDP service that clients' requests go to (default {DEFAULT_SERVICE})",
    )
    group.add_argument(
        "--worker-heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help=f"heartbeat interval with workers; an idle worker silent for 3 is dead "
        f"(default {DEFAULT_HEARTBEAT})",
    )
    group.add_argument(
        "--curve-workers",
        metavar="DIR",
        help="with --curve-secret: accept only the workers whose public key files are in DIR",
    )


def check_fleet_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.processes < 0:
        parser.error("--processes must be 0 or more")
    if args.backend or args.processes:
        if args.workers is not None:
            parser.error(
                "--workers is for threads in this process; with --backend or "
                "--processes, requests go to worker processes"
            )
        if not args.worker_heartbeat >= 0.01:
            parser.error("--worker-heartbeat must be at least 0.01 seconds")
        if not 1 <= len(args.service.encode()) <= 255:
            parser.error("--service must be 1 to 255 bytes")
