#!/usr/bin/env python3
"""The second baseline: the guide's load-balancing broker (lbbroker) with worker processes.

A ROUTER for clients, a ROUTER for workers, and a list of ready workers: each request
goes to the least recently ready worker, each reply back to its client. No heartbeats,
no fairness between clients, no re-runs: the floor that server.py --processes is
measured against. Workers are REQ sockets that answer "World" at once.

    python bench/lbbroker.py [ENDPOINT] [--workers N]
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import subprocess
import sys
import tempfile

import zmq


def worker(endpoint: str) -> None:
    # Linux: die with the broker, whose bench run ends it with SIGKILL (PR_SET_PDEATHSIG).
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    with zmq.Context() as context, context.socket(zmq.REQ) as socket:
        socket.connect(endpoint)
        socket.send(b"READY")
        while True:
            client, empty, _request = socket.recv_multipart()
            socket.send_multipart([client, empty, b"World"])


def broker(endpoint: str, workers: int) -> None:
    with (
        zmq.Context() as context,
        context.socket(zmq.ROUTER) as frontend,
        context.socket(zmq.ROUTER) as backend,
        tempfile.TemporaryDirectory() as directory,
    ):
        backend.bind(f"ipc://{directory}/workers")
        children = [
            subprocess.Popen([sys.executable, __file__, "--worker", f"ipc://{directory}/workers"])
            for _ in range(workers)
        ]
        frontend.bind(endpoint)
        print(f"Listening on {frontend.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
        ready: list[bytes] = []
        poller = zmq.Poller()
        poller.register(backend, zmq.POLLIN)
        try:
            while True:
                # Take client requests only while a worker is ready for one.
                if ready and frontend not in poller:
                    poller.register(frontend, zmq.POLLIN)
                elif not ready and frontend in poller:
                    poller.unregister(frontend)
                events = dict(poller.poll())
                if backend in events:
                    address, _, client, *reply = backend.recv_multipart()
                    ready.append(address)
                    if client != b"READY":
                        frontend.send_multipart([client, reply[-1]])
                if frontend in events and ready:
                    client, request = frontend.recv_multipart()
                    backend.send_multipart([ready.pop(0), b"", client, b"", request])
        finally:
            for child in children:
                child.kill()
                child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.worker:
            worker(args.worker)
        else:
            broker(args.endpoint, args.workers)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
