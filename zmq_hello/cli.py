"""What the package's command lines share: one-line usage errors, argument types, and
CURVE key files (server.py's workers read theirs as client.py does)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple, NoReturn


def program() -> str:
    """The program's name as the user invoked it, as argparse shows it, for its messages
    on stderr: server.py, worker.py (also for python -m zmq_hello.worker),
    zmq-hello-server, ..."""
    return os.path.basename(sys.argv[0])


def run_program(main: Callable[[], int]) -> NoReturn:
    """A program's start (a script, python -m, a console script): exit with main()'s
    code, and with 130, without a traceback, for a Ctrl-C before main() handles signals."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, pointing to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """A HelpFormatter as wide as the terminal. argparse imports shutil (and with it bz2
    and lzma) only to learn the width: 4 ms of a one-shot client's start-up, and os can
    tell it by itself."""
    try:
        width = os.get_terminal_size().columns - 2
    except OSError:
        width = 78
    return argparse.HelpFormatter(prog, width=width)


MIN_INTERVAL = 0.01  # seconds: the shortest heartbeat interval a flag accepts


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number 0 or more, got {text!r}")
    return int(text)


def curve_keys(
    parser: argparse.ArgumentParser, secret_file: str | None, server_file: str | None
) -> tuple[bytes, bytes, bytes] | None:
    """(public key, secret key, server's public key) from --curve-secret and --curve-server,
    None without them; a bad file is a usage error."""
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


class Address(NamedTuple):
    """Where --metrics serves its page."""

    host: str
    port: int


def metrics_address(text: str) -> Address:
    """An argparse type: HOST:PORT ([HOST]:PORT for IPv6); port 0 picks a free one."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, as 127.0.0.1:9105, got {text!r}")
    return Address(host, int(port))


def add_metrics_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="HOST:PORT",
        help=f"serve Prometheus metrics ({what}) at http://HOST:PORT/metrics, port 0 for a "
        "free one; needs prometheus-client (the extra 'metrics'). Anyone who can reach the "
        "address can read them: keep it on loopback or a private network (docs/metrics.md)",
    )


def import_metrics(parser: argparse.ArgumentParser) -> ModuleType:
    """zmq_hello.metrics, for --metrics; without prometheus-client 0.20 or newer (the
    first whose server tells its port), exit 2 saying what to install, in one line."""
    from importlib import metadata

    try:
        version = metadata.version("prometheus-client")
        from zmq_hello import metrics
    except ModuleNotFoundError as exc:  # metadata.PackageNotFoundError is one too
        if not isinstance(exc, metadata.PackageNotFoundError) and exc.name != "prometheus_client":
            raise
        version = ""
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if major_minor < (0, 20):
        found = f" (found {version})" if version else ""
        parser.exit(
            2,
            f"{parser.prog}: error: --metrics needs prometheus-client 0.20 or newer{found}: "
            "python -m pip install 'prometheus-client>=0.20' (in a checkout: python -m pip "
            "install '.[metrics]')\n",
        )
    return metrics
