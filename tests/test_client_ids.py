"""A routing id used again: client.request() in a loop with one fixed id, as
docs/failover.md's example calls it, never waits a timeout on its own previous
connection. Before, each call made a new connection under the id, and one that arrived
while the server still held the one just closed was ignored: about 1 request in 300
waited a whole timeout. Now a call keeps its connections for the next call with the
same id in the same thread."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from harness import REPO

TIMEOUT = 2.0  # each call's --timeout: a stall shows as a call this long
SLOW = TIMEOUT / 2  # a healthy call on loopback takes milliseconds, never this
REQUESTS = 2000
STALLS_SEEN_ENOUGH = 3  # a broken server costs TIMEOUT a stall: stop the loop after these


@pytest.fixture(scope="module")
def client_request() -> Callable[..., bytes | None]:
    """client.request, imported from the repository (as tests/failover_client.py does)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import client

    return client.request


@dataclass
class Loop:
    """What one loop of requests with one fixed routing id saw."""

    sent: int = 0
    answered: int = 0
    wrong: list[tuple[bytes, bytes | None]] = field(default_factory=list)  # (body, reply)
    slow: list[tuple[int, float]] = field(default_factory=list)  # (request number, seconds)

    def run(
        self,
        request: Callable[..., bytes | None],
        endpoint: str,
        routing_id: bytes,
        work: bytes,
        count: int,
        stop: threading.Event | None = None,
    ) -> None:
        """count requests one after another (or until stop is set), each by client.request
        with routing_id, no retry, TIMEOUT; each b"<work> <id>-<n>", so that the server's
        echo sleeps work seconds and returns it, and each reply must be its own."""
        for n in range(count):
            if stop is not None and stop.is_set():
                break
            sent = b"%s %s-%d" % (work, routing_id, n)
            started = time.monotonic()
            reply = request(endpoint, routing_id, sent, TIMEOUT, 0)
            took = time.monotonic() - started
            self.sent += 1
            if reply == sent:
                self.answered += 1
            else:
                self.wrong.append((sent, reply))
            if took >= SLOW:
                self.slow.append((n, round(took, 3)))
                if len(self.slow) >= STALLS_SEEN_ENOUGH:
                    break

    def check(self, name: str, count: int | None = None) -> None:
        assert not self.slow, (
            f"{name}: {len(self.slow)} of {self.sent} requests took {SLOW} s or more "
            f"(timeout {TIMEOUT} s): {self.slow}"
        )
        assert not self.wrong, f"{name}: replies missing or not our own: {self.wrong[:5]}"
        if count is not None:
            assert self.answered == count, f"{name}: {self.answered} of {count} answered"


def test_a_fixed_id_in_a_loop_never_waits_on_an_idle_server(echo_server, client_request, record):
    server = echo_server("--quiet")
    fixed = Loop()
    started = time.monotonic()
    fixed.run(client_request, server.endpoint, b"fixed", b"0", REQUESTS)
    fixed.check("fixed id, idle server", REQUESTS)
    assert time.monotonic() - started < 30, "2,000 requests on loopback take seconds"
    assert server.process.popen.poll() is None
    record(
        "client.request() 2,000 times in a loop with one fixed id, idle server",
        REQUESTS,
        f"none waited its {TIMEOUT:g} s timeout; every reply its own",
    )


def test_a_fixed_id_in_a_loop_never_waits_on_a_busy_server(echo_server, client_request, record):
    """Two worker threads kept busy by three other clients, each also looping with its own
    fixed id, so that the fixed client's requests queue behind theirs."""
    server = echo_server("--quiet", "--workers", "2")
    stop = threading.Event()
    others = [Loop() for _ in range(3)]

    threads = [
        threading.Thread(
            target=other.run,
            args=(client_request, server.endpoint, b"other-%d" % i, b"0.002", 1 << 30, stop),
            daemon=True,
        )
        for i, other in enumerate(others)
    ]
    for thread in threads:
        thread.start()
    fixed = Loop()
    try:
        fixed.run(client_request, server.endpoint, b"fixed", b"0.0005", REQUESTS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT + 5)
    fixed.check("fixed id, busy server", REQUESTS)
    for i, other in enumerate(others):
        other.check(f"other client {i}")
        assert other.answered > 100, f"other client {i} kept the server busy: {other.answered}"
    assert server.process.popen.poll() is None
    record(
        "client.request() 2,000 times in a loop with one fixed id, 2 threads kept busy by "
        "3 other looping clients",
        REQUESTS,
        f"none waited its {TIMEOUT:g} s timeout; every reply its own",
    )
