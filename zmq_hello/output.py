"""The lines the scripts print on stdout (Listening on, Worker ready, one per request),
written so that a stdout nobody can write to any more (a closed pipe, a full disk)
never stops a server or a worker: the first failure is logged on stderr, and stdout is
then silenced for the rest of the run."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("output")
silenced = False


def say(line: str) -> bool:
    """Print line on stdout in one write (processes sharing a stdout never interleave
    their lines); False if stdout cannot be written, and from then on."""
    if silenced:
        return False
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError) as exc:  # ValueError: stdout was closed
        silence(exc)
        return False
    return True


def silence(exc: Exception) -> None:
    global silenced
    silenced = True
    log.warning("cannot write to stdout (%s): printing nothing more there", exc)
    # What is still buffered would fail again when Python flushes stdout at exit, with a
    # traceback: point the descriptor at /dev/null, so that flush has somewhere to go.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
