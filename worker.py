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
import threading
import time
from dataclasses import dataclass

import zmq

from zmq_hello import handlers, mdp, wire
from zmq_hello.cli import OneLineErrorParser, count, curve_keys
from zmq_hello.envelope import ERROR_PREFIX
from zmq_hello.handlers import Handler
from zmq_hello.output import say
from zmq_hello.sockets import DEFAULT_MAX_REPLY_SIZE, allow_ipv6

DEFAULT_CONNECT = "tcp://localhost:5556"
DEFAULT_SERVICE = "hello"
DEFAULT_HEARTBEAT = 2.5  # seconds, MDP's customary interval
LIVENESS = 3  # heartbeats missed before the broker counts as gone
RECONNECT_MAX = 32.0  # seconds: the longest pause between tries to reach the broker
CLOSE_LINGER_MS = 1000  # how long a last reply may take to leave at exit

log = logging.getLogger("worker")


@dataclass
class Settings:
    """What the command line asks of the worker."""

    endpoint: str
    service: bytes
    handler: Handler
    heartbeat: float = DEFAULT_HEARTBEAT
    curve: tuple[bytes, bytes, bytes] | None = None
    parent: int | None = None  # exit when this process is gone
    max_requests: int = 0  # leave after answering this many; 0: never
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE  # the broker's cap on a frame from us


class Worker:
    """One worker process: its sessions with the broker, one after another, until a
    signal, its --max-requests, or the end of its parent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopped_by = ""  # the signal that asked the worker to stop
        self.answered = 0
        self.framing = mdp.Framing()  # MDP/0.2 with the empty frame first, as majortomo
        if handlers.is_async(settings.handler):
            import asyncio

            self.loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()
        else:
            self.loop = None

    def serve(self) -> int:
        """Register with the broker and answer its requests, reconnecting whenever it goes
        away, until a signal or --max-requests (exit code 0)."""
        wake_reader, wake_writer = socket.socketpair()
        wake_reader.setblocking(False)
        wake_writer.setblocking(False)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        # A signal wakes the poll at once: pyzmq would otherwise retry an interrupted poll.
        signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
        if self.settings.parent is not None:
            watch_parent(self.settings.parent, min(self.settings.heartbeat, 1.0))

        heartbeat = self.settings.heartbeat
        first_pause = min(1.0, heartbeat)  # the pause before registering again; it doubles
        pause = first_pause
        with zmq.Context() as context:
            while True:
                # A fresh socket each try (Paranoid Pirate): nothing of the last one stays.
                with self.connect(context) as broker:
                    why, heard = self.attend(broker, wake_reader)
                    if why != "stopped":  # only a last DISCONNECT is worth waiting for
                        broker.setsockopt(zmq.LINGER, 0)
                if why == "stopped":
                    log.info("%s: told the broker, exiting", self.stopped_by)
                    return 0
                if heard:  # the broker was there: it went away just now, so try again soon
                    pause = first_pause
                log.warning("the broker %s: registering again in %.1f s", why, pause)
                deadline = time.monotonic() + pause  # the pause, cut short by a signal
                while not self.stopped_by and (left := deadline - time.monotonic()) > 0:
                    if zmq.select([wake_reader], [], [], min(left, heartbeat))[0]:
                        with contextlib.suppress(BlockingIOError):
                            wake_reader.recv(64)
                if self.stopped_by:
                    return 0
                pause = min(pause * 2, RECONNECT_MAX)

    def connect(self, context: zmq.Context) -> zmq.Socket:
        broker = context.socket(zmq.DEALER)
        broker.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        # Readable in the broker's logs; server.py knows its --processes by it.
        broker.setsockopt(zmq.ROUTING_ID, f"{socket.gethostname()}/{os.getpid()}".encode())
        if self.settings.curve:
            broker.curve_publickey, broker.curve_secretkey, broker.curve_serverkey = (
                self.settings.curve
            )
        allow_ipv6(broker, self.settings.endpoint)
        broker.connect(self.settings.endpoint)
        return broker

    def attend(self, broker: zmq.Socket, wake_reader: socket.socket) -> tuple[str, bool]:
        """One registration: READY, then requests and heartbeats until it ends. Returns
        why it ended, and whether the broker was heard from meanwhile."""
        service, heartbeat = self.settings.service, self.settings.heartbeat
        self.send(broker, mdp.READY, service)
        say(f"Worker ready for {service.decode()} at {broker.getsockopt_string(zmq.LAST_ENDPOINT)}")
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
            if self.stopped_by:
                self.send(broker, mdp.DISCONNECT)
                return "stopped", heard
            if broker in ready:
                try:
                    message = mdp.parse(wire.receive(broker)[0])
                except mdp.ProtocolError as exc:
                    log.warning("ignored a bad message from the broker: %s", exc)
                    continue
                if message.command == mdp.REQUEST:
                    self.send(broker, mdp.FINAL, message.address, self.answer(message.body))
                    if self.retiring():  # its reply is sent: DISCONNECT follows at once
                        self.send(broker, mdp.DISCONNECT)
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
                self.send(broker, mdp.HEARTBEAT)
                next_heartbeat = now + heartbeat

    def answer(self, body: list[bytes]) -> bytes:
        """The handler's reply, or an error reply in place of one the broker would refuse."""
        request = b"".join(body)
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
        description="A Majordomo (MDP/0.2) worker: answers a broker's requests with a handler.",
        epilog="SIGINT, SIGTERM or SIGHUP: finish the request in hand, send its reply and "
        "DISCONNECT, exit 0. A second signal exits at once.",
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
    settings = Settings(
        args.connect,
        args.service.encode(),
        args.handler,
        args.heartbeat,
        args.curve,
        args.parent,
        args.max_requests,
        args.max_reply_size,
    )
    try:
        return Worker(settings).serve()
    except zmq.ZMQError as exc:  # connect() refuses an endpoint it cannot parse
        print(f"worker.py: cannot connect to {args.connect}: {exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while starting, before serve() handles signals
        sys.exit(130)
