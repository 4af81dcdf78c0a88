#!/usr/bin/env python3
"""Load generator for bench.py, run as its own process so it never shares an
interpreter with the server it measures. Prints one JSON object on stdout.

    load.py ENDPOINT rate C SECONDS --server-pid PID   C DEALERs, one request in flight
                                                       each, for SECONDS after a warm-up
    load.py ENDPOINT once C                            C DEALERs send one request each;
                                                       wall time until the last reply
    load.py ENDPOINT idle C                            C DEALERs connect and are served
                                                       once, print the JSON, then hold
                                                       the connections until stdin closes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import zmq

WARMUP = 0.3  # seconds before the measured window, so connections are up and warm
GRACE = 5.0  # how long replies still due may take at the end before they count as lost


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(context: zmq.Context, endpoint: str, count: int) -> list[zmq.Socket]:
    """count DEALERs, returned once every one has finished its handshake, so that no
    measurement includes setting up connections."""
    sockets = []
    for _ in range(count):
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # writable only once the connection is up
        socket.connect(endpoint)
        sockets.append(socket)
    poller = zmq.Poller()
    for socket in sockets:
        poller.register(socket, zmq.POLLOUT)
    deadline = time.monotonic() + 30
    while poller.sockets and time.monotonic() < deadline:
        for socket, _ in poller.poll(1000):
            poller.unregister(socket)
    if poller.sockets:
        raise SystemExit(f"load.py: {len(poller.sockets)} connections not up after 30 s")
    return sockets


def wait_replies(poller: zmq.Poller, due: dict, seconds: float) -> None:
    """Receive replies until none is due or seconds pass."""
    deadline = time.monotonic() + seconds
    while due and (left := deadline - time.monotonic()) > 0:
        for socket, _ in poller.poll(left * 1000):
            socket.recv()
            due.pop(socket, None)


def rate(context, endpoint, clients, seconds, server_pid, warmup=WARMUP) -> dict:
    sockets = connect(context, endpoint, clients)
    poller = zmq.Poller()
    for socket in sockets:
        poller.register(socket, zmq.POLLIN)
    due: dict[zmq.Socket, float] = {}
    latencies: list[float] = []
    now = time.perf_counter()
    for socket in sockets:
        socket.send(b"Hello")
        due[socket] = now
    start = now + warmup
    end = start + seconds
    cpu_start = None
    while now < end:
        if cpu_start is None and now >= start:
            cpu_start = cpu_seconds(server_pid)
            latencies.clear()
        for socket, _ in poller.poll(1000):
            socket.recv()
            now = time.perf_counter()
            latencies.append(now - due[socket])
            socket.send(b"Hello")
            due[socket] = now
        now = time.perf_counter()
    cpu = cpu_seconds(server_pid) - (cpu_start or 0)
    measured = len(latencies)
    wait_replies(poller, due, GRACE)
    latencies.sort()
    return {
        "requests": measured,
        "rps": measured / seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "cpu_us_per_request": 1e6 * cpu / measured if measured else None,
        "lost": len(due),
    }


def once(context, endpoint, clients, timeout) -> dict:
    sockets = connect(context, endpoint, clients)
    poller = zmq.Poller()
    for socket in sockets:
        poller.register(socket, zmq.POLLIN)
    start = time.perf_counter()
    due = {}
    for socket in sockets:
        socket.send(b"Hello")
        due[socket] = start
    wait_replies(poller, due, timeout)
    return {"seconds": time.perf_counter() - start, "lost": len(due)}


def idle(context, endpoint, clients, timeout) -> dict:
    result = once(context, endpoint, clients, timeout)
    print(json.dumps(result), flush=True)
    sys.stdin.read()  # hold the connections until bench.py closes our stdin
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("mode", choices=["rate", "once", "idle"])
    parser.add_argument("clients", type=int)
    parser.add_argument("seconds", type=float, nargs="?", default=30.0)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--warmup", type=float, default=WARMUP)
    args = parser.parse_args()
    # Each DEALER holds a TCP descriptor and a mailbox descriptor.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with zmq.Context() as context:
        context.set(zmq.MAX_SOCKETS, args.clients + 16)  # libzmq's default is 1023
        context.setsockopt(zmq.LINGER, 0)
        if args.mode == "rate":
            result = rate(
                context, args.endpoint, args.clients, args.seconds, args.server_pid, args.warmup
            )
        elif args.mode == "once":
            result = once(context, args.endpoint, args.clients, args.seconds)
        else:
            idle(context, args.endpoint, args.clients, args.seconds)
            return
        print(json.dumps(result), flush=True)
        context.destroy(linger=0)


if __name__ == "__main__":
    main()
