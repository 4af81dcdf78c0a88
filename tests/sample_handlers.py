"""Handlers the tests serve with --handler, as a user would write them.

echo and echo_async return the request. A request b"<seconds> <text>" first sleeps (or
awaits) that long, so tests choose each request's duration; b"boom" raises; b"die"
kills the process that runs it (a worker process, in the tests that send it).
"""

import asyncio
import os
import signal
import time


def seconds(request: bytes) -> float:
    head, _, _ = request.partition(b" ")
    return float(head) if head.replace(b".", b"", 1).isdigit() else 0.0


def echo(request: bytes) -> bytes:
    if request == b"boom":
        raise RuntimeError("boom")
    if request == b"die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(seconds(request))
    return request


def echo_aloud(request: bytes) -> bytes:
    """echo, saying first on stdout that it has the request: an event tests wait for."""
    print(f"handling {request.decode(errors='replace')}", flush=True)
    return echo(request)


async def echo_async(request: bytes) -> bytes:
    if request == b"boom":
        raise RuntimeError("boom")
    await asyncio.sleep(seconds(request))
    return request


def big(request: bytes) -> bytes:
    """A reply of int(request) bytes."""
    return b"x" * int(request)


def text(request: bytes) -> str:
    return request.decode() + " as text"


def not_bytes(request: bytes) -> int:
    return 42


NOT_CALLABLE = 42


def echo_logged(request: bytes) -> bytes:
    """echo, saying on stdout when each request starts and ends: a record of overlap."""
    print(f"start {request.decode(errors='replace')}", flush=True)
    reply = echo(request)
    print(f"end {request.decode(errors='replace')}", flush=True)
    return reply
