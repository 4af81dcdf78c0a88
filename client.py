#!/usr/bin/env python3
"""Send one request to server.py and print the reply.

    python client.py 1                 # Client 1 sending 'Hello' ... received reply: World
    python client.py 2 Hi --timeout 1  # another id, another message, a shorter wait
    python client.py 3 img --service resize   # to the server's workers for "resize"

If no reply comes in time the client retries on a fresh connection (the "Lazy Pirate"
pattern), then gives up with one line on stderr. Exit codes: 0 reply received,
1 no reply, 2 bad arguments, 3 the server answered with an error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

import zmq

DEFAULT_CONNECT = "tcp://localhost:5555"
DEFAULT_TIMEOUT = 2.5
DEFAULT_RETRIES = 3
ERROR_PREFIX = b"ERROR: "
# --service speaks MDP/0.2 (ZeroMQ RFC 18) behind client.py's token: the REQUEST command,
# and the PARTIAL and FINAL commands of the replies.
MDP_CLIENT, MDP_REQUEST, MDP_PARTIAL, MDP_FINAL = b"MDPC02", b"\x01", b"\x02", b"\x03"
EXIT_NO_REPLY, EXIT_USAGE, EXIT_SERVER_ERROR, EXIT_INTERRUPTED = 1, 2, 3, 130


def request(
    endpoints: str | Sequence[str],
    routing_id: bytes,
    body: bytes,
    timeout: float,
    retries: int,
    on_try: Callable[[int], None] = lambda attempt: None,
    curve: tuple[bytes, bytes, bytes] | None = None,
    service: bytes | None = None,
    on_partial: Callable[[bytes], None] = lambda part: None,
) -> bytes | None:
    """Send body to one of the servers at endpoints and return the reply body, or None
    when every try timed out.

    The request travels as [token, b"", body]; the server returns the envelope with the
    reply. Another client may share this routing id, or may have used it before and left
    a reply behind, so only a reply carrying this request's token counts. The token stays
    the same across retries: a late answer to an earlier try is as good as any.
    on_try(attempt) is called as each try is sent, 0 for the first. curve is (public key,
    secret key, server's public key) to encrypt with CURVE.

    Each try sends to the first endpoint, in order, whose connection is up, so a server
    that is down costs nothing; one that is up but silent costs the try's timeout, and
    the next try puts it last, on a fresh connection.

    With service, the request goes to that service of server.py's MDP broker, as an
    MDP/0.2 request behind the token: [token, b"", b"MDPC02", REQUEST, service, body].
    A worker's PARTIAL replies go to on_partial as they come, each restarting the wait.

    A call that got its reply leaves its connections open for the next call in the same
    thread with the same routing id, servers and keys, which uses them: a loop of calls
    with one fixed id never reconnects under it, so it never meets the server still
    holding the connection just closed (which would ignore the new one for a timeout).
    """
    order = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    token = os.urandom(8)
    head = [token, b""] if service is None else [token, b"", MDP_CLIENT, MDP_REQUEST, service]
    key = (os.getpid(), routing_id, tuple(order), curve)
    dealers = kept.take(key)  # by endpoint
    reply = None
    try:
        for attempt in range(1 + retries):
            for endpoint in order:
                if endpoint not in dealers:
                    dealers[endpoint] = connect(endpoint, routing_id, curve)
            on_try(attempt)
            deadline = time.monotonic() + timeout
            dealer = first_up([dealers[endpoint] for endpoint in order], deadline)
            if dealer is None:
                continue  # no server up in the whole timeout
            dealer.send_multipart([*head, body])
            reply = wait_reply(dealer, token, service, deadline, timeout, on_partial)
            if reply is not None:
                return reply
            # Lazy Pirate: the socket that got no answer goes, with whatever it still
            # held (an unsent request, a half-open connection), and its server goes
            # last. The others stay: a server would ignore a fresh connection under
            # this routing id while it still holds the one just closed.
            silent = next(endpoint for endpoint in order if dealers[endpoint] is dealer)
            dealers.pop(silent).close(linger=0)
            order.remove(silent)
            order.append(silent)
    finally:
        if reply is not None:
            kept.keep(key, dealers)
        else:
            for dealer in dealers.values():
                dealer.close(linger=0)
    return None


class Kept(threading.local):
    """The connections of this thread's last answered call, for request() to use again."""

    def __init__(self) -> None:
        self.key: tuple | None = None  # (pid, routing id, endpoints, curve) they were made for
        self.dealers: dict[str, zmq.Socket] = {}

    def take(self, key: tuple) -> dict[str, zmq.Socket]:
        """The kept connections if they were made for key (in this process); else none,
        and any kept for another key are closed."""
        dealers, self.dealers = self.dealers, {}
        kept_key, self.key = self.key, None
        if kept_key == key:
            return dealers
        if kept_key is not None and kept_key[0] == os.getpid():  # a forked child's are not its own
            for dealer in dealers.values():
                dealer.close(linger=0)
        return {}

    def keep(self, key: tuple, dealers: dict[str, zmq.Socket]) -> None:
        self.key, self.dealers = key, dealers


kept = Kept()


def connect(
    endpoint: str, routing_id: bytes, curve: tuple[bytes, bytes, bytes] | None
) -> zmq.Socket:
    # The process's shared context: it outlives a call, for the connections kept, and a
    # forked child gets a new one of its own.
    dealer: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)  # never wait on exit for an unsent request
    # Queue only to connections that are up: without it, a DEALER given a server that is
    # down holds a request for it, in its turn, until that server comes back.
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    dealer.setsockopt(zmq.ROUTING_ID, routing_id)
    if curve:
        dealer.curve_publickey, dealer.curve_secretkey, dealer.curve_serverkey = curve
    if endpoint.startswith("tcp://["):  # an IPv6 literal: refused without IPV6
        dealer.setsockopt(zmq.IPV6, 1)
    try:
        dealer.connect(endpoint)
    except zmq.ZMQError:
        dealer.close(linger=0)
        raise
    return dealer


