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

--protocol picks how requests are framed: plain (a bare DEALER), token and deadline
(client.py's framing, without and with a deadline), rfc18 or majortomo (MDP/0.2
clients, as RFC 18 writes them and as majortomo speaks them, for service --service;
--services N spreads the clients over N services, NAME0 to NAME<N-1>).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import sys
import time

import zmq

# The frames before the body, by --protocol; the service name goes last.
HEADS = {"plain": [], "rfc18": [b"MDPC02", b"\x01"], "majortomo": [b"", b"MDPC02", b"\x02"]}
# client.py's framing, [call frame, b"", body]: an 8-byte token alone, or the token with a
# deadline of 2.5 s (zmq_hello.deadlines: token, b"zhDL", milliseconds in 4 bytes).
TOKEN = b"\x00\x01\x02\x03\x04\x05\x06\x07"
CALL_FRAMES = {"token": TOKEN, "deadline": TOKEN + b"zhDL" + (2500).to_bytes(4, "big")}
EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
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


def requests(sockets: list[zmq.Socket], protocol: str, service: str, services: int) -> dict:
    """The request each socket sends, framed for protocol."""
    names = [service] if services == 1 else [f"{service}{n}" for n in range(services)]
    if protocol == "plain":
        return {socket: [b"Hello"] for socket in sockets}
    if protocol in CALL_FRAMES:
        return {socket: [CALL_FRAMES[protocol], b"", b"Hello"] for socket in sockets}
    head = HEADS[protocol]
    return {
        socket: [*head, names[n % len(names)].encode(), b"Hello"]
        for n, socket in enumerate(sockets)
    }


def receive(socket: zmq.Socket) -> None:
    """One whole reply, however many frames."""
    while socket.recv(copy=False).more:
        pass


def wait_replies(poller: zmq.Poller, due: dict, seconds: float) -> None:
    """Receive replies until none is due or seconds pass."""
    deadline = time.monotonic() + seconds
    while due and (left := deadline - time.monotonic()) > 0:
        for socket, _ in poller.poll(left * 1000):
            receive(socket)
            due.pop(socket, None)


class EpollPoller:
    """zmq.Poller's poll() for many DEALERs at a cost per ready socket, not per socket:
    zmq_poll asks every socket for its events on each call (about 1 us each), which at
    C = 100 made the load generator the machine's largest consumer of CPU. A socket's FD
    tells that its mailbox has news, and EVENTS reads it; a socket just used is asked
    again at the next poll, since a send may read the news of a reply that came."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.by_fd: dict[int, zmq.Socket] = {}
        self.used: list[zmq.Socket] = []

    def register(self, socket: zmq.Socket, _flags: int) -> None:
        fd = socket.getsockopt(zmq.FD)
        self.by_fd[fd] = socket
        self.epoll.register(fd, select.EPOLLIN)
        self.used.append(socket)

    def poll(self, timeout_ms: float) -> list:
        ready = {socket for socket in self.used if socket.getsockopt(EVENTS) & POLLIN}
        fds = self.epoll.poll(0 if ready else timeout_ms / 1000)
        for fd, _ in fds:
            socket = self.by_fd[fd]
            if socket.getsockopt(EVENTS) & POLLIN:
                ready.add(socket)
        self.used = list(ready)
        return [(socket, POLLIN) for socket in self.used]


def rate(
    context, endpoint, clients, seconds, server_pid, warmup=WARMUP, framed=requests, epoll=False
) -> dict:
    sockets = connect(context, endpoint, clients)
    message = framed(sockets)
    poller = EpollPoller() if epoll else zmq.Poller()
    for socket in sockets:
        poller.register(socket, zmq.POLLIN)
    due: dict[zmq.Socket, float] = {}
    latencies: list[float] = []
    now = time.perf_counter()
    for socket in sockets:
        socket.send_multipart(message[socket])
        due[socket] = now
    start = now + warmup
    end = start + seconds
    cpu_start = None
    while now < end:
        if cpu_start is None and now >= start:
            cpu_start = cpu_seconds(server_pid)
            latencies.clear()
        for socket, _ in poller.poll(1000):
            receive(socket)
            now = time.perf_counter()
            latencies.append(now - due[socket])
            socket.send_multipart(message[socket])
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
    parser.add_argument("--protocol", choices=sorted([*HEADS, *CALL_FRAMES]), default="plain")
    parser.add_argument("--service", default="hello")
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument(
        "--epoll", action="store_true", help="rate: wait on the sockets' FDs with epoll"
    )
    args = parser.parse_args()
    # Each DEALER holds a TCP descriptor and a mailbox descriptor.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with zmq.Context() as context:
        context.set(zmq.MAX_SOCKETS, args.clients + 16)  # libzmq's default is 1023
        context.setsockopt(zmq.LINGER, 0)
        if args.mode == "rate":
            result = rate(
                context,
                args.endpoint,
                args.clients,
                args.seconds,
                args.server_pid,
                args.warmup,
                lambda sockets: requests(sockets, args.protocol, args.service, args.services),
                args.epoll,
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
