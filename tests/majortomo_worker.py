"""A worker written with majortomo (an MDP/0.2 implementation from PyPI), for interop tests.

python tests/majortomo_worker.py BROKER_ENDPOINT HEARTBEAT_SECONDS
"""

import sys

from majortomo.worker import Worker

with Worker(sys.argv[1], b"hello", heartbeat_interval=float(sys.argv[2])) as worker:
    print("majortomo worker connected", flush=True)
    while True:
        client, body = worker.wait_for_request()
        worker.send_reply_final(client, [b"majortomo: " + b"".join(body)])