def first_up(dealers: list[zmq.Socket], deadline: float) -> zmq.Socket | None:
    """The first dealer, in their order, whose connection is up (writable), by deadline."""
    poller = zmq.Poller()
    for dealer in dealers:
        poller.register(dealer, zmq.POLLOUT)
    while (left := deadline - time.monotonic()) > 0:
        writable = dict(poller.poll(int(left * 1000) + 1))
        for dealer in dealers:
            if dealer in writable:
                return dealer
    return None


def wait_reply(
    dealer: zmq.Socket,
    token: bytes,
    service: bytes | None,
    deadline: float,
    timeout: float,
    on_partial: Callable[[bytes], None],
) -> bytes | None:
    """The reply to this request (this token's) by deadline, or None."""
    while (left := deadline - time.monotonic()) > 0 and dealer.poll(int(left * 1000) + 1):
        reply = dealer.recv_multipart()
        if service is None:
            if len(reply) == 3 and reply[0] == token and reply[1] == b"":
                return reply[2]
        elif len(reply) == 6 and reply[:3] == [token, b"", MDP_CLIENT] and reply[4] == service:
            if reply[3] == MDP_FINAL:
                return reply[5]
            if reply[3] == MDP_PARTIAL:
                on_partial(reply[5])
                deadline = time.monotonic() + timeout
    return None


def say(line: str) -> None:
    print(f"client.py: {line}", file=sys.stderr, flush=True)


def help_formatter(prog: str) -> argparse.HelpFormatter:
    # argparse imports shutil (and with it bz2 and lzma) only to learn the terminal's
    # width: 4 ms of a one-shot client's start-up. os can tell the width by itself.
    try:
        width = os.get_terminal_size().columns - 2
    except OSError:
        width = 78
    return argparse.HelpFormatter(prog, width=width)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number 0 or more, got {text!r}")
    return int(text)


