"""A handler module that fails to import in worker.py only, as if a worker's machine
lacked a library the server's has: the worker exits before it ever registers."""

import sys

if sys.argv[0].endswith("worker.py"):
    raise ImportError("a library this worker lacks")


def handle(request: bytes) -> bytes:
    return request
