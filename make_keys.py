#!/usr/bin/env python3
"""Make CURVE key pairs for server.py and client.py.

    python make_keys.py keys server alice bob

writes, for each NAME, keys/NAME.key (the public key) and keys/NAME.key_secret (the
secret key, readable by its owner only). Then:

    mkdir clients && cp keys/alice.key clients/
    python server.py --curve-secret keys/server.key_secret --curve-clients clients
    python client.py alice --curve-secret keys/alice.key_secret --curve-server keys/server.key
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import zmq.auth


def make_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret in directory; the secret never readable by others."""
    # pyzmq writes both files world-readable; a strict umask keeps the secret's
    # permissions right from the start, with no moment at 0644.
    previous = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(previous)
    os.chmod(public, 0o644)
    return Path(public), Path(secret)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where to write the keys (created if need be)")
    parser.add_argument("names", nargs="+", metavar="NAME", help="one key pair per name")
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        if (args.directory / f"{name}.key_secret").exists():
            print(f"make_keys.py: {name}: keys exist already; not overwritten", file=sys.stderr)
            return 1
    for name in args.names:
        public, secret = make_key_pair(args.directory, name)
        print(f"{public}  {secret} (mode 600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
