"""What the package's command lines share: one-line usage errors, argument types, and
CURVE key files (server.py's workers read theirs as client.py does; client.py keeps its
own copy, so that it stays one file that works alone)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, pointing to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
