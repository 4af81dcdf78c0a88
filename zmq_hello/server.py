"""The server program: its poll loop (Server.serve()), its flags, and run(), which
server.py, `python -m zmq_hello.server` and the zmq-hello-server command all start.

A ZeroMQ request-reply server: one ROUTER socket, one poll loop, a pool of workers.
Any client answers: client.py, a plain DEALER, a REQ socket. Each reply goes back to
the connection its request came from. The handler runs on worker threads (or, for an
`async def` handler, as tasks on one asyncio event loop), so the poll loop never waits
for it and a slow request never holds up the others. To use more cores or machines,
the server becomes a Majordomo (MDP) broker for worker processes (zmq_hello.worker).

    python server.py                                  # tcp://127.0.0.1:5555, 16 workers
    python server.py --handler examples.echo:handle   # serve your own function
    python server.py --workers 0 --quiet              # handler inline: fastest for cheap ones
    python server.py --processes 2 --handler examples.cpu:handle   # one process a core

The poll loop is Server.serve() below; where the handler runs (threads, an event loop,
inline, MDP workers) is a Runner (runners.py, broker.py), behind one interface. What
frames that are not a plain request mean, and every other Majordomo rule, is decided
by majordomo.py, which does no I/O: this loop and the broker only carry it out.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import NoReturn

import zmq

from zmq_hello import handlers, majordomo, wire
from zmq_hello.broker import Broker
from zmq_hello.cli import (
    MIN_INTERVAL,
    OneLineErrorParser,
    add_metrics_argument,
    count,
    import_metrics,
    program,
    run_program,
)
from zmq_hello.envelope import (
    ERROR_PREFIX,
    MAX_FRAMES,
    Ending,
    Expired,
    Reply,
    Request,
    Unanswered,
    printable,
    split_request,
)
from zmq_hello.incidents import Incidents
from zmq_hello.majordomo import NO_WORKER, NO_WORKER_REPLY, Handled, Majordomo
from zmq_hello.output import say
from zmq_hello.runners import Inline, Runner, Tasks, Threads, Waker
from zmq_hello.scheduler import Limits
from zmq_hello.server_options import (
    add_security_arguments,
    add_worker_arguments,
    check_security,
    check_workers,
)
from zmq_hello.sockets import (
    CLIENTS_ZAP_DOMAIN,
    MAX_QUEUED_REPLIES,
    WORKERS_ZAP_DOMAIN,
    bind,
    enable_curve,
    is_local,
    set_router_options,
    start_authenticator,
)
from zmq_hello.supervisor import SOCKET_NAME, Supervisor, private_directory
from zmq_hello.tally import ANSWERED, DROPPED, ERROR, EXPIRED, UNANSWERED, Tally

DEFAULT_BIND = "tcp://127.0.0.1:5555"
# Threads that wait (on a database, a disk, another service) cost next to nothing, so
# the default is generous; CPU-bound handlers gain nothing past the core count (GIL).
DEFAULT_WORKERS = 16
# An async handler's request is a task on one event loop, a few KB each: a thousand
# waiting at once cost less than a thread pool of 16.
DEFAULT_ASYNC_WORKERS = 1000
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_HEARTBEAT = 1.0  # seconds: a frozen or vanished client is dropped within 3 to 4
DEFAULT_GRACEFUL_TIMEOUT = 30.0  # seconds, as systemd's and Kubernetes' own stop grace
# Signals that stop the server: a terminal closing (SIGHUP) is a stop like any other.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
BACKSTOP_SECONDS = 0.5  # past the deadline, for a loop stuck in an inline handler
POLL_INTERVAL_MS = 1000  # a safety net only: workers and signals wake the poll at once
# Requests that may wait while every worker is busy: one client's for one service, one
# client's for all services, everyone's. Past them a request is refused at once.
LIMITS = Limits(per_queue=64, per_client=256, total=10_000)

# Services counted apart in the summary's expired requests; the rest count as one.
MAX_EXPIRED_NAMES = 100
OTHER_SERVICES = b"other services"

log = logging.getLogger("server")
monotonic = time.monotonic


class Server:
    """Answers requests on a bound ROUTER until a stop signal, then finishes those taken,
    waiting at most graceful_timeout seconds for them. Only this thread touches the
    frontend (ZeroMQ sockets are not thread safe).

    The frontend is read as fast as requests come, whatever is in flight: what cannot
    wait (a client's share of LIMITS, or all of it, taken) is refused at once, so no
    client's backlog ever stops the loop from reading another's request (and libzmq's
    queues, which have no high-water mark here, never hold more than a moment's worth).
    """

    def __init__(
        self,
        frontend: zmq.Socket,
        runner: Runner,
        waker: Waker,
        incidents: Incidents,
        quiet: bool,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        tally: Tally | None = None,
    ) -> None:
        """tally: where each request's outcome is counted by service, for --metrics."""
        self.frontend = frontend
        self.runner = runner
        self.waker = waker
        self.incidents = incidents
        self.quiet = quiet
        self.graceful_timeout = graceful_timeout
        self.in_flight = 0  # requests taken and not yet answered: this loop counts them
        self.counts: Counter[str] = Counter()  # replies answered, error, dropped; unanswered
        self.tally = tally
        self.expired: Counter[bytes] = Counter()  # requests past their deadline, by service
        self.stopped_by = ""  # the signal that asked the server to stop
        self.deadline = float("inf")  # when requests still in flight are abandoned
        self.summary_requested = False
        self.metrics_url = ""  # where --metrics serves its page, announced with the endpoint

    def serve(self) -> int:
        """The poll loop; 0 once every request taken is answered, 1 if some were abandoned."""
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.waker.fd, zmq.POLLIN)
        for socket in self.runner.sockets:
            poller.register(socket, zmq.POLLIN)
        say(f"Listening on {self.frontend.getsockopt_string(zmq.LAST_ENDPOINT)}")
        if self.metrics_url:
            say(f"Metrics on {self.metrics_url}")

        accepting = True
        next_report = 0.0
        while accepting or self.in_flight:
            ready = dict(poller.poll(self.wait_ms()))
            if self.waker.fd in ready:
                self.waker.clear()
            # Replies first: workers they free take waiting requests before more are read.
            if endings := self.runner.collect(ready):
                self.end_all(endings)
            if time.monotonic() >= next_report or self.summary_requested:
                self.report()
                next_report = time.monotonic() + 1

            if self.stopped_by and accepting:
                accepting = False
                poller.unregister(self.frontend)
                log.info(
                    "%s: stopped taking requests; finishing %d in flight",
                    self.stopped_by,
                    self.in_flight,
                )
            if not accepting:
                # Waiting requests that no worker will ever run end now, before the deadline.
                if endings := self.runner.collect(None, stopping=True):
                    self.end_all(endings)
                if self.in_flight and time.monotonic() >= self.deadline:
                    return self.abandon()
            if accepting and self.frontend in ready:
                self.read_requests()

        signal.setitimer(signal.ITIMER_REAL, 0)  # the backstop: nothing is left to wait for
        self.incidents.report_repeats(final=True)
        self.runner.stop()
        log.info("%s", self.summary())
        return 0

    def wait_ms(self) -> int:
        """How long the poll may wait: until the runner has work, or the deadline."""
        longest = POLL_INTERVAL_MS
        if self.stopped_by:
            longest = max(0, min(longest, math.ceil((self.deadline - time.monotonic()) * 1000)))
        return self.runner.wait_ms(longest)

    def abandon(self) -> int:
        """The grace is over: what is still in flight is dropped, and workers ended."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        log.warning(
            "%d requests still in flight after %g s (--graceful-timeout): abandoned, exiting",
            self.in_flight,
            self.graceful_timeout if self.stopped_by != "SIGQUIT" else 0,
        )
        self.incidents.report_repeats(final=True)
        self.runner.stop(abandon=True)
        log.info("%s", self.summary())
        return 1

    def read_requests(self) -> None:
        """Read what is waiting, up to a batch: one hand-over to the workers serves it all."""
        frontend, submit, tally = self.frontend, self.runner.submit, self.tally
        for _ in range(wire.READ_BATCH):
            # Past MAX_FRAMES the rest is read but not kept: split_request() refuses it.
            frames, frame_count = wire.receive(frontend, MAX_FRAMES + 1)
            now = monotonic()
            request = split_request(frames, now) or self.not_plain(frames, frame_count, now)
            if request:
                if not self.quiet:
                    shown = f"{printable(request.client)}: {printable(request.body)}"
                    say(f"Received request from {shown}")
                self.in_flight += 1
                if (ended := submit(request)) is not None:  # inline, or refused: at once
                    if isinstance(ended, bytes):  # the body of its reply, from an inline handler
                        outcome = self.deliver(request.route, ended)
                    elif isinstance(ended, Reply):
                        outcome = self.deliver(ended.route, ended.body)
                    elif isinstance(ended, Expired):
                        outcome = self.count_expired(ended)
                    else:  # refused, and MDP has no error reply
                        outcome = self.unanswered(ended)
                    self.in_flight -= 1
                    if tally is not None:
                        tally.ended(request, outcome)
            if not wire.readable(frontend):
                break
        if endings := self.runner.collect(None):
            self.end_all(endings)

    def not_plain(self, frames: list[bytes], frame_count: int, now: float) -> Request | None:
        """An MDP client's request, or None once the front door has dealt with the frames
        (mmi. answered, a malformed plain request answered with an error, logged)."""
        serves = self.runner.serves
        outcome = majordomo.client_request(frames, frame_count, serves, MAX_FRAMES, now)
        if isinstance(outcome, Handled):
            if outcome.incident:
                self.incidents.record(outcome.incident)
            if outcome.reply:
                self.deliver(outcome.reply.route, outcome.reply.body)
            return None
        if not self.runner.accepts(outcome):
            ending = Unanswered(outcome, "no worker here serves it")
            self.unanswered(ending)
            if self.tally is not None:
                self.tally.ended(outcome, UNANSWERED)
            return None
        return outcome

    def unanswered(self, ending: Unanswered) -> str:
        """An MDP client's request refused with no reply (MDP has none for errors): logged,
        and counted. One that ends later (expired, its worker failed) has its own log."""
        self.incidents.record(majordomo.unanswered_incident(ending))
        self.counts[UNANSWERED] += 1
        return UNANSWERED

    def end_all(self, endings: list[Ending]) -> None:
        tally = self.tally
        for ending in endings:
            if isinstance(ending, Reply):
                route, body, final, request = ending
                outcome = self.deliver(route, body)
                if not final:
                    continue
                # A plain client's request that waited out --no-worker-timeout is told
                # so, and counted as expired (as an MDP client's is). By identity: a
                # handler's reply may say the same, and is an error.
                if body is NO_WORKER_REPLY:
                    outcome = EXPIRED
            elif isinstance(ending, Expired):
                request, outcome = ending.request, self.count_expired(ending)
            else:  # an MDP client's: counted; the core logged why
                self.counts[UNANSWERED] += 1
                request = ending.request
                outcome = EXPIRED if ending.why == NO_WORKER else UNANSWERED
            self.in_flight -= 1
            if tally is not None and request is not None:
                tally.ended(request, outcome)

    def count_expired(self, ending: Expired) -> str:
        """A request not run, its caller gone (or about to be): counted and logged."""
        # Clients name services: past a bound, new names are counted together.
        known = ending.service in self.expired or len(self.expired) < MAX_EXPIRED_NAMES
        self.expired[ending.service if known else OTHER_SERVICES] += 1
        self.incidents.add(
            "requests past their deadline",
            f"did not start a request for service '{printable(ending.service)}' from "
            f"{printable(ending.request.client)}: its caller's deadline is past, or too "
            "near for a handler to answer in time",
        )
        return EXPIRED

    def deliver(self, route: list[bytes], body: bytes) -> str:
        """Send without ever blocking the loop; a reply that cannot leave is logged. How
        it went: ANSWERED, ERROR (an error reply) or DROPPED."""
        try:
            wire.send_routed(self.frontend, route, body)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EAGAIN:
                reason = "its queue is full"
            else:
                reason = "client is gone" if exc.errno == zmq.EHOSTUNREACH else exc.strerror
            self.incidents.add(
                "dropped replies", f"dropped a reply to {printable(route[0])}: {reason}"
            )
            self.counts[DROPPED] += 1
            return DROPPED
        outcome = ERROR if body.startswith(ERROR_PREFIX) else ANSWERED
        self.counts[outcome] += 1
        if not self.quiet:
            say(f"Sent reply to {printable(route[0])}")
        return outcome

    def report(self) -> None:
        """Once a second: accept failures from the monitor, repeats of incidents, and the
        summary if SIGUSR1 asked for it."""
        if self.summary_requested:
            self.summary_requested = False
            log.info("%s", self.summary())
        while self.monitor.poll(0):
            # [event (uint16), value (uint32)], endpoint: parsed here, as pyzmq's own
            # parser lives in a module that imports asyncio (8.6 MB more to carry).
            event, _endpoint = self.monitor.recv_multipart()
            errno = int.from_bytes(event[2:6], sys.byteorder)
            why = f"cannot accept a connection: {os.strerror(errno)} (see ulimit -n)"
            self.incidents.add("failed accepts", why)
        self.incidents.report_repeats()

    def summary(self) -> str:
        waiting, workers = self.runner.status()
        expired = sum(self.expired.values())
        if expired:  # by service, the most first: the line stays short whatever the names
            shown = self.expired.most_common(majordomo.SERVICES_SHOWN)
            by_service = ", ".join(f"'{printable(name)}' {n}" for name, n in shown)
            expired_text = f"{expired} expired past their deadline ({by_service})"
        else:
            expired_text = "0 expired past their deadline"
        return (
            f"workers: {workers}; requests: {waiting} waiting, "
            f"{self.in_flight - waiting} running; since start: {self.counts['answered']} "
            f"answered, {self.counts['error']} error replies, {self.counts['dropped']} dropped, "
            f"{expired_text}, {self.counts['unanswered']} MDP requests unanswered"
        )

    def on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR1:
            self.summary_requested = True
        elif self.stopped_by or signum == signal.SIGALRM:
            # A second signal, or the backstop: the loop itself may be stuck (an inline
            # handler that never returns), so exit from here.
            why = "the --graceful-timeout backstop" if signum == signal.SIGALRM else f"{name} again"
            log.warning("%s: exiting now, %d replies abandoned", why, self.in_flight)
            os._exit(1)
        else:
            # SIGQUIT is the quick stop (as for gunicorn): nothing in flight is waited for.
            grace = 0.0 if signum == signal.SIGQUIT else self.graceful_timeout
            self.stopped_by = name
            self.deadline = time.monotonic() + grace
            # The loop abandons what is left at the deadline; the timer is for a loop
            # that cannot get there (an inline handler that never returns).
            signal.setitimer(signal.ITIMER_REAL, grace + BACKSTOP_SECONDS)

    @contextlib.contextmanager
    def signals_and_monitor(self) -> Iterator[None]:
        """While serving: signals handled (they wake the poll), accept failures watched."""
        for signum in STOP_SIGNALS + (signal.SIGUSR1, signal.SIGALRM):
            signal.signal(signum, self.on_signal)
        signal.set_wakeup_fd(self.waker.writer.fileno(), warn_on_full_buffer=False)
        # libzmq retries a failed accept (out of file descriptors, say) without a word; its
        # monitor tells. Read once a second, not polled: polling a second ZeroMQ socket
        # would cost every request a little.
        self.monitor = self.frontend.get_monitor_socket(zmq.EVENT_ACCEPT_FAILED)
        try:
            yield
        finally:
            signal.set_wakeup_fd(-1)
            self.frontend.disable_monitor()
            self.monitor.close()


def make_runner(
    args: argparse.Namespace,
    context: zmq.Context,
    cleanup: contextlib.ExitStack,
    waker: Waker,
    incidents: Incidents,
    authenticator: object,
) -> Runner:
    """Where the handler runs, as the flags say; with --backend or --processes, the
    backend is bound here (and where remote workers connect is printed)."""
    service = args.service.encode()
    if not (args.backend or args.processes):
        if not args.workers:
            return Inline(args.handler, service)
        pool = Tasks if handlers.is_async(args.handler) else Threads
        return pool(args.handler, args.workers, LIMITS, waker, service)
    backend = cleanup.enter_context(context.socket(zmq.ROUTER))
    # Workers' frames get their own cap: a reply may be far larger than a request.
    set_router_options(backend, args.max_reply_size, WORKERS_ZAP_DOMAIN, args.worker_heartbeat)
    if args.curve_workers:
        enable_curve(authenticator, backend, args.curve_secret, args.curve_workers)  # type: ignore[arg-type]
    supervisor = None
    if args.processes:
        directory = private_directory()
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        private = f"ipc://{directory / SOCKET_NAME}"
        backend.bind(private)
        # Compact MDP: the server's own workers, on a socket nobody else can reach.
        worker_args = ["--connect", private, "--service", args.service, "--compact"]
        worker_args += ["--heartbeat", str(args.worker_heartbeat)]
        worker_args += ["--max-reply-size", str(args.max_reply_size)]
        worker_args += ["--handler", args.handler_spec] if args.handler_spec else []
        if args.work_time is not None:
            worker_args += ["--work-time", str(args.work_time)]
        supervisor = Supervisor(args.processes, worker_args, incidents, args.max_requests)
    if args.backend:
        bind(backend, args.backend)
        say(f"Workers connect to {backend.getsockopt_string(zmq.LAST_ENDPOINT)}")
    # The address a worker gets for a request starts with this: text, and this run's own.
    key_prefix = secrets.token_hex(4).encode() + b"."
    core = Majordomo(service, args.worker_heartbeat, args.no_worker_timeout, LIMITS, key_prefix)
    if supervisor:
        supervisor.start()
    return Broker(backend, core, incidents, supervisor)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog=program(),
        description="A ZeroMQ ROUTER server: answers each client on its own connection.",
        epilog="SIGINT, SIGTERM or SIGHUP: stop taking requests, finish those taken (waiting "
        "at most --graceful-timeout), exit 0 (1 if some were abandoned). SIGQUIT: the same "
        "without waiting. A second signal exits at once. SIGUSR1: log a summary.",
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="ENDPOINT",
        help=f"where to listen (default {DEFAULT_BIND}; 'tcp://127.0.0.1:*' picks a free port, "
        "'tcp://*:5555' listens on every interface, without authentication or encryption)",
    )
    parser.add_argument(
        "--workers",
        type=count,
        metavar="N",
        help=f"how many handler calls run at once: worker threads for a plain handler "
        f"(default {DEFAULT_WORKERS}), tasks on one event loop for an async one (default "
        f"{DEFAULT_ASYNC_WORKERS}); 0 runs the handler inline in the poll loop, one request "
        "at a time, fastest for cheap handlers",
    )
    handlers.add_arguments(parser)
    parser.add_argument(
        "--quiet", action="store_true", help="do not print a line per request and reply"
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"largest frame accepted; a client sending a larger one is disconnected "
        f"(default {DEFAULT_MAX_MESSAGE_SIZE}, at least 1024)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help=f"ping each client this often; drop one silent for 3 intervals, or whose "
        f"handshake takes longer (default {DEFAULT_HEARTBEAT:g})",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="SECONDS",
        help=f"after a stop signal, wait at most this long for the requests in flight, then "
        f"abandon them and exit 1, local worker processes killed (default "
        f"{DEFAULT_GRACEFUL_TIMEOUT:g})",
    )
    add_metrics_argument(parser, "requests by service and outcome, their duration, queues, workers")
    add_security_arguments(parser)
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    check_security(parser, args)
    check_workers(parser, args)
    if not args.heartbeat >= MIN_INTERVAL:
        parser.error(f"--heartbeat must be at least {MIN_INTERVAL} seconds")
    if not args.graceful_timeout >= 0:
        parser.error("--graceful-timeout must be 0 or more seconds")
    if args.max_message_size < 1024:
        parser.error("--max-message-size must be at least 1024 (ZeroMQ's handshake needs room)")
    if args.metrics:  # checked before anything starts; without --metrics, never imported
        import_metrics(parser)
    args.handler_spec = args.handler
    args.handler = handlers.from_arguments(parser, args)
    if args.workers is None and not (args.backend or args.processes):
        args.workers = DEFAULT_ASYNC_WORKERS if handlers.is_async(args.handler) else DEFAULT_WORKERS
    return args


def serve_metrics(args: argparse.Namespace, runner: Runner, tally: Tally) -> str:
    """Start --metrics' page (a thread of prometheus-client's); its URL."""
    from zmq_hello import metrics

    supervisor = runner.supervisor if isinstance(runner, Broker) else None
    collector = metrics.ServerCollector(
        tally.snapshot, runner.loads, lambda: supervisor.restarts if supervisor else 0
    )
    return metrics.serve(args.metrics.host, args.metrics.port, collector)


def reply_queue(args: argparse.Namespace) -> int:
    """How many replies may wait to go to one client: room for all it may have accepted
    at once (every slot of the server's, and its share of waiting) twice over, since
    libzmq counts a queued message as gone only in batches of half this number: with
    less, a client with that many in flight may lose replies that come back together.
    At least MAX_QUEUED_REPLIES."""
    slots = args.workers or args.processes or 0  # remote workers: their own queues
    return max(MAX_QUEUED_REPLIES, 2 * (slots + LIMITS.per_client))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s server: %(message)s")

    # Each connected client holds a descriptor; take all that the system allows, since
    # the usual soft limit of 1024 would cap the server near a thousand clients.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with zmq.Context() as context, context.socket(zmq.ROUTER) as frontend:
        set_router_options(
            frontend, args.max_message_size, CLIENTS_ZAP_DOMAIN, args.heartbeat, reply_queue(args)
        )
        with contextlib.ExitStack() as cleanup:
            authenticator = None
            if args.curve_secret:
                authenticator = start_authenticator(context, log)
                cleanup.callback(authenticator.stop)
                enable_curve(authenticator, frontend, args.curve_secret, args.curve_clients)
            try:
                bind(frontend, args.bind)
            except zmq.ZMQError as exc:
                print(f"{program()}: cannot listen on {args.bind}: {exc.strerror}", file=sys.stderr)
                return 1
            waker = Waker()
            cleanup.callback(waker.close)
            incidents = Incidents(log)
            try:
                runner = make_runner(args, context, cleanup, waker, incidents, authenticator)
            except zmq.ZMQError as exc:
                print(
                    f"{program()}: cannot listen for workers on {args.backend}: {exc.strerror}",
                    file=sys.stderr,
                )
                return 1
            endpoint = frontend.getsockopt_string(zmq.LAST_ENDPOINT)
            if not args.curve_secret and not is_local(endpoint):
                log.warning(
                    "listening on %s beyond this machine without CURVE: anyone who can reach "
                    "it may send requests, and read and forge the traffic (see --curve-secret)",
                    endpoint,
                )
            tally = Tally(args.service.encode(), runner.serves) if args.metrics else None
            server = Server(
                frontend, runner, waker, incidents, args.quiet, args.graceful_timeout, tally
            )
            if tally is not None:
                try:
                    server.metrics_url = serve_metrics(args, runner, tally)
                except OSError as exc:
                    where = f"{args.metrics.host}:{args.metrics.port}"
                    print(f"{program()}: cannot serve metrics on {where}: {exc}", file=sys.stderr)
                    return 1
            with server.signals_and_monitor():
                return server.serve()


def run() -> NoReturn:
    """The program: exits with main()'s code (130 for Ctrl-C while starting)."""
    run_program(main)


if __name__ == "__main__":
    run()
