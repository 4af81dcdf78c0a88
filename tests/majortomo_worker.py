"""A worker written with majortomo (an MDP/0.2 implementation from PyPI), for interop tests.

python tests/majortomo_worker.py BROKER_ENDPOINT HEARTBEAT_SECONDS [SERVICE]

It answers "majortomo: <request>"; a request b"stream N" gets N PARTIALs ("part 1" ...)
before its FINAL, as a streaming worker sends them.
"""

import sys

from majortomo.worker import Worker

service = sys.argv[3].encode() if len(sys.argv) > 3 else b"hello"
with Worker(sys.argv[1], service, heartbeat_interval=float(sys.argv[2])) as worker:
    print("majortomo worker connected", flush=True)
    while True:
        client, body = worker.wait_for_request()
        request = b"".join(body)
        if request.startswith(b"stream "):
            for part in range(1, int(request.split()[1]) + 1):
                worker.send_reply_partial(client, [b"part %d" % part])
        worker.send_reply_final(client, [b"majortomo: " + request])
