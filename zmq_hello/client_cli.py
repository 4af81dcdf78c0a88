"""The one-shot client program (client.py, zmq-hello-client): its command line, the lines
it prints and its exit codes, on top of Client.

Exit codes: 0 reply received, 1 no reply, 2 bad arguments, 3 the server answered with
an error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import zmq

from zmq_hello.calls import DEFAULT_RETRIES, DEFAULT_TIMEOUT, NoReply, ServerError
from zmq_hello.cli import (
    OneLineErrorParser,
    count,
    curve_keys,
    help_formatter,
    program,
    run_program,
    seconds,
)
from zmq_hello.client import Client
from zmq_hello.mdp import MAX_SERVICE_BYTES

DEFAULT_CONNECT = "tcp://localhost:5555"
EXIT_NO_REPLY, EXIT_USAGE, EXIT_SERVER_ERROR = 1, 2, 3


def say(line: str) -> None:
    """A line on stderr, after the program's name (client.py, zmq-hello-client)."""
    print(f"{program()}: {line}", file=sys.stderr, flush=True)


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
        help=f"tries after the first, each to the first server whose connection is up "
        f"(default {DEFAULT_RETRIES})",
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
        if not 1 <= len(args.service) <= MAX_SERVICE_BYTES:
            parser.error(
                f"--service must be 1 to {MAX_SERVICE_BYTES} bytes, got {len(args.service)}"
            )
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
        client = Client(
            args.connect,
            timeout=args.timeout,
            retries=args.retries,
            curve=args.curve,
            routing_id=args.routing_id,
        )
    except zmq.ZMQError as exc:  # connect() refuses an endpoint it cannot parse
        say(f"cannot use that endpoint: {exc.strerror}")
        return EXIT_USAGE
    with client:
        try:
            reply = client._request(args.body, args.service, None, on_partial, on_try)
        except NoReply:
            hint = "is the server running?"
            if args.service is not None:
                # MDP has no error reply: a service nobody serves looks like a server away.
                hint = f"is the server running, with a worker for service {args.service_name}?"
            say(
                f"no reply from {', '.join(args.connect)} after {1 + args.retries} tries of "
                f"{args.timeout:g} s; {hint}"
            )
            return EXIT_NO_REPLY
        except ServerError as error:
            say(f"the server answered with an error: {error}")
            return EXIT_SERVER_ERROR
    text = reply.decode("utf-8", "backslashreplace")
    print(f"Client {args.id} received reply: {text}", flush=True)
    return 0


def run() -> NoReturn:
    """The program: exits with main()'s code (130 for Ctrl-C)."""
    run_program(main)


if __name__ == "__main__":
    run()
