"""A client that sends requests in a loop through client.request(), given several servers,
for the failover tests and benchmark: one JSON line at the end.

python tests/failover_client.py ID COUNT TIMEOUT RETRIES ENDPOINT [ENDPOINT ...]

COUNT may be a duration instead, "20s": requests one after another for that long
(bench.py's kill run). FAILOVER_ANY_REPLY=1 counts any reply as right (a handler that
does not echo).

Each request's body is "0.01 ID-N" (10 ms of work for tests/sample_handlers.py's echo);
a reply that is not the request's own body counts as wrong. "first reply" is printed
as the first comes, so that a test knows the load is under way.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from client import request  # noqa: E402

name, count, timeout, retries, *endpoints = sys.argv[1:]
tries: list[int] = []
answered = wrong = lost = 0
worst = 0.0
any_reply = os.environ.get("FAILOVER_ANY_REPLY") == "1"
until = time.monotonic() + float(count[:-1]) if count.endswith("s") else float("inf")
total = 1 << 62 if count.endswith("s") else int(count)
n = 0
while n < total and time.monotonic() < until:
    body = f"0.01 {name}-{n}".encode()
    attempts: list[int] = []
    started = time.monotonic()
    # A routing id per request: a fresh connection with the id of one just closed may find
    # the server still holding the old one, and libzmq ignores it (docs/client.md).
    routing_id = f"{name}-{n}".encode()
    reply = request(endpoints, routing_id, body, float(timeout), int(retries), attempts.append)
    worst = max(worst, time.monotonic() - started)
    tries.append(len(attempts))
    if n == 0:
        print("first reply", flush=True)
    if reply is None:
        lost += 1
    elif reply == body or any_reply:
        answered += 1
    else:
        wrong += 1
    n += 1
retried = sum(1 for attempt in tries if attempt > 1)
print(json.dumps({"answered": answered, "wrong": wrong, "lost": lost, "retried": retried,
                  "worst_s": round(worst, 3)}), flush=True)  # fmt: skip
sys.exit(1 if lost or wrong else 0)
