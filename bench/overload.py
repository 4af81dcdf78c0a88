#!/usr/bin/env python3
"""Callers for bench.py's overload figure, run as their own process: RATE new callers a
second for SECONDS, each a client of its own (a connection of its own) that sends one
request and waits TIMEOUT seconds a try, RETRIES tries more, as an application with a
budget does. Prints one JSON object: how many callers, how many got their reply.

    overload.py ENDPOINT RATE SECONDS [--timeout 0.5] [--retries 2]

Uses this tree's AsyncClient, so each try carries its deadline to a server that reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zmq_hello import AsyncClient, NoReply  # noqa: E402  (after the path is set)


async def caller(endpoint: str, timeout: float, retries: int, waits: list[float | None]) -> None:
    loop = asyncio.get_running_loop()
    async with AsyncClient(endpoint, timeout=timeout, retries=retries) as client:
        start = loop.time()
        try:
            await client.request(b"Hello")
        except NoReply:
            waits.append(None)
        else:
            waits.append(loop.time() - start)


async def callers(endpoint: str, rate: float, seconds: float, timeout: float, retries: int) -> dict:
    loop = asyncio.get_running_loop()
    waits: list[float | None] = []
    tasks = set()
    start = loop.time()
    lag = 0.0  # the latest any caller started after its time: the generator kept up?
    for n in range(round(rate * seconds)):
        due = start + n / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        lag = max(lag, loop.time() - due)
        task = loop.create_task(caller(endpoint, timeout, retries, waits))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    answered = sorted(wait for wait in waits if wait is not None)
    return {
        "callers": len(waits),
        "answered": len(answered),
        "seconds": seconds,
        # From the first caller to the last one done: the time the answers were given in.
        "elapsed": loop.time() - start,
        "p50_ms": 1000 * answered[len(answered) // 2] if answered else None,
        "p99_ms": 1000 * answered[int(len(answered) * 0.99)] if answered else None,
        "lag_ms": 1000 * lag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("rate", type=float, help="new callers a second")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--retries", type=int, default=2)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(
        callers(args.endpoint, args.rate, args.seconds, args.timeout, args.retries)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
