#!/usr/bin/env python3
"""A Majordomo (MDP/0.2) worker: runs a handler for server.py, or for any MDP broker.

It connects to the broker, registers for a service (READY), and answers its requests
one at a time (REQUEST, then FINAL), exchanging heartbeats while it waits for work.

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
import time
from collections.abc import Callable

import zmq

from zmq_hello import handlers, mdp, wire
from zmq_hello.cli import OneLineErrorParser, curve_keys
from zmq_hello.handlers import Handler

DEFAULT_CONNECT = "tcp://localhost:5556"
DEFAULT_SERVICE = "hello"
DEFAULT_HEARTBEAT = 2.5  # seconds, MDP's customary interval
LIVENESS = 3  # heartbeats missed before the broker counts as gone
RECONNECT_MAX = 32.0  # seconds: the longest pause between tries to reach the broker
CLOSE_LINGER_MS = 1000  # how long a last reply may take to leave at exit

log = logging.getLogger("worker")


stopped_by = ""  # the signal that asked the worker to stop


def serve(
    endpoint: str,
    service: bytes,
    handler: Handler,
    heartbeat: float,
    curve: tuple[bytes, bytes, bytes] | None = None,
    parent: int | None = None,
) -> int:
    """Register with the broker and answer its requests, reconnecting whenever it goes
    away, until SIGINT or SIGTERM (exit code 0) or, with parent, until that process is
    gone (exit code 1)."""
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    # A signal wakes the poll at once: pyzmq would otherwise retry an interrupted poll.
    signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
    if handlers.is_async(handler):
        import asyncio

        loop = asyncio.new_event_loop()
        answer = lambda body: loop.run_until_complete(handlers.call_async(handler, body))  # noqa: E731
    else:
        answer = lambda body: handlers.call(handler, body)  # noqa: E731

    def orphaned() -> bool:
        return parent is not None and os.getppid() != parent

    first_pause = min(1.0, heartbeat)  # the pause before registering again; it doubles
    pause = first_pause
    routing_id = f"{socket.gethostname()}/{os.getpid()}".encode()
    with zmq.Context() as context:
        while True:
            # A fresh socket for each try (Paranoid Pirate): nothing of the last one stays.
            with context.socket(zmq.DEALER) as broker:
                broker.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
                # Readable in the broker's logs; server.py knows its --processes by it.
                broker.setsockopt(zmq.ROUTING_ID, routing_id)
                if curve:
                    broker.curve_publickey, broker.curve_secretkey, broker.curve_serverkey = curve
                broker.connect(endpoint)
                why, heard = attend(broker, service, answer, heartbeat, wake_reader, orphaned)
                if why != "stopped":  # only a last DISCONNECT is worth waiting for
                    broker.setsockopt(zmq.LINGER, 0)
            if heard:  # the broker was there: it went away just now, so try again soon
                pause = first_pause
            if why == "stopped":
                log.info("%s: told the broker, exiting", stopped_by)
                return 0
            if why == "orphaned":
                log.warning("the server that started this worker (pid %d) is gone: exiting", parent)
                return 1
            log.warning("the broker %s: registering again in %.1f s", why, pause)
            # The pause, cut short by a signal, and by the parent's end.
            deadline = time.monotonic() + pause
            while not stopped_by and not orphaned() and time.monotonic() < deadline:
                if zmq.select([wake_reader], [], [], min(deadline - time.monotonic(), heartbeat))[
                    0
                ]:
                    with contextlib.suppress(BlockingIOError):
                        wake_reader.recv(64)
            if stopped_by or orphaned():
                return 0 if stopped_by else 1
            pause = min(pause * 2, RECONNECT_MAX)


def attend(
    broker: zmq.Socket,
    service: bytes,
    answer: Callable[[bytes], bytes],
    heartbeat: float,
    wake_reader: socket.socket,
    orphaned: Callable[[], bool],
) -> tuple[str, bool]:
    """One registration: READY, then requests and heartbeats until it ends. Returns why it
    ended, and whether the broker was heard from meanwhile."""
    framing = mdp.Framing()  # MDP/0.2 with the empty frame first, as majortomo speaks it

    def send(command: str, *frames: bytes) -> None:
        # Never blocks: a DEALER whose connection failed (a refused CURVE handshake, say)
        # would wait forever. What cannot leave is lost; silence then ends the session.
        with contextlib.suppress(zmq.Again):
            wire.send(broker, mdp.build(framing, command, *frames))

    send(mdp.READY, service)
    endpoint = broker.getsockopt_string(zmq.LAST_ENDPOINT)
    # One write for the whole line: local workers share the server's stdout, and print's
    # separate write of the newline (unbuffered, as under PYTHONUNBUFFERED) interleaves.
    print(f"Worker ready for {service.decode()} at {endpoint}\n", end="", flush=True)
    poller = zmq.Poller()
    poller.register(broker, zmq.POLLIN)
    poller.register(wake_reader, zmq.POLLIN)
    heard_by = time.monotonic() + LIVENESS * heartbeat
    next_heartbeat = time.monotonic() + heartbeat
    heard = False
    while True:
        ready = dict(poller.poll(max(0, round((next_heartbeat - time.monotonic()) * 1000))))
        if wake_reader.fileno() in ready:
            with contextlib.suppress(BlockingIOError):
                wake_reader.recv(64)
        if stopped_by:
            send(mdp.DISCONNECT)
            return "stopped", heard
        if not ready and orphaned():  # checked when idle: no request comes without a server
            return "orphaned", heard
        if broker in ready:
            try:
                message = mdp.parse(wire.receive(broker)[0])
            except mdp.ProtocolError as exc:
                log.warning("ignored a bad message from the broker: %s", exc)
                continue
            if message.command == mdp.REQUEST:
                reply = answer(b"".join(message.body))
                send(mdp.FINAL, message.address, reply)
                if stopped_by:  # the signal came while the handler ran: its reply is sent
                    send(mdp.DISCONNECT)
                    return "stopped", True
                next_heartbeat = time.monotonic() + heartbeat
            elif message.command == mdp.DISCONNECT:
                return "sent DISCONNECT", heard
            # Whatever the broker sends shows it alive; a busy spell counts from its end.
            heard_by = time.monotonic() + LIVENESS * heartbeat
            heard = True
        now = time.monotonic()
        if now >= heard_by:
            return f"has been silent for {LIVENESS} heartbeats", heard
        if now >= next_heartbeat:
            send(mdp.HEARTBEAT)
            next_heartbeat = now + heartbeat


def on_signal(signum: int, _frame: object) -> None:
    global stopped_by
    name = signal.Signals(signum).name
    if stopped_by:
        log.warning("%s again: exiting now", name)
        os._exit(1)
    stopped_by = name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        description="A Majordomo (MDP/0.2) worker: answers a broker's requests with a handler.",
        epilog="SIGINT or SIGTERM: finish the request in hand, send its reply and DISCONNECT, "
        "exit 0. A second signal exits at once.",
    )
    parser.add_argument(
        "--connect",
        default=DEFAULT_CONNECT,
        metavar="ENDPOINT",
        help=f"the broker's endpoint for workers (default {DEFAULT_CONNECT})",
    )
    parser.add_argument(
        "--service",
        default=DEFAULT_SERVICE,
        metavar="NAME",
        help=f"the service to register for (default {DEFAULT_SERVICE})",
    )
    handlers.add_arguments(parser)
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help=f"heartbeat interval while waiting for work; the broker counts as gone after "
        f"{LIVENESS} silent intervals (default {DEFAULT_HEARTBEAT})",
    )
    parser.add_argument(
        "--curve-secret", metavar="FILE", help="encrypt with CURVE using this secret key file"
    )
    parser.add_argument("--curve-server", metavar="FILE", help="the broker's public key file")
    parser.add_argument(
        "--parent",
        type=int,
        metavar="PID",
        help="exit when process PID is gone (server.py --processes passes its own)",
    )
    args = parser.parse_args(argv)
    if not args.heartbeat >= 0.01:
        parser.error("--heartbeat must be at least 0.01 seconds")
    if not args.service or len(args.service.encode()) > 255:
        parser.error("--service must be 1 to 255 bytes")
    args.handler = handlers.from_arguments(parser, args)
    args.curve = curve_keys(parser, args.curve_secret, args.curve_server)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker: %(message)s")
    try:
        return serve(
            args.connect,
            args.service.encode(),
            args.handler,
            args.heartbeat,
            args.curve,
            args.parent,
        )
    except zmq.ZMQError as exc:  # connect() refuses an endpoint it cannot parse
        print(f"worker.py: cannot connect to {args.connect}: {exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while starting, before serve() handles signals
        sys.exit(130)
