#!/usr/bin/env python3
"""Load from the client library (zmq_hello.Client, AsyncClient) and from the bare loops
it is judged against, for bench.py's clients phase: one process per measurement, so that
each figure has an interpreter of its own. Prints one JSON object on stdout.

    clients.py ENDPOINT loop KIND SECONDS         one thread, one request after another
                                                  for SECONDS after a warm-up; KIND:
                                                  client, bare or legacy
    clients.py ENDPOINT inflight KIND N SECONDS   N coroutines on one event loop, each
                                                  looping a request; KIND: client or bare
    clients.py ENDPOINT threads T K               T threads share one Client, each sends
                                                  K requests one after another: wall time
    clients.py ENDPOINT burst N                   N requests at once on one AsyncClient
                                                  (asyncio.gather): wall time

CPU is this process's own (time.process_time(): every thread, libzmq's I/O thread
included) over the measured window, per request. A request that fails (NoReply,
ServerError, a reply other than World) counts in lost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree's zmq_hello

from zmq_hello import AsyncClient, Client, NoReply, ServerError  # noqa: E402
from zmq_hello.client import request as legacy_request  # noqa: E402

BODY, REPLY = b"Hello", b"World"
TIMEOUT = 2.5  # seconds a request waits: the client library's default
WARMUP = 0.3  # seconds of requests before the measured window
GRACE = 5.0  # how long requests still in flight at the end may take before they are lost
FAILED = (NoReply, ServerError)


def bare_dealer(endpoint: str) -> Callable[[bytes], bytes]:
    """What a minimal correct client does on one persistent DEALER: send [token, b"",
    body] (token: a per-request counter as 8 bytes), wait for the reply with a timeout
    (poll), receive it and check its token; a reply to an earlier request is dropped."""
    dealer: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(endpoint)
    tokens = itertools.count()

    def call(body: bytes) -> bytes:
        token = next(tokens).to_bytes(8, "big")
        dealer.send_multipart([token, b"", body])
        while dealer.poll(int(TIMEOUT * 1000)):
            frames = dealer.recv_multipart()
            if frames[0] == token:
                return frames[2]
        raise NoReply([endpoint], 1, TIMEOUT)

    return call


def bare_async_dealer(endpoint: str) -> Callable[[bytes], Awaitable[bytes]]:
    """A bare zmq.asyncio DEALER with many requests in flight: one reader task resolves
    the future stored under each reply's token; a call makes a future, stores it by its
    token (a counter as 8 bytes), sends [token, b"", body] and awaits the future."""
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    dealer.connect(endpoint)
    futures: dict[bytes, asyncio.Future] = {}
    tokens = itertools.count()

    async def read() -> None:
        while True:
            frames = await dealer.recv_multipart()
            future = futures.pop(frames[0], None)
            if future is not None and not future.done():
                future.set_result(frames[2])

    reader = asyncio.get_running_loop().create_task(read())

    async def call(body: bytes) -> bytes:
        token = next(tokens).to_bytes(8, "big")
        future = asyncio.get_running_loop().create_future()
        futures[token] = future
        await dealer.send_multipart([token, b"", body])
        return await future

    call.reader = reader  # type: ignore[attr-defined]  # kept alive while call is
    return call


def window(count: int, cpu: float, elapsed: float, lost: int) -> dict:
    return {
        "requests": count,
        "rps": count / elapsed,
        "cpu_us_per_request": 1e6 * cpu / count if count else None,
        "seconds": elapsed,
        "lost": lost,
    }


def loop(endpoint: str, kind: str, seconds: float, warmup: float) -> dict:
    """One thread, one request after another: req/s and CPU over seconds after warmup."""
    if kind == "bare":
        call = bare_dealer(endpoint)
    elif kind == "client":
        call = Client(endpoint).request
    else:  # the legacy function, with a routing id fixed for this process's calls
        routing_id = f"bench-{os.getpid()}".encode()

        def call(body: bytes) -> bytes:
            reply = legacy_request(endpoint, routing_id, body, TIMEOUT, 3)
            if reply is None:
                raise NoReply([endpoint], 4, TIMEOUT)
            return reply

    now = time.perf_counter()
    start, end = now + warmup, now + warmup + seconds
    count = lost = 0
    cpu: float | None = None
    while now < end:
        if cpu is None and now >= start:
            start, cpu, count = now, time.process_time(), 0
        try:
            if call(BODY) == REPLY:
                count += 1
            else:
                lost += 1
        except FAILED:
            lost += 1
        now = time.perf_counter()
    return window(count, time.process_time() - (cpu or 0.0), now - start, lost)


async def inflight(endpoint: str, kind: str, n: int, seconds: float, warmup: float) -> dict:
    """n coroutines, each looping a request on one client: req/s and CPU over seconds
    after warmup."""
    call = bare_async_dealer(endpoint) if kind == "bare" else AsyncClient(endpoint).request
    counts = {"answered": 0, "lost": 0}
    stopping = False

    async def worker() -> None:
        while not stopping:
            try:
                reply = await call(BODY)
            except FAILED:
                counts["lost"] += 1
                continue
            counts["answered" if reply == REPLY else "lost"] += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(n)]
    await asyncio.sleep(warmup)
    start, cpu, first = time.perf_counter(), time.process_time(), counts["answered"]
    await asyncio.sleep(seconds)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    measured = counts["answered"] - first
    stopping = True
    _, unfinished = await asyncio.wait(workers, timeout=GRACE)
    for task in unfinished:
        task.cancel()
    return window(measured, cpu, elapsed, counts["lost"] + len(unfinished))


def threads(endpoint: str, count: int, each: int) -> dict:
    """count threads share one Client, each sending each requests one after another;
    the clock starts once the client is connected (one request) and all threads wait."""
    client = Client(endpoint)
    lost = [0] * count
    client.request(BODY)
    barrier = threading.Barrier(count + 1)

    def run(n: int) -> None:
        barrier.wait()
        for _ in range(each):
            try:
                lost[n] += client.request(BODY) != REPLY
            except FAILED:
                lost[n] += 1

    started = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in started:
        thread.start()
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for thread in started:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    requests = count * each
    return {
        "seconds": elapsed,
        "requests": requests,
        "cpu_us_per_request": 1e6 * cpu / requests,
        "lost": sum(lost),
    }


async def burst(endpoint: str, n: int) -> dict:
    """n requests at once on one AsyncClient (connected beforehand: one request), one try
    each with a timeout generous enough: the wall time until the last reply."""
    async with AsyncClient(endpoint, timeout=10, retries=0) as client:
        await client.request(BODY)
        start, cpu = time.perf_counter(), time.process_time()
        replies = await asyncio.gather(
            *(client.request(BODY) for _ in range(n)), return_exceptions=True
        )
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    for reply in replies:
        if isinstance(reply, BaseException) and not isinstance(reply, FAILED):
            raise reply
    return {
        "seconds": elapsed,
        "requests": n,
        "cpu_us_per_request": 1e6 * cpu / n,
        "lost": sum(reply != REPLY for reply in replies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    modes = parser.add_subparsers(dest="mode", required=True)
    mode = modes.add_parser("loop")
    mode.add_argument("kind", choices=["client", "bare", "legacy"])
    mode.add_argument("seconds", type=float)
    mode.add_argument("--warmup", type=float, default=WARMUP)
    mode = modes.add_parser("inflight")
    mode.add_argument("kind", choices=["client", "bare"])
    mode.add_argument("n", type=int)
    mode.add_argument("seconds", type=float)
    mode.add_argument("--warmup", type=float, default=WARMUP)
    mode = modes.add_parser("threads")
    mode.add_argument("count", type=int)
    mode.add_argument("each", type=int)
    mode = modes.add_parser("burst")
    mode.add_argument("n", type=int)
    args = parser.parse_args()
    if args.mode == "loop":
        result = loop(args.endpoint, args.kind, args.seconds, args.warmup)
    elif args.mode == "inflight":
        result = asyncio.run(inflight(args.endpoint, args.kind, args.n, args.seconds, args.warmup))
    elif args.mode == "threads":
        result = threads(args.endpoint, args.count, args.each)
    else:
        result = asyncio.run(burst(args.endpoint, args.n))
    print(json.dumps(result), flush=True)
    os._exit(0)  # no waiting on sockets or threads left open: the figures are out


if __name__ == "__main__":
    main()
