"""Handlers the tests serve with --handler, as a user would write them.

echo and echo_async return the request. A request b"<seconds> <text>" first sleeps (or
awaits) that long, so tests choose each request's duration; b"boom" raises.
"""

import asyncio
import time


def seconds(request: bytes) -> float:
    head, _, _ = request.partition(b" ")
    return float(head) if head.replace(b".", b"", 1).isdigit() else 0.0


def echo(request: bytes) -> bytes:
    if request == b"boom":
        raise RuntimeError("boom")
    time.sleep(seconds(request))
    return request


async def echo_async(request: bytes) -> bytes:
    if request == b"boom":
        raise RuntimeError("boom")
    await asyncio.sleep(seconds(request))
    return request


def text(request: bytes) -> str:
    return request.decode() + " as text"


def not_bytes(request: bytes) -> int:
    return 42


NOT_CALLABLE = 42
