"""A handler whose process leaves a mark when it exits cleanly: an atexit hook writes a file
named by its pid into the directory $ZMQ_HELLO_EXIT_MARKS. A process killed with SIGKILL
writes none."""

from __future__ import annotations

import atexit
import os
from pathlib import Path


def _mark() -> None:
    directory = os.environ.get("ZMQ_HELLO_EXIT_MARKS")
    if directory:
        (Path(directory) / str(os.getpid())).write_text("atexit ran\n")


atexit.register(_mark)


def echo(body: bytes) -> bytes:
    return body
