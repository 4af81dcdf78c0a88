#!/usr/bin/env python3
"""A ZeroMQ request-reply server: one ROUTER socket, one poll loop, a pool of workers.

Any client answers: client.py, a plain DEALER, a REQ socket. Each reply goes back to
the connection its request came from. The handler runs on worker threads (or, for an
`async def` handler, as tasks on one asyncio event loop), so the poll loop never waits
for it and a slow request never holds up the others. To use more cores or machines,
the server becomes a Majordomo (MDP) broker for worker processes (fleet.py, worker.py).

    python server.py                                  # tcp://127.0.0.1:5555, 16 workers
    python server.py --handler examples.echo:handle   # serve your own function
    python server.py --workers 0 --quiet              # handler inline: fastest for cheap ones
    python server.py --processes 2 --handler examples.cpu:handle   # one process a core

The handler is one plain function, bytes in and bytes out (see handlers.py and
examples/); nothing in this file needs to change to serve your own.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import queue
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import zmq

import handlers
import wire
from fleet import Fleet, add_fleet_arguments, check_fleet_arguments
from handlers import ERROR_PREFIX, Handler
from pools import inline, start_event_loop, start_threads
from scheduler import Scheduler

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

DEFAULT_BIND = "tcp://127.0.0.1:5555"
# Threads that wait (on a database, a disk, another service) cost next to nothing, so
# the default is generous; CPU-bound handlers gain nothing past the core count (GIL).
DEFAULT_WORKERS = 16
# An async handler's request is a task on one event loop, a few KB each: a thousand
# waiting at once cost less than a thread pool of 16.
DEFAULT_ASYNC_WORKERS = 1000
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_HEARTBEAT = 1.0  # seconds: a frozen or vanished client is dropped within 3 to 4
MAX_FRAMES = 16  # routing id + envelope + body; real envelopes have 0 to 4 frames
POLL_INTERVAL_MS = 1000  # a safety net only: workers and signals wake the poll at once
CLOSE_LINGER_MS = 1000  # how long replies still queued at exit may take to leave
LOG_BODY_BYTES = 60
MAX_WAITING = 64  # requests one client may have waiting while every worker is busy
MAX_BACKLOG = 10_000  # requests taken and not yet answered, before the loop stops reading
READ_BATCH = 32  # requests read per wake-up at most, so replies never wait long behind reads
ZAP_DOMAIN = "global"  # the authenticator's keys are looked up under the socket's domain
WORKERS_ZAP_DOMAIN = "workers"  # the backend's: worker keys are not client keys

log = logging.getLogger("server")


def split_request(frames: list[bytes]) -> tuple[list[bytes], bytes] | None:
    """Split [routing_id, *envelope, body] into (route, body); None if malformed.

    The route (routing id and envelope) goes back unchanged in front of the reply, so
    every client kind is answered: a DEALER's envelope is empty, REQ's is [b""], and
    client.py's is [token, b""]. A non-empty envelope must end in that empty delimiter.
    """
    if not 2 <= len(frames) <= MAX_FRAMES:
        return None
    *route, body = frames
    if len(route) > 1 and route[-1]:
        return None
    return route, body


def printable(data: bytes, limit: int = LOG_BODY_BYTES) -> str:
    """Bytes as one line of log text: escaped where not plain text, cut at limit."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    if len(data) > limit:
        text += f"... ({len(data)} bytes)"
    return text


def send_reply(frontend: zmq.Socket, route: list[bytes], reply: bytes) -> str | None:
    """Send without ever blocking the loop; return why the reply was dropped, or None."""
    try:
        wire.send(frontend, [*route, reply])
    except zmq.Again:
        return "its queue is full"
    except zmq.ZMQError as exc:
        return "client is gone" if exc.errno == zmq.EHOSTUNREACH else exc.strerror
    return None


def receive_request(frontend: zmq.Socket, quiet: bool) -> tuple[list[bytes], bytes] | None:
    """Read one waiting request as (route, body); answer a malformed one with an error."""
    # Past MAX_FRAMES the rest is read but not kept: split_request() refuses the message.
    frames, count = wire.receive(frontend, MAX_FRAMES + 1)
    request = split_request(frames)
    if request is None:
        shape = f"{count} frames" if count <= MAX_FRAMES else f"over {MAX_FRAMES} frames"
        log.warning(
            "malformed request from %s (%s): answered with an error", printable(frames[0]), shape
        )
        send_reply(frontend, frames[:1], ERROR_PREFIX + b"malformed request")
    elif not quiet:
        route, body = request
        print(f"Received request from {printable(route[0])}: {printable(body)}", flush=True)
    return request


