#!/usr/bin/env python3
"""A ZeroMQ request-reply server: one ROUTER socket, one poll loop, a pool of workers.

Any client answers: client.py, a plain DEALER, a REQ socket. Each reply goes back to
the connection its request came from. The handler runs on worker threads, so the poll
loop never waits for it and a slow request never holds up the others.

    python server.py                       # tcp://127.0.0.1:5555, 16 workers
    python server.py --workers 0 --quiet   # handler inline: fastest for cheap handlers

To serve something real, replace handle() below; nothing else needs to change.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

DEFAULT_BIND = "tcp://127.0.0.1:5555"
# Threads that wait (on a database, a disk, another service) cost next to nothing, so
# the default is generous; CPU-bound handlers gain nothing past the core count (GIL).
DEFAULT_WORKERS = 16
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_HEARTBEAT = 1.0  # seconds: a frozen or vanished client is dropped within 3 to 4
MAX_FRAMES = 16  # routing id + envelope + body; real envelopes have 0 to 4 frames
POLL_INTERVAL_MS = 1000  # a safety net only: workers and signals wake the poll at once
CLOSE_LINGER_MS = 1000  # how long replies still queued at exit may take to leave
LOG_BODY_BYTES = 60
MAX_WAITING = 64  # requests one client may have waiting past its share of the workers
MAX_BACKLOG = 10_000  # requests taken and not yet answered, before the loop stops reading
ERROR_PREFIX = b"ERROR: "
ZAP_DOMAIN = "global"  # the authenticator's keys are looked up under the socket's domain
SEND_MORE = int(zmq.SNDMORE | zmq.DONTWAIT)
SEND_LAST = int(zmq.DONTWAIT)

log = logging.getLogger("server")

work_time = 0.5  # seconds of simulated work in the default handler (--work-time)


def handle(request: bytes) -> bytes:
    """Answer one request with the reply body. Replace this function to serve real work.

    It runs on a worker thread (inline in the loop with --workers 0), so it may block,
    and several calls run at once. It must not touch the server's sockets. An exception
    is logged here and the client gets an error reply starting with "ERROR: ".
    """
    if work_time:  # sleep(0) is no free no-op: it waits out the kernel's timer slack
        time.sleep(work_time)  # simulated work, as in the tutorial
    return b"World"


def answer(request: bytes) -> bytes:
    """Call handle(), turning any failure into an error reply instead of silence."""
    try:
        reply = handle(request)
        if isinstance(reply, str):
            reply = reply.encode()
        if not isinstance(reply, (bytes, bytearray, memoryview)):
            raise TypeError(f"handle() returned {type(reply).__name__}, not bytes")
        return reply
    except Exception as exc:
        log.exception("handler failed on a request")
        return ERROR_PREFIX + f"handler failed ({type(exc).__name__})".encode()


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
    """Send without ever blocking the loop; return why the reply was dropped, or None.

    Only the first frame can fail (ROUTER_MANDATORY checks the route and the queue there);
    the rest of a routed message always goes through. Frame by frame with ready-made int
    flags costs a third of send_multipart, which type-checks parts and combines flag enums.
    """
    try:
        for frame in route:
            frontend.send(frame, SEND_MORE)
        frontend.send(reply, SEND_LAST)
    except zmq.Again:
        return "its queue is full"
    except zmq.ZMQError as exc:
        return "client is gone" if exc.errno == zmq.EHOSTUNREACH else exc.strerror
    return None


def receive_request(frontend: zmq.Socket, quiet: bool) -> tuple[list[bytes], bytes] | None:
    """Read one waiting request as (route, body); answer a malformed one with an error."""
    # Frame.more comes with the message; recv_multipart asks the socket for RCVMORE after
    # every frame instead, which costs 2.5 us of the loop's 20 us per request.
    frame = frontend.recv(copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = frontend.recv(copy=False)
        if len(frames) <= MAX_FRAMES:  # past that, read the rest but keep none of it
            frames.append(frame.bytes)
    request = split_request(frames)
    if request is None:
        shape = (
            f"{len(frames)} frames" if len(frames) <= MAX_FRAMES else f"over {MAX_FRAMES} frames"
        )
        log.warning(
            "malformed request from %s (%s): answered with an error", printable(frames[0]), shape
        )
        send_reply(frontend, frames[:1], ERROR_PREFIX + b"malformed request")
    elif not quiet:
        route, body = request
        print(f"Received request from {printable(route[0])}: {printable(body)}", flush=True)
    return request


def serve(frontend: zmq.Socket, workers: int, quiet: bool) -> None:
    """Answer requests on a bound ROUTER until SIGINT or SIGTERM; then finish those taken.

    Only this thread touches the frontend (ZeroMQ sockets are not thread safe). Requests
    go to the workers through one shared queue, so an idle worker always takes the next
    one. Workers put replies on another queue and write a byte to a socketpair that the
    poller watches beside the frontend; signals write to the same socketpair.

    Fairness: a client (a routing id) has at most half the workers at once; its further
    requests wait in its own queue, up to MAX_WAITING, and beyond that are answered at
    once with an error. When MAX_BACKLOG requests are taken and unanswered, the loop stops
    reading until some are answered, and ZeroMQ's queues push back on the senders.
    """
    jobs: queue.SimpleQueue[tuple[list[bytes], bytes] | None] = queue.SimpleQueue()
    finished: queue.SimpleQueue[tuple[list[bytes], bytes]] = queue.SimpleQueue()
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    wake_requested = threading.Event()
    share = max(1, workers // 2)
    running: Counter[bytes] = Counter()  # each client's requests with the workers
    waiting: dict[bytes, deque[tuple[list[bytes], bytes]]] = {}  # and those past its share
    incidents: Counter[str] = Counter()  # repeated problems, logged at most once a second
    next_report = 0.0
    stopped_by = ""
    in_flight = 0

    def work() -> None:
        while (job := jobs.get()) is not None:
            route, body = job
            finished.put((route, answer(body)))
            # One wake-up serves every reply queued before the loop drains: the loop clears
            # the flag before draining, so a reply put after the drain always sees it clear.
            if not wake_requested.is_set():
                wake_requested.set()
                # A full buffer means wake-ups are already pending: the loop will wake.
                with contextlib.suppress(BlockingIOError):
                    wake_writer.send(b"\0")

    def deliver(route: list[bytes], reply: bytes) -> None:
        if reason := send_reply(frontend, route, reply):
            incidents[f"dropped a reply to {printable(route[0])}: {reason}"] += 1
        elif not quiet:
            print(f"Sent reply to {printable(route[0])}", flush=True)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopped_by
        name = signal.Signals(signum).name
        if stopped_by:
            log.warning("%s again: exiting now, %d replies abandoned", name, in_flight)
            os._exit(1)
        stopped_by = name

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
    # Started up front: creating threads on demand delays the first requests of a burst.
    threads = [threading.Thread(target=work, name=f"worker-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()

    # libzmq retries a failed accept (out of file descriptors, say) without a word; its
    # monitor tells. Read once a second with the other incidents, not polled: polling a
    # second ZeroMQ socket would cost every request a little.
    monitor = frontend.get_monitor_socket(zmq.EVENT_ACCEPT_FAILED)
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(wake_reader, zmq.POLLIN)
    print(f"Listening on {frontend.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)

    accepting = reading = True
    while accepting or in_flight:
        ready = dict(poller.poll(POLL_INTERVAL_MS))

        if wake_reader.fileno() in ready:
            with contextlib.suppress(BlockingIOError):
                wake_reader.recv(4096)
            wake_requested.clear()
        while not finished.empty():
            route, reply = finished.get()
            in_flight -= 1
            deliver(route, reply)
            client = route[0]
            if later := waiting.get(client):
                jobs.put(later.popleft())
                if not later:
                    del waiting[client]
            elif running[client] == 1:
                del running[client]
            else:
                running[client] -= 1

        if time.monotonic() >= next_report:
            while monitor.poll(0):
                # [event (uint16), value (uint32)], endpoint: parsed here, as pyzmq's own
                # parser lives in a module that imports asyncio (8.6 MB more to carry).
                event, _endpoint = monitor.recv_multipart()
                errno = int.from_bytes(event[2:6], sys.byteorder)
                incidents[f"cannot accept a connection: {os.strerror(errno)} (see ulimit -n)"] += 1
            log_incidents(incidents)
            next_report = time.monotonic() + 1

        if stopped_by and accepting:
            accepting = False
            log.info("%s: stopped taking requests; finishing %d in flight", stopped_by, in_flight)
        if reading != (accepting and in_flight < MAX_BACKLOG):
            reading = not reading
            poller.register(frontend, zmq.POLLIN if reading else 0)  # 0 unregisters

        if reading and frontend in ready and (request := receive_request(frontend, quiet)):
            route, body = request
            client = route[0]
            if not workers:
                deliver(route, answer(body))
            elif running[client] < share:
                running[client] += 1
                in_flight += 1
                jobs.put(request)
            elif len(later := waiting.setdefault(client, deque())) < MAX_WAITING:
                later.append(request)
                in_flight += 1
            else:
                deliver(route, ERROR_PREFIX + b"too many requests from this client")

    log_incidents(incidents)
    for _ in threads:
        jobs.put(None)  # one stop mark per worker; any worker may take any mark
    for thread in threads:
        thread.join()
    signal.set_wakeup_fd(-1)
    wake_reader.close()
    wake_writer.close()
    frontend.disable_monitor()
    monitor.close()


def log_incidents(incidents: Counter[str]) -> None:
    for what, count in incidents.items():
        log.warning("%s%s", what, f" ({count} times)" if count > 1 else "")
    incidents.clear()


def enable_curve(
    context: zmq.Context, frontend: zmq.Socket, secret_file: str, clients_dir: str
) -> ThreadAuthenticator:
    """Ironhouse: encrypt every connection, and accept only the clients whose public keys
    are in clients_dir (as make_keys.py writes them). Others never reach the handler."""
    # Imported only here: zmq.auth brings asyncio and ssl, 9 MB a server need not carry.
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    public, secret = zmq.auth.load_certificate(secret_file)
    # pyzmq's ZAP handler: without one, any client that knows our public key gets in.
    authenticator = ThreadAuthenticator(context, log=log.getChild("auth"))
    authenticator.start()
    authenticator.configure_curve(domain=ZAP_DOMAIN, location=clients_dir)
    frontend.setsockopt(zmq.CURVE_SECRETKEY, secret)
    frontend.setsockopt(zmq.CURVE_PUBLICKEY, public)
    frontend.setsockopt(zmq.CURVE_SERVER, 1)
    return authenticator


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
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"worker threads running the handler (default {DEFAULT_WORKERS}); "
        "0 runs it inline in the poll loop, fastest for cheap handlers",
    )
    parser.add_argument(
        "--work-time",
        type=float,
        default=work_time,
        metavar="SECONDS",
        help=f"simulated work per request in the default handler (default {work_time})",
    )
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
    if args.max_message_size < 1024:
        parser.error("--max-message-size must be at least 1024 (ZeroMQ's handshake needs room)")
    if not args.work_time >= 0:
        parser.error("--work-time must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    global work_time
    args = parse_args(argv)
    work_time = args.work_time
    logging.basicConfig(level=logging.INFO, format="%(asctime)s server: %(message)s")

    # Each connected client holds a descriptor; take all that the system allows, since
    # the usual soft limit of 1024 would cap the server near a thousand clients.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with zmq.Context() as context, context.socket(zmq.ROUTER) as frontend:
        # Turn silent drops (client gone, queue full) into errors that send_reply logs.
        frontend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Cap each frame, or a peer announcing a huge frame makes libzmq reserve it.
        frontend.setsockopt(zmq.MAXMSGSIZE, args.max_message_size)
        # Bounded, so that exit never hangs on a client that stopped reading.
        frontend.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        # Any ZAP domain makes libzmq refuse peers speaking the unversioned ZMTP 1.0, which
        # it would otherwise parse out of any TCP client's bytes (a port scanner's, say).
        frontend.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        # Ping every peer; drop one that stays silent (frozen, or its network gone) for
        # three intervals, or that has not finished its handshake by then.
        interval_ms = round(args.heartbeat * 1000)
        frontend.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
        frontend.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * interval_ms)
        frontend.setsockopt(zmq.HANDSHAKE_IVL, 3 * interval_ms)
        with contextlib.ExitStack() as cleanup:
            if args.curve_secret:
                authenticator = enable_curve(
                    context, frontend, args.curve_secret, args.curve_clients
                )
                cleanup.callback(authenticator.stop)
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
            serve(frontend, args.workers, args.quiet)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while starting, before serve() handles signals
        sys.exit(130)
