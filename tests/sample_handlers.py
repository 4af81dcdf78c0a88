"""Handlers the tests serve with --handler, as a user would write them.

echo and echo_async return the request. A request b"<seconds> <text>" first sleeps (or
awaits) that long, so tests choose each request's duration; b"boom" raises; b"die"
kills the process that runs it (a worker process, in the tests that send it).
remaining tells the handler's time_remaining(); relay calls another server.
"""

import asyncio
import os
import signal
import sys
import time

from zmq_hello import Client, NoReply, time_remaining


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


def loaded_modules(request: bytes) -> bytes:
    """Whether the module named by the request is loaded in the process that runs this."""
    return str(request.decode() in sys.modules).encode()


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


def remaining(request: bytes) -> bytes:
    """The time the caller will still wait, as the handler sees it on starting: b"None"
    for a request without a deadline; then echo's sleep. Says on stdout that it started."""
    left = time_remaining()
    print(f"handling {request.decode(errors='replace')}", flush=True)
    time.sleep(seconds(request))
    return b"None" if left is None else b"%.3f" % left


async def remaining_async(request: bytes) -> bytes:
    left = time_remaining()
    print(f"handling {request.decode(errors='replace')}", flush=True)
    await asyncio.sleep(seconds(request))
    return b"None" if left is None else b"%.3f" % left


def relay(request: bytes) -> bytes:
    """b"<endpoint> <body>": asks the server at endpoint with body, through a Client with
    no timeout of its own, and says on stdout how that ended; replies with its reply."""
    endpoint, _, body = request.partition(b" ")
    start = time.monotonic()
    try:
        with Client(endpoint.decode()) as client:
            reply = client.request(body)
    except NoReply as exc:
        print(f"relay gave up after {time.monotonic() - start:.3f} s: {exc}", flush=True)
        raise
    print(f"relay answered after {time.monotonic() - start:.3f} s", flush=True)
    return reply


async def relay_async(request: bytes) -> bytes:
    """relay, with an AsyncClient."""
    from zmq_hello import AsyncClient  # here: the other handlers need no asyncio client

    endpoint, _, body = request.partition(b" ")
    start = time.monotonic()
    try:
        async with AsyncClient(endpoint.decode()) as client:
            reply = await client.request(body)
    except NoReply as exc:
        print(f"relay gave up after {time.monotonic() - start:.3f} s: {exc}", flush=True)
        raise
    print(f"relay answered after {time.monotonic() - start:.3f} s", flush=True)
    return reply
