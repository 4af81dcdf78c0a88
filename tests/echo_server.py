"""server.py with its handler replaced, as a user would replace it, for the tests.

The handler echoes the request. A request b"<seconds> <text>" first sleeps that long,
so tests choose each request's duration; b"boom" raises.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import server  # noqa: E402


def handle(request: bytes) -> bytes:
    if request == b"boom":
        raise RuntimeError("boom")
    seconds, _, _ = request.partition(b" ")
    if seconds.replace(b".", b"", 1).isdigit():
        time.sleep(float(seconds))
    return request


server.handle = handle
sys.exit(server.main())
