#!/usr/bin/env python3
"""A worker written with majortomo (PyPI), as its users write one, for bench.py's peer
broker: majortomo's broker with its own workers is the stack a majortomo user runs.

    majortomo_worker.py BROKER_ENDPOINT [--cpu]   # World at once, or examples/cpu.py's work
"""

import sys
from pathlib import Path

from majortomo.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples import cpu  # noqa: E402

answer = cpu.handle if "--cpu" in sys.argv[2:] else (lambda request: b"World")
with Worker(sys.argv[1], b"hello") as worker:
    print("Worker ready (majortomo)", flush=True)
    while True:
        client, body = worker.wait_for_request()
        worker.send_reply_final(client, [answer(b"".join(body))])