def serve(
    frontend: zmq.Socket, handler: Handler, workers: int, quiet: bool, fleet: Fleet | None = None
) -> None:
    """Answer requests on a bound ROUTER until SIGINT or SIGTERM; then finish those taken.

    Only this thread touches the frontend (ZeroMQ sockets are not thread safe). Requests
    go to the workers (threads, tasks for an async handler, or with a fleet MDP worker
    processes) as the scheduler picks them: any free worker takes the next request, and
    while every worker is busy the waiting clients take turns. Threads and tasks put
    replies on a queue and write a byte to a socketpair that the poller watches beside
    the frontend; signals write to it too. MDP workers answer on the fleet's backend.

    Bounds: a client may have MAX_WAITING requests waiting; past that its requests are
    answered at once with an error. When MAX_BACKLOG requests are taken and unanswered,
    the loop stops reading until some are answered, and ZeroMQ's queues push back.
    """
    finished: queue.SimpleQueue[tuple[int, list[bytes], bytes]] = queue.SimpleQueue()
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    wake_requested = threading.Event()
    slots = () if fleet else range(workers)  # MDP workers add themselves as they register
    scheduler: Scheduler = Scheduler(slots, MAX_WAITING)
    incidents = Incidents()
    counts: Counter[str] = Counter()  # replies answered, error replies, dropped replies
    next_report = 0.0
    signalled: list[str] = []  # signals the loop has yet to act on, by name
    stopped_by = ""
    in_flight = 0

    def done(slot: int, route: list[bytes], reply: bytes) -> None:
        finished.put((slot, route, reply))
        # One wake-up serves every reply queued before the loop drains: the loop clears
        # the flag before draining, so a reply put after the drain always sees it clear.
        if not wake_requested.is_set():
            wake_requested.set()
            # A full buffer means wake-ups are already pending: the loop will wake.
            with contextlib.suppress(BlockingIOError):
                wake_writer.send(b"\0")

    def deliver(route: list[bytes], reply: bytes) -> None:
        if reason := send_reply(frontend, route, reply):
            incidents.add(f"dropped a reply to {printable(route[0])}: {reason}")
            counts["dropped"] += 1
        else:
            counts["errors" if reply.startswith(ERROR_PREFIX) else "answered"] += 1
            if not quiet:
                print(f"Sent reply to {printable(route[0])}", flush=True)

    def from_worker(route: list[bytes], frames: list[bytes], final: bool) -> None:
        nonlocal in_flight
        # A reply of several frames keeps them: all but the last travel as envelope.
        deliver(route + frames[:-1] if len(frames) > 1 else route, frames[-1])
        in_flight -= final

    def summary() -> str:
        if fleet:
            workers_now = f"{len(fleet.workers)} connected, {fleet.busy()} busy"
        elif workers:
            kind = "tasks" if handlers.is_async(handler) else "threads"
            workers_now = f"{workers} {kind}, {workers - len(scheduler.free)} busy"
        else:
            workers_now = "none (inline)"
        return (
            f"workers: {workers_now}; requests: {scheduler.queued} waiting, "
            f"{in_flight - scheduler.queued} running; since start: {counts['answered']} "
            f"answered, {counts['errors']} error replies, {counts['dropped']} dropped"
        )

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopped_by
        name = signal.Signals(signum).name
        if signum not in (signal.SIGINT, signal.SIGTERM):
            signalled.append(name)  # SIGUSR1, SIGCHLD: the loop acts on them
        elif stopped_by:
            log.warning("%s again: exiting now, %d replies abandoned", name, in_flight)
            os._exit(1)
        else:
            stopped_by = name

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
    answer_inline = None
    if fleet:
        signal.signal(signal.SIGCHLD, on_signal)
        fleet.attach(scheduler, from_worker, incidents.add)
        submit, stop_workers = fleet.start, fleet.stop
    elif not workers:
        answer_inline = inline(handler)
    elif handlers.is_async(handler):
        submit, stop_workers = start_event_loop(handler, done)
    else:
        submit, stop_workers = start_threads(handler, workers, done)

    # libzmq retries a failed accept (out of file descriptors, say) without a word; its
    # monitor tells. Read once a second, not polled: polling a second ZeroMQ socket would
    # cost every request a little.
    monitor = frontend.get_monitor_socket(zmq.EVENT_ACCEPT_FAILED)
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(wake_reader, zmq.POLLIN)
    wake_fd = wake_reader.fileno()
    if fleet:
        poller.register(fleet.backend, zmq.POLLIN)
    print(f"Listening on {frontend.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)

    accepting = reading = True
    while accepting or in_flight:
        timeout = fleet.wait_ms(POLL_INTERVAL_MS) if fleet else POLL_INTERVAL_MS
        ready = dict(poller.poll(timeout))

        if wake_fd in ready:
            with contextlib.suppress(BlockingIOError):
                wake_reader.recv(4096)
            wake_requested.clear()
        while not finished.empty():
            slot, route, reply = finished.get()
            in_flight -= 1
            deliver(route, reply)
            scheduler.release(slot)
        while signalled:
            if signalled.pop() == "SIGUSR1":
                log.info("%s", summary())
            elif fleet:
                fleet.reap()  # SIGCHLD: a local worker process exited
        if fleet:
            if fleet.backend in ready:
                fleet.read()
            fleet.tick()
        # Workers just freed take waiting requests now, before the loop reads more.
        if started := scheduler.dispatch():
            submit(started)

        if time.monotonic() >= next_report:
            while monitor.poll(0):
                # [event (uint16), value (uint32)], endpoint: parsed here, as pyzmq's own
                # parser lives in a module that imports asyncio (8.6 MB more to carry).
                event, _endpoint = monitor.recv_multipart()
                errno = int.from_bytes(event[2:6], sys.byteorder)
                incidents.add(f"cannot accept a connection: {os.strerror(errno)} (see ulimit -n)")
            incidents.report_repeats()
            next_report = time.monotonic() + 1

        if stopped_by and accepting:
            accepting = False
            log.info("%s: stopped taking requests; finishing %d in flight", stopped_by, in_flight)
        if reading != (accepting and in_flight < MAX_BACKLOG):
            reading = not reading
            poller.register(frontend, zmq.POLLIN if reading else 0)  # 0 unregisters

        # Read what is waiting, up to a batch: one hand-over to the workers serves it all.
        for _ in range(READ_BATCH if reading and frontend in ready else 0):
            if request := receive_request(frontend, quiet):
                route, body = request
                if answer_inline:
                    deliver(route, answer_inline(body))
                elif scheduler.add(route[0], request):
                    in_flight += 1
                else:
                    deliver(route, ERROR_PREFIX + b"too many requests from this client")
            if in_flight >= MAX_BACKLOG or not wire.readable(frontend):
                break
        # A loop: a worker found gone as a request is sent to it puts that request back.
        while started := scheduler.dispatch():
            submit(started)
        if fleet and not accepting and scheduler.queued and not fleet.can_serve():
            # Shutting down with no worker left to run them: waiting would be forever.
            for route, _body, *_ in scheduler.drain():
                deliver(route, ERROR_PREFIX + b"no worker available")
                in_flight -= 1

    incidents.report_repeats(final=True)
    if fleet or workers:
        stop_workers()
    log.info("%s", summary())
    signal.set_wakeup_fd(-1)
    wake_reader.close()
    wake_writer.close()
    frontend.disable_monitor()
    monitor.close()


class Incidents:
    """Problems that may come in floods (dropped replies, failed accepts): the first of a
    kind is logged at once, its repeats in the following second as one line with a count."""

    def __init__(self) -> None:
        self.repeats: dict[str, list] = {}  # what -> [when first logged, repeats since]

    def add(self, what: str) -> None:
        if seen := self.repeats.get(what):
            seen[1] += 1
        else:
            log.warning("%s", what)
            self.repeats[what] = [time.monotonic(), 0]

    def report_repeats(self, final: bool = False) -> None:
        """Log the repeats of each kind first seen a second ago or more (all, if final)."""
        now = time.monotonic()
        for what, (since, count) in list(self.repeats.items()):
            if final or now - since >= 1:
                if count:
                    log.warning("%s (%d more times)", what, count)
                    self.repeats[what] = [now, 0]  # a flood goes on: one line a second
                else:
                    del self.repeats[what]  # quiet for a second: the next is logged at once


def start_authenticator(context: zmq.Context) -> ThreadAuthenticator:
    """pyzmq's ZAP handler: without one, any peer that knows our public key gets in."""
    # Imported only here: zmq.auth brings asyncio and ssl, 9 MB a server need not carry.
    from zmq.auth.thread import ThreadAuthenticator

    authenticator = ThreadAuthenticator(context, log=log.getChild("auth"))
    authenticator.start()
    return authenticator


def enable_curve(
    authenticator: ThreadAuthenticator, router: zmq.Socket, secret_file: str, keys_dir: str
) -> None:
    """Ironhouse: encrypt every connection to router, and accept only the peers whose
    public keys are in keys_dir (as make_keys.py writes them). Others never get in."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(secret_file)
    # Keys are looked up by the socket's ZAP domain: clients and workers have their own.
    authenticator.configure_curve(
        domain=router.getsockopt_string(zmq.ZAP_DOMAIN), location=keys_dir
    )
    router.setsockopt(zmq.CURVE_SECRETKEY, secret)
    router.setsockopt(zmq.CURVE_PUBLICKEY, public)
    router.setsockopt(zmq.CURVE_SERVER, 1)


def set_router_options(
    router: zmq.Socket, args: argparse.Namespace, domain: str, heartbeat: float
) -> None:
    # Turn silent drops (peer gone, queue full) into errors that the loop logs.
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # Cap each frame, or a peer announcing a huge frame makes libzmq reserve it.
    router.setsockopt(zmq.MAXMSGSIZE, args.max_message_size)
    # Bounded, so that exit never hangs on a peer that stopped reading.
    router.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
    # Any ZAP domain makes libzmq refuse peers speaking the unversioned ZMTP 1.0, which
    # it would otherwise parse out of any TCP client's bytes (a port scanner's, say).
    router.setsockopt_string(zmq.ZAP_DOMAIN, domain)
    # Ping every peer; drop one that stays silent (frozen, or its network gone) for
    # three intervals, or that has not finished its handshake by then. libzmq's I/O
    # thread answers these pings, so a peer busy in Python code is not dropped.
    interval_ms = round(heartbeat * 1000)
    router.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
    router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * interval_ms)
    router.setsockopt(zmq.HANDSHAKE_IVL, 3 * interval_ms)


def bind_backend(
    context: zmq.Context, args: argparse.Namespace, cleanup: contextlib.ExitStack, authenticator
) -> Fleet | None:
    """The ROUTER that MDP workers connect to, bound where --backend and --processes say;
    None if neither is given. Prints where remote workers connect."""
    if not (args.backend or args.processes):
        return None
    backend = cleanup.enter_context(context.socket(zmq.ROUTER))
    set_router_options(backend, args, WORKERS_ZAP_DOMAIN, args.worker_heartbeat)
    # A worker that reconnects with its id (worker.py keeps host/pid) takes it over at
    # once, instead of being ignored while its old connection lingers.
    backend.setsockopt(zmq.ROUTER_HANDOVER, 1)
    if args.curve_workers:
        enable_curve(authenticator, backend, args.curve_secret, args.curve_workers)
    private = ""
    if args.processes:
        # mkdtemp makes a directory only this user can open: the socket in it is private.
        directory = tempfile.mkdtemp(prefix="zmq-hello-")
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        private = f"ipc://{directory}/workers"
        backend.bind(private)
    if args.backend:
        backend.bind(args.backend)
        print(f"Workers connect to {backend.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    worker_args = ["--handler", args.handler_spec] if args.handler_spec else []
    if args.work_time is not None:
        worker_args += ["--work-time", str(args.work_time)]
    service = args.service.encode()
    return Fleet(backend, service, args.worker_heartbeat, args.processes, private, worker_args)


def is_local(endpoint: str) -> bool:
    """Whether only this machine can reach endpoint (loopback TCP, ipc, inproc)."""
    transport, _, address = endpoint.partition("://")
    if transport != "tcp":
        return transport in ("ipc", "inproc")
    host = address.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number 0 or more, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        description="A ZeroMQ ROUTER server: answers each client on its own connection.",
        epilog="SIGINT or SIGTERM: stop taking requests, finish those taken, exit 0. "
        "A second signal exits at once.",
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
        "--curve-secret",
        metavar="FILE",
        help="encrypt with CURVE using this server secret key file (from make_keys.py); "
        "needs --curve-clients",
    )
    parser.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="accept only the clients whose public key files are in DIR",
    )
    add_fleet_arguments(parser)
    args = parser.parse_args(argv)
    if bool(args.curve_secret) != bool(args.curve_clients):
        parser.error("--curve-secret and --curve-clients go together")
    if args.curve_secret:
        import zmq.auth

        if not os.path.isdir(args.curve_clients):
            parser.error(f"--curve-clients {args.curve_clients}: not a directory")
        try:
            if zmq.auth.load_certificate(args.curve_secret)[1] is None:
                parser.error(f"{args.curve_secret} holds no secret key (use NAME.key_secret)")
        except (OSError, ValueError) as exc:
            parser.error(f"{args.curve_secret}: {exc}")
    if not args.heartbeat >= 0.01:
        parser.error("--heartbeat must be at least 0.01 seconds")
    check_fleet_arguments(parser, args)
    if args.curve_workers and not (args.curve_secret and args.backend):
        parser.error("--curve-workers goes with --curve-secret and --backend")
    if args.backend and args.curve_secret and not args.curve_workers:
        parser.error("--curve-secret with --backend needs --curve-workers")
    if args.curve_workers and not os.path.isdir(args.curve_workers):
        parser.error(f"--curve-workers {args.curve_workers}: not a directory")
    if args.backend and not args.curve_workers and not is_local(args.backend):
        parser.error(
            f"--backend {args.backend} is reachable beyond this machine: anyone "
            "could serve (and read) every request; use CURVE (--curve-secret, "
            "--curve-workers) or a loopback address"
        )
    if args.curve_workers and args.processes:
        parser.error(
            "--processes cannot share a CURVE backend (its workers have no keys); "
            "start local workers with worker.py --curve-secret instead"
        )
    if args.max_message_size < 1024:
        parser.error("--max-message-size must be at least 1024 (ZeroMQ's handshake needs room)")
    args.handler_spec = args.handler
    args.handler = handlers.from_arguments(parser, args)
    if args.workers is None and not (args.backend or args.processes):
        args.workers = DEFAULT_ASYNC_WORKERS if handlers.is_async(args.handler) else DEFAULT_WORKERS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s server: %(message)s")

    # Each connected client holds a descriptor; take all that the system allows, since
    # the usual soft limit of 1024 would cap the server near a thousand clients.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with zmq.Context() as context, context.socket(zmq.ROUTER) as frontend:
        set_router_options(frontend, args, ZAP_DOMAIN, args.heartbeat)
        with contextlib.ExitStack() as cleanup:
            authenticator = None
            if args.curve_secret:
                authenticator = start_authenticator(context)
                cleanup.callback(authenticator.stop)
                enable_curve(authenticator, frontend, args.curve_secret, args.curve_clients)
            try:
                fleet = bind_backend(context, args, cleanup, authenticator)
            except zmq.ZMQError as exc:
                print(
                    f"server.py: cannot listen for workers on {args.backend}: {exc.strerror}",
                    file=sys.stderr,
                )
                return 1
            try:
                frontend.bind(args.bind)
            except zmq.ZMQError as exc:
                print(f"server.py: cannot listen on {args.bind}: {exc.strerror}", file=sys.stderr)
                return 1
            endpoint = frontend.getsockopt_string(zmq.LAST_ENDPOINT)
            if not args.curve_secret and not is_local(endpoint):
                log.warning(
                    "listening on %s beyond this machine without CURVE: anyone who can reach "
                    "it may send requests, and read and forge the traffic (see --curve-secret)",
                    endpoint,
                )
            serve(frontend, args.handler, args.workers, args.quiet, fleet)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while starting, before serve() handles signals
        sys.exit(130)
