#!/usr/bin/env python3
"""The second baseline: the guide's load-balancing broker (lbbroker) with worker processes.

A ROUTER for clients, a ROUTER for workers, and a list of ready workers: each request
goes to the least recently ready worker, each reply back to its client. No heartbeats,
no fairness between clients, no re-runs: the floor that server.py --processes is
measured against. Two kinds of workers:

- the guide's: REQ sockets that answer "World" at once (the lbbroker protocol, two
  frames of envelope);
- with --mdp: this project's worker.py, the same processes server.py --processes runs,
  spoken to in MDP/0.2. Against this one, the only difference left is the broker.

    python bench/lbbroker.py [ENDPOINT] [--workers N] [--mdp]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import zmq

WORKER_PY = Path(__file__).resolve().parent.parent / "worker.py"
# worker.py re-registers after 3 heartbeats without a word from its broker; this broker
# sends none, so its workers wait an hour between them instead.
MDP_WORKER_ARGS = ["--work-time", "0", "--heartbeat", "3600"]
W02, READY, REQUEST, FINAL = b"MDPW02", b"\x01", b"\x02", b"\x04"


def worker(endpoint: str) -> None:
    # Linux: die with the broker, whose bench run ends it with SIGKILL (PR_SET_PDEATHSIG).
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    with zmq.Context() as context, context.socket(zmq.REQ) as socket:
        socket.connect(endpoint)
        socket.send(b"READY")
        while True:
            client, empty, _request = socket.recv_multipart()
            socket.send_multipart([client, empty, b"World"])


def broker(endpoint: str, workers: int, mdp: bool) -> None:
    with (
        zmq.Context() as context,
        context.socket(zmq.ROUTER) as frontend,
        context.socket(zmq.ROUTER) as backend,
        tempfile.TemporaryDirectory() as directory,
    ):
        endpoint_for_workers = f"ipc://{directory}/workers"
        backend.bind(endpoint_for_workers)
        if mdp:
            worker_script = [str(WORKER_PY), "--connect", endpoint_for_workers, *MDP_WORKER_ARGS]
            worker_script += ["--parent", str(os.getpid())]
        else:
            worker_script = [__file__, "--worker", endpoint_for_workers]
        children = [subprocess.Popen([sys.executable, *worker_script]) for _ in range(workers)]
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
                    if mdp:
                        address, _, _header, command, *rest = backend.recv_multipart()
                        if command == READY and address not in ready:
                            ready.append(address)
                        elif command == FINAL:
                            ready.append(address)
                            frontend.send_multipart([rest[0], rest[-1]])
                    else:
                        address, _, client, *reply = backend.recv_multipart()
                        ready.append(address)
                        if client != b"READY":
                            frontend.send_multipart([client, reply[-1]])
                if frontend in events and ready:
                    client, request = frontend.recv_multipart()
                    if mdp:
                        message = [ready.pop(0), b"", W02, REQUEST, client, b"", request]
                    else:
                        message = [ready.pop(0), b"", client, b"", request]
                    backend.send_multipart(message)
        finally:
            for child in children:
                child.kill()
                child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--mdp", action="store_true", help="run worker.py processes and speak MDP/0.2 to them"
    )
    parser.add_argument("--worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM (how bench.py stops it) unwinds, so that the broker ends its workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.worker:
            worker(args.worker)
        else:
            broker(args.endpoint, args.workers, args.mdp)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
