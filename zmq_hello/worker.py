"""The worker program: Worker, a Majordomo (MDP/0.2) worker that runs a handler for the
server (zmq_hello.server) or for any MDP broker, its flags, and run(), which worker.py,
`python -m zmq_hello.worker` (how the server starts its --processes) and the
zmq-hello-worker command all start.

It connects to the broker, registers for a service (READY), and answers its requests
one at a time (REQUEST, then FINAL), exchanging heartbeats while it waits for work.
Registered with several brokers, it keeps heartbeating the others while a handler runs
for one (from a thread of its own), so that none takes a slow worker for a dead one.

    python worker.py --connect tcp://server-host:5556 --handler examples.cpu:handle
    python server.py --backend 'tcp://*:5556' ...   # the broker side, on the server

A broker silent for 3 heartbeats (killed, restarted, network gone) is reconnected to on
a fresh socket, with a growing pause between tries (the guide's Paranoid Pirate): the
worker never gives up on its own. SIGINT or SIGTERM: finish the request in hand, send
its reply, tell the broker (DISCONNECT), exit 0; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NoReturn

import zmq

from zmq_hello import deadlines, handlers, mdp, wire
from zmq_hello.cli import (
    MIN_INTERVAL,
    OneLineErrorParser,
    add_metrics_argument,
    count,
    curve_keys,
    import_metrics,
    program,
    run_program,
)
from zmq_hello.deadlines import from_address
from zmq_hello.envelope import ERROR_PREFIX
from zmq_hello.handlers import Handler
from zmq_hello.output import say
from zmq_hello.sockets import CLOSE_LINGER_MS, DEFAULT_MAX_REPLY_SIZE, allow_ipv6
from zmq_hello.tally import DROPPED, EXPIRED, ServiceTally

DEFAULT_CONNECT = "tcp://localhost:5556"
RECONNECT_MAX = 32.0  # seconds: the longest pause between tries to reach the broker
# In place of a reply to a request whose caller gave up while it waited here.
PASSED_REPLY = ERROR_PREFIX + b"deadline passed before a worker started it"

log = logging.getLogger("worker")


@dataclass
class Settings:
    """What the command line asks of the worker."""

    endpoints: list[str]
    service: bytes
    handler: Handler
    heartbeat: float = mdp.DEFAULT_HEARTBEAT
    curve: tuple[bytes, bytes, bytes] | None = None
    parent: int | None = None  # exit when this process is gone
    max_requests: int = 0  # leave after answering this many; 0: never
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE  # the broker's cap on a frame from us
    compact: bool = False  # speak MDP/0.2 compact (mdp.py): a server.py's local worker
    tally: ServiceTally | None = None  # with --metrics: requests counted, handler timed


@dataclass(eq=False)  # by identity: a key of the poll's results
class Session:
    """One broker's MDP session: a socket of its own (RFC 18: one per broker), its
    heartbeats, and its reconnects with a growing pause (the guide's Paranoid Pirate)."""

    endpoint: str
    socket: zmq.Socket | None = None  # None between a broker's loss and the next try
    heard_by: float = 0.0  # the broker counts as gone if silent past this
    next_heartbeat: float = 0.0
    pause: float = 0.0  # before registering again, after a loss; it doubles
    retry_at: float = 0.0
    heard: bool = False  # the broker spoke since this registration
    registered_at: float = 0.0
    connections: int = 0  # made so far: each gets a routing id of its own


@dataclass
class Job:
    """A request taken from a broker, waiting its turn: the worker runs one at a time."""

    session: Session
    socket: zmq.Socket  # the registration it came on: the reply goes there or nowhere
    address: bytes
    body: list[bytes]
    # When its caller gives up (time.monotonic()), if server.py's broker said (in the
    # address: zmq_hello.deadlines); None if it did not, as other brokers never do.
    deadline: float | None = None


class Worker:
    """One worker process: a session with each broker given, until a signal, its
    --max-requests, or the end of its parent. Requests from all of them run one at a
    time, in the order they came."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopped_by = ""  # the signal that asked the worker to stop
        self.answered = 0
        # MDP/0.2 with the empty frame first, as majortomo; compact for a local worker.
        self.framing = mdp.COMPACT if settings.compact else mdp.Framing()
        # A request's first frames as the broker sends them, and a reply's: the hot path
        # compares and copies these rather than parsing and building each message.
        self.request_head = mdp.head(self.framing, mdp.REQUEST)
        self.final_head = mdp.head(self.framing, mdp.FINAL)
        self.patience = mdp.LIVENESS * settings.heartbeat  # silence that ends a session
        self.wake_at = 0.0  # the next timer, as tend() leaves it
        self.first_pause = min(1.0, settings.heartbeat)
        self.sessions = [
            Session(endpoint, pause=self.first_pause) for endpoint in settings.endpoints
        ]
        self.jobs: deque[Job] = deque()
        # Made in the main thread, which runs every handler: where their deadline goes.
        self.slot = deadlines.this_slot()
        # The sockets belong to the thread holding the baton: the main thread, but while
        # a handler runs, when the heartbeat thread may take it (beat()). Handed over
        # with a lock, a socket moves between threads behind the memory barrier that
        # libzmq asks for.
        self.baton = threading.Lock()
        self.running: Session | None = None  # whose request the handler is working on
        self.stopping = threading.Event()  # ends the heartbeat thread
        self.poll_items: list[tuple] | None = None  # for zmq_poll, made again as sockets change
        if handlers.is_async(settings.handler):
            import asyncio

            self.loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()
        else:
            self.loop = None

    def serve(self) -> int:
        """Register with every broker and answer their requests, reconnecting to any that
        goes away, until a signal or --max-requests (exit code 0)."""
        self.wake_reader, wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_fd = self.wake_reader.fileno()
        wake_writer.setblocking(False)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        # A signal wakes the poll at once: pyzmq would otherwise retry an interrupted poll.
        signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
        if self.settings.parent is not None:
            watch_parent(self.settings.parent, min(self.settings.heartbeat, 1.0))
        with zmq.Context() as context:
            self.baton.acquire()  # never released but for a handler: see run()
            heartbeats = threading.Thread(target=self.beat, name="heartbeats", daemon=True)
            heartbeats.start()
            try:
                for session in self.sessions:
                    self.register(context, session)
                while not self.stopped_by:
                    self.read(self.poll())
                    while self.jobs and not self.stopped_by:
                        self.run(self.jobs.popleft())
                        if len(self.sessions) > 1:  # what another broker sent meanwhile
                            self.read(self.readable())
                    self.tend(context)
                log.info("%s: told the brokers, exiting", self.stopped_by)
                for session in self.sessions:
                    if session.socket:
                        self.send(session.socket, mdp.DISCONNECT)
                return 0
            finally:
                # The baton is the main thread's (an exception from a handler takes it
                # back first): the heartbeat thread cannot touch a socket closed here.
                self.stopping.set()
                heartbeats.join()
                for session in self.sessions:
                    if session.socket:
                        session.socket.close()

    def register(self, context: zmq.Context, session: Session) -> None:
        """A fresh socket to the broker (nothing of the last one stays), and READY."""
        broker = session.socket = context.socket(zmq.DEALER)
        self.poll_items = None
        broker.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        # Readable in the broker's logs; server.py knows its --processes by it (host/pid).
        # Each new connection has an id of its own (host/pid/2, ...): a broker that still
        # holds the last one would ignore a new connection under the same id.
        routing_id = f"{socket.gethostname()}/{os.getpid()}"
        session.connections += 1
        if session.connections > 1:
            routing_id += f"/{session.connections}"
        broker.setsockopt(zmq.ROUTING_ID, routing_id.encode())
        if self.settings.curve:
            broker.curve_publickey, broker.curve_secretkey, broker.curve_serverkey = (
                self.settings.curve
            )
        allow_ipv6(broker, session.endpoint)
        broker.connect(session.endpoint)
        now = time.monotonic()
        session.heard_by = now + mdp.LIVENESS * self.settings.heartbeat
        session.next_heartbeat = now + self.settings.heartbeat
        session.heard = False
        session.registered_at = now
        self.send(broker, mdp.READY, self.settings.service)
        say(f"Worker ready for {self.settings.service.decode()} at {session.endpoint}")

    def poll(self) -> dict:
        """Wait for a broker's message or a signal, at most until the next timer."""
        if self.poll_items is None:
            sockets = [session.socket for session in self.sessions if session.socket]
            self.poll_items = [(item, zmq.POLLIN) for item in [self.wake_fd, *sockets]]
        timeout = max(0, round((self.wake_at - time.monotonic()) * 1000))
        ready = dict(zmq.zmq_poll(self.poll_items, timeout))
        if self.wake_fd in ready:
            with contextlib.suppress(BlockingIOError):
                self.wake_reader.recv(64)
        return ready

    def read(self, ready: dict) -> None:
        """Take what the brokers sent, a message from each that is ready: requests queue,
        in the order they came."""
        for session in self.sessions:
            broker = session.socket
            if broker and broker in ready:
                frames = wire.receive(broker)[0]
                # Whatever the broker sends shows it alive.
                session.heard_by = time.monotonic() + self.patience
                session.heard = True
                if request := mdp.carried(frames, self.request_head):  # the common message
                    address, body = request
                    self.jobs.append(Job(session, broker, address, body, from_address(address)))
                    continue
                try:
                    message = mdp.parse(frames)
                except mdp.ProtocolError as exc:
                    log.warning("ignored a bad message from %s: %s", session.endpoint, exc)
                    continue
                if message.command == mdp.REQUEST:
                    address, body = message.address, message.body
                    self.jobs.append(Job(session, broker, address, body, from_address(address)))
                elif message.command == mdp.DISCONNECT:
                    self.lose(session, "sent DISCONNECT", disconnected=True)

    def readable(self) -> dict:
        """The brokers' sockets with a message waiting, as poll() reports them."""
        sockets = [session.socket for session in self.sessions if session.socket]
        return {broker: zmq.POLLIN for broker in sockets if wire.readable(broker)}

    def run(self, job: Job) -> None:
        """Answer one request, to the registration it came on, if that is still there.
        The sockets are the heartbeat thread's while the handler runs (beat())."""
        self.running = job.session
        self.baton.release()
        try:
            started = time.monotonic()
            reply = self.answer(job.body, job.deadline)
            took = time.monotonic() - started
        finally:
            self.baton.acquire()
        sent = job.session.socket is job.socket
        if sent:
            # As in send(), but without a suppress() object per request.
            try:
                wire.send_routed(job.socket, [*self.final_head, job.address, b""], reply)
            except zmq.Again:
                sent = False
        else:
            log.warning(
                "dropped a reply to %s: that broker was lost while the request ran",
                job.session.endpoint,
            )
        if self.settings.tally is not None:
            self.count(self.settings.tally, reply, sent, took)
        if self.retiring():
            # Its reply is sent; the requests still waiting here never ran, and a broker
            # told DISCONNECT runs them elsewhere.
            self.jobs.clear()

    def count(self, tally: ServiceTally, reply: bytes, sent: bool, took: float) -> None:
        """A request's outcome, and its handler's time if it ran, for --metrics."""
        if not sent:
            tally.untimed[DROPPED] += 1
        elif reply is PASSED_REPLY:  # a handler's reply may say the same: an error
            tally.untimed[EXPIRED] += 1
        else:
            tally.timed(tally.errors if reply.startswith(ERROR_PREFIX) else tally.answered, took)

    def beat(self) -> None:
        """The heartbeat thread: while a handler runs, heartbeats to the brokers that
        count this worker idle, as they fall due, so that none takes a slow worker for a
        dead one (beat_busy()). It may touch the sockets only while it holds the baton,
        which the main thread lets go of just for the handler (run()). Waiting for the
        baton would wake this thread on every request, so it only tries when a heartbeat
        is due; holding the baton, the main thread keeps the timers itself (tend()), and
        this thread looks again a little later."""
        interval = self.settings.heartbeat
        while True:
            if self.baton.acquire(blocking=False):
                try:
                    self.beat_busy(time.monotonic())
                except Exception:  # never silently gone: the timers depend on it
                    log.exception("heartbeats while busy failed")
                finally:
                    self.baton.release()
            # Read without the baton: a stale value only wakes this thread too soon.
            now = time.monotonic()
            due = min((s.next_heartbeat for s in self.sessions if s.socket), default=now + interval)
            if self.stopping.wait(max(due - now, interval / 8)):
                return

    def beat_busy(self, now: float) -> None:
        """With the baton, while a handler runs: the heartbeats that are due, and the
        silence the handler causes forgiven.

        A broker whose request runs or waits here counts this worker busy: it gets no
        heartbeat: it needs none (MDP workers send none while busy).

        Nobody reads the brokers meanwhile, so their silence is not held against them
        when the handler is the cause: a broker that counts this worker busy may say
        nothing until it has the reply, and one whose messages wait unread has spoken.
        One that has sent nothing is lost as usual, once the handler ends (tend())."""
        heard_by = now + self.patience
        busy_for = {self.running, *(job.session for job in self.jobs)}
        for session in self.sessions:
            broker = session.socket
            if broker is None:  # lost: registered again by the main thread, after
                continue
            busy = session in busy_for
            if now >= session.next_heartbeat:
                if not busy:
                    self.send(broker, mdp.HEARTBEAT)
                session.next_heartbeat = now + self.settings.heartbeat
            if session.heard_by < heard_by and (busy or wire.readable(broker)):
                session.heard_by = heard_by

    def tend(self, context: zmq.Context) -> None:
        """Timers: heartbeats to each broker, the silent ones lost, the lost tried again."""
        now = time.monotonic()
        if now < self.wake_at:  # the common case, after each request: nothing is due
            return
        for session in self.sessions:
            if session.socket is None:
                if now >= session.retry_at:
                    self.register(context, session)
            elif now >= session.heard_by:
                self.lose(session, f"has been silent for {mdp.LIVENESS} heartbeats")
            elif now >= session.next_heartbeat:
                self.send(session.socket, mdp.HEARTBEAT)
                session.next_heartbeat = now + self.settings.heartbeat
        self.wake_at = min(
            min(s.next_heartbeat, s.heard_by) if s.socket else s.retry_at for s in self.sessions
        )

    def lose(self, session: Session, why: str, disconnected: bool = False) -> None:
        """A broker is gone: its socket closed, nothing left in it sent, a retry planned."""
        if session.socket:
            session.socket.close(linger=0)
        session.socket = None
        self.poll_items = None
        now = time.monotonic()
        if session.heard:  # it was there: it went away just now, so try again soon
            session.pause = self.first_pause
        pause = session.pause
        if disconnected and now - session.registered_at >= self.settings.heartbeat:
            # A broker that served us and then says DISCONNECT is up (restarted, say, and
            # meeting our heartbeats with no registration): register again at once. One
            # that refuses us straight after READY is tried again after the first pause
            # (it answered, so the pause starts over each time: a steady retry, no storm).
            pause = 0.0
        log.warning(
            "the broker at %s %s: registering again in %.1f s", session.endpoint, why, pause
        )
        session.retry_at = now + pause
        self.wake_at = min(self.wake_at, session.retry_at)
        if pause:
            session.pause = min(session.pause * 2, RECONNECT_MAX)

    def answer(self, body: list[bytes], deadline: float | None = None) -> bytes:
        """The handler's reply, or an error reply in place of one the broker would refuse.
        With a deadline the handler sees it (time_remaining()); once it has passed (a
        request that waited here behind another broker's), the handler is not run."""
        request = b"".join(body)
        if deadline is not None and deadline <= time.monotonic():
            log.warning("did not run a request whose caller's deadline had passed")
            return PASSED_REPLY
        # Set for every request, never cleared: only handlers run in this thread's context.
        self.slot.deadline = deadlines.NO_DEADLINE if deadline is None else deadline
        if self.loop is None:
            reply = handlers.call(self.settings.handler, request)
        else:
            reply = self.loop.run_until_complete(
                handlers.call_async(self.settings.handler, request)
            )
        self.answered += 1
        if len(reply) > self.settings.max_reply_size:
            # Sent as it is, the frame would make the broker drop this connection, and the
            # request would never be answered.
            log.warning(
                "a reply of %d bytes is over --max-reply-size %d: sent an error instead",
                len(reply),
                self.settings.max_reply_size,
            )
            return ERROR_PREFIX + b"reply too large"
        return reply

    def retiring(self) -> bool:
        """Whether to leave after the reply just sent: a signal came while the handler
        ran, or --max-requests is reached."""
        if self.settings.max_requests and self.answered >= self.settings.max_requests:
            self.stopped_by = self.stopped_by or f"answered {self.answered} (--max-requests)"
        return bool(self.stopped_by)

    def send(self, broker: zmq.Socket, command: str, *frames: bytes) -> None:
        # Never blocks: a DEALER whose connection failed (a refused CURVE handshake, say)
        # would wait forever. What cannot leave is lost; silence then ends the session.
        with contextlib.suppress(zmq.Again):
            wire.send(broker, mdp.build(self.framing, command, *frames))

    def on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stopped_by:
            log.warning("%s again: exiting now", name)
            os._exit(1)
        self.stopped_by = name


def watch_parent(parent: int, interval: float) -> None:
    """Exit within interval of the parent's end, whatever the worker is doing: a thread of
    its own, so that a handler busy for minutes is no reason to outlive the server."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("the server that started this worker (pid %d) is gone: exiting", parent)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog=program(),
        description="A Majordomo (MDP/0.2) worker: answers a broker's requests with a handler.",
        epilog="SIGINT, SIGTERM or SIGHUP: finish the request in hand, send its reply and "
        "DISCONNECT, exit 0. A second signal exits at once.",
    )
    parser.add_argument(
        "--connect",
        action="append",
        metavar="ENDPOINT",
        help=f"a broker's endpoint for workers (default {DEFAULT_CONNECT}); give it again to "
        "serve several brokers, one request at a time in all",
    )
    parser.add_argument(
        "--service",
        default=mdp.DEFAULT_SERVICE,
        metavar="NAME",
        help=f"the service to register for (default {mdp.DEFAULT_SERVICE})",
    )
    handlers.add_arguments(parser)
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=mdp.DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help=f"heartbeat interval, to each broker that counts the worker idle (while a "
        f"handler runs for another too); a broker counts as gone after {mdp.LIVENESS} silent "
        f"intervals (default {mdp.DEFAULT_HEARTBEAT})",
    )
    parser.add_argument(
        "--max-requests",
        type=count,
        default=0,
        metavar="N",
        help="after answering N requests, leave the broker (DISCONNECT) and exit 0, for a "
        "supervisor to start a fresh process: bounds a handler that leaks (default 0: never)",
    )
    parser.add_argument(
        "--max-reply-size",
        type=int,
        default=DEFAULT_MAX_REPLY_SIZE,
        metavar="BYTES",
        help="the broker's cap on a frame from a worker (server.py --max-reply-size); a "
        f"larger reply is sent as ERROR: reply too large (default {DEFAULT_MAX_REPLY_SIZE})",
    )
    parser.add_argument(
        "--curve-secret", metavar="FILE", help="encrypt with CURVE using this secret key file"
    )
    parser.add_argument("--curve-server", metavar="FILE", help="the broker's public key file")
    parser.add_argument(
        "--parent",
        type=int,
        metavar="PID",
        help="exit when process PID is gone, even in the middle of a request (server.py "
        "--processes passes its own)",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="speak MDP/0.2 compact, two frames fewer a message: only server.py (its "
        "--processes workers get this) understands it",
    )
    add_metrics_argument(parser, "requests by outcome, the handler's duration")
    args = parser.parse_args(argv)
    if args.metrics:  # checked before anything starts; without --metrics, never imported
        import_metrics(parser)
    args.connect = args.connect or [DEFAULT_CONNECT]
    if len(set(args.connect)) < len(args.connect):
        parser.error("--connect names the same broker twice")
    if not args.heartbeat >= MIN_INTERVAL:
        parser.error(f"--heartbeat must be at least {MIN_INTERVAL} seconds")
    if not 1 <= len(args.service.encode()) <= mdp.MAX_SERVICE_BYTES:
        parser.error(f"--service must be 1 to {mdp.MAX_SERVICE_BYTES} bytes")
    args.handler = handlers.from_arguments(parser, args)
    args.curve = curve_keys(parser, args.curve_secret, args.curve_server)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker: %(message)s")
    settings = Settings(
        args.connect,
        args.service.encode(),
        args.handler,
        args.heartbeat,
        args.curve,
        args.parent,
        args.max_requests,
        args.max_reply_size,
        args.compact,
    )
    if args.metrics:
        from zmq_hello import metrics

        settings.tally = ServiceTally()
        collector = metrics.WorkerCollector(settings.service, settings.tally)
        try:
            say(f"Metrics on {metrics.serve(args.metrics.host, args.metrics.port, collector)}")
        except OSError as exc:
            where = f"{args.metrics.host}:{args.metrics.port}"
            print(f"{program()}: cannot serve metrics on {where}: {exc}", file=sys.stderr)
            return 1
    try:
        return Worker(settings).serve()
    except zmq.ZMQError as exc:  # connect() refuses an endpoint it cannot parse
        endpoints = ", ".join(args.connect)
        print(f"{program()}: cannot connect to {endpoints}: {exc.strerror}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The program: exits with main()'s code (130 for Ctrl-C while starting)."""
    run_program(main)


if __name__ == "__main__":
    run()