def curve_keys(
    parser: argparse.ArgumentParser, secret_file: str | None, server_file: str | None
) -> tuple[bytes, bytes, bytes] | None:
    """(public key, secret key, server's public key) from --curve-secret and --curve-server
    (worker.py takes them too), None without them; a bad file is a usage error."""
    if bool(secret_file) != bool(server_file):
        parser.error("--curve-secret and --curve-server go together")
    if not secret_file or not server_file:
        return None
    import zmq.auth  # only here: a plain run should not pay for importing it

    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        server_public, _ = zmq.auth.load_certificate(server_file)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read a key: {exc}")
    if secret is None:
        parser.error(f"{secret_file} holds no secret key (use NAME.key_secret)")
    return public, secret, server_public


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        formatter_class=help_formatter,
        description="Send one request to server.py and print its reply.",
        epilog="A request that times out is sent again, so a server may run it twice: "
        "retry only requests that are safe to repeat, or use --retries 0. "
        "Exit codes: 0 reply, 1 no reply, 2 bad arguments, 3 error reply, 130 interrupted.",
    )
    parser.add_argument("id", metavar="ID", help="this client's routing id (1 to 255 bytes)")
    parser.add_argument(
        "message", metavar="MESSAGE", nargs="?", default="Hello", help="the request (default Hello)"
    )
    parser.add_argument(
        "--connect",
        action="append",
        metavar="ENDPOINT",
        help=f"a server's endpoint (default {DEFAULT_CONNECT}); give it again for more "
        "servers: each try goes to the first in order whose connection is up, and a try "
        "that timed out puts its server last",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long each try waits for the reply (default {DEFAULT_TIMEOUT})",
    )
    parser.add_argument(
        "--retries",
        type=count,
        default=DEFAULT_RETRIES,
        metavar="N",
        help=f"tries after the first, each on a fresh connection (default {DEFAULT_RETRIES})",
    )
    parser.add_argument(
        "--service",
        metavar="NAME",
        help="send the request to the workers of service NAME (server.py with --backend or "
        "--processes, or its handler's own --service name); a streaming worker's partial "
        "replies are printed as they come, then the final one",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="report each retry on stderr")
    parser.add_argument(
        "--curve-secret", metavar="FILE", help="encrypt with CURVE using this secret key file"
    )
    parser.add_argument("--curve-server", metavar="FILE", help="the server's public key file")
    args = parser.parse_args(argv)
    args.connect = args.connect or [DEFAULT_CONNECT]
    # surrogateescape gives back the exact bytes of a command-line argument.
    args.routing_id = args.id.encode("utf-8", "surrogateescape")
    if not 1 <= len(args.routing_id) <= 255:
        parser.error(f"ID must be 1 to 255 bytes, got {len(args.routing_id)}")
    args.body = args.message.encode("utf-8", "surrogateescape")
    args.service_name = args.service
    if args.service is not None:
        args.service = args.service.encode("utf-8", "surrogateescape")
        if not 1 <= len(args.service) <= 255:
            parser.error(f"--service must be 1 to 255 bytes, got {len(args.service)}")
    args.curve = curve_keys(parser, args.curve_secret, args.curve_server)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_try(attempt: int) -> None:
        if attempt == 0:
            print(f"Client {args.id} sending '{args.message}'", flush=True)
        elif args.verbose:
            say(f"no reply in {args.timeout:g} s; retry {attempt} of {args.retries}")

    def on_partial(part: bytes) -> None:
        text = part.decode("utf-8", "backslashreplace")
        print(f"Client {args.id} received reply: {text}", flush=True)

    try:
        reply = request(
            args.connect,
            args.routing_id,
            args.body,
            args.timeout,
            args.retries,
            on_try,
            args.curve,
            args.service,
            on_partial,
        )
    except zmq.ZMQError as exc:  # connect() refuses an endpoint it cannot parse
        say(f"cannot use that endpoint: {exc.strerror}")
        return EXIT_USAGE
    if reply is None:
        hint = "is the server running?"
        if args.service is not None:
            # MDP has no error reply: a service nobody serves looks like a server away.
            hint = f"is the server running, with a worker for service {args.service_name}?"
        say(
            f"no reply from {', '.join(args.connect)} after {1 + args.retries} tries of "
            f"{args.timeout:g} s; {hint}"
        )
        return EXIT_NO_REPLY
    text = reply.decode("utf-8", "backslashreplace")
    if reply.startswith(ERROR_PREFIX):
        say(f"the server answered with an error: {text[len(ERROR_PREFIX) :]}")
        return EXIT_SERVER_ERROR
    print(f"Client {args.id} received reply: {text}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
