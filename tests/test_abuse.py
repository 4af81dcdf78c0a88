"""Peers that fill a connection's pipe and then reset it: libzmq 4.3.5 aborted the whole
server on them (`Assertion failed: !_io_error (src/stream_engine_base.cpp:310)`, exit
status -6) when that connection's input was stopped at the high-water mark and then had
a heartbeat PING, or a PONG owed to the peer, to send. Each test runs one hostile peer
from abusers.py against a real server.py, then asks that the server still runs 3 s
after the peer closed, answers a normal request, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
import zmq
from abusers import (
    Curve,
    mdp_service_flood,
    raw_ping_fill,
    raw_worker_flood,
    unread_flood,
)
from harness import WAIT, receive, rss_kib, start_broker, start_worker

SURVIVE = 3.0  # seconds after the abuser's close that the server must still be running
BIG = "tests.sample_handlers:big"  # replies int(request) bytes: b"65536" asks for 64 KiB


def probe(context: zmq.Context, endpoint: str, body: bytes, curve: Curve | None = None) -> bytes:
    """One correlated request from a fresh DEALER, as client.py sends it; the reply body."""
    with context.socket(zmq.DEALER) as sock:
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        sock.send_multipart([b"probe", b"", body])
        reply = receive(sock)
    assert reply[:2] == [b"probe", b""], reply
    return reply[2]


def abuse_and_survive(server, abuse: Callable[[], object]) -> str:
    """Run the abuser; fail at once if the server dies within SURVIVE seconds of its
    close. Returns the RSS the server grew by, for the table."""
    pid = server.process.popen.pid
    before = rss_kib(pid)
    try:
        abuse()
    except (OSError, zmq.ZMQError):  # TimeoutError included: no connection to a dead server
        if server.process.popen.poll() is None:
            raise
    closed = time.monotonic()
    grown = max(rss_kib(pid) - before, 0)
    try:
        code = server.process.popen.wait(SURVIVE)
    except subprocess.TimeoutExpired:
        return f"RSS grew {grown / 1024:.0f} MiB"
    server.process.finish()
    aborts = [line for line in server.process.err if "Assertion failed" in line]
    raise AssertionError(
        f"server exited {code} {time.monotonic() - closed:.1f} s after the abuser closed"
        f" ({aborts or 'no assertion line'})\n{server.process}"
    )


def stop(server) -> None:
    """SIGTERM: the server drains and exits 0, not -6."""
    server.process.signal(signal.SIGTERM)
    code = server.process.finish()
    assert code == 0, f"exit status {code}\n{server.process}"
    assert not any("Assertion failed" in line for line in server.process.err), server.process


def broker_with_worker(start_server, spawn, *args: str, keys=None):
    """server.py --backend with one worker.py registered for the plain clients' service;
    with keys (the conftest fixture's), the worker is w1, over CURVE."""
    server, backend = start_broker(start_server, "--graceful-timeout", "5", *args)
    curve = []
    if keys is not None:
        curve = ["--curve-secret", str(keys / "keys" / "w1.key_secret")]
        curve += ["--curve-server", str(keys / "keys" / "server.key")]
    start_worker(spawn, server, backend, *curve)
    return server, backend


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_an_mdp_client_flooding_made_up_services_then_closing(start_server, spawn, context, record):
    server, _ = broker_with_worker(start_server, spawn, "--quiet")
    grown = abuse_and_survive(server, lambda: mdp_service_flood(server.endpoint))
    assert probe(context, server.endpoint, b"after") == b"after"
    stop(server)
    record(
        "one MDP client: 13,000 requests for 2,000 made-up services, then closing (--backend)",
        1,
        f"server up {SURVIVE:g} s after the close; {grown}; a worker's client served; "
        "SIGTERM exits 0",
    )


def test_clients_flooding_without_reading_64_kib_replies_then_closing(
    start_server, context, record
):
    server = start_server("--handler", BIG, "--graceful-timeout", "5")
    rounds = 2  # the old server aborted on 19 of 20 rounds: 2 make a miss rare

    def abuse() -> None:
        for _ in range(rounds):
            if server.process.popen.poll() is None:
                unread_flood(server.endpoint)

    grown = abuse_and_survive(server, abuse)
    assert probe(context, server.endpoint, b"10") == b"x" * 10
    stop(server)
    record(
        "20 clients each sending 5,000 requests for 64 KiB replies, reading none, then "
        "closing (twice)",
        rounds * 20,
        f"server up {SURVIVE:g} s after the close; {grown}; the next client served; "
        "SIGTERM exits 0",
    )


@pytest.mark.parametrize("broker", [False, True], ids=["threads", "broker"])
def test_raw_zmtp_peers_sending_pings_among_a_flood_then_resetting(
    start_server, spawn, context, record, broker
):
    if broker:
        server, _ = broker_with_worker(start_server, spawn, "--quiet")
        answer, where, served = b"after", "to a broker (--backend)", "a worker's client"
    else:
        server = start_server("--work-time", "0", "--quiet", "--graceful-timeout", "5")
        answer, where, served = b"World", "(threads)", "the next client"
    rounds = 3
    done = 0

    def abuse() -> None:
        nonlocal done
        done = raw_ping_fill(server.port, rounds)

    grown = abuse_and_survive(server, abuse)
    assert done == rounds, f"only {done} of {rounds} rounds: the server dropped the peer"
    assert probe(context, server.endpoint, b"after") == answer
    stop(server)
    record(
        f"raw ZMTP 3.1 peer {where}: 200,000 one-byte messages with a PING every 50, then "
        "a reset (SO_LINGER 0)",
        rounds,
        f"server up {SURVIVE:g} s after the last reset; {grown}; {served} served; SIGTERM exits 0",
    )


def test_a_raw_worker_flooding_the_backend_then_resetting(start_server, spawn, context, record):
    server, backend = broker_with_worker(start_server, spawn, "--quiet")
    rounds = 3
    done = 0

    def abuse() -> None:
        nonlocal done
        done = raw_worker_flood(port_of(backend), rounds)

    grown = abuse_and_survive(server, abuse)
    assert done == rounds, f"only {done} of {rounds} rounds: the server dropped the peer"
    assert probe(context, server.endpoint, b"after") == b"after"
    stop(server)
    record(
        "raw MDP worker on the backend: READY, 200,000 HEARTBEATs with a PING every 50, "
        "then a reset",
        rounds,
        f"server up {SURVIVE:g} s after the last reset; {grown}; the registered worker "
        "served the next client; SIGTERM exits 0",
    )


def test_an_mdp_client_with_libzmq_heartbeats_flooding_then_closing(
    start_server, spawn, context, record
):
    server, _ = broker_with_worker(start_server, spawn, "--quiet")
    grown = abuse_and_survive(server, lambda: mdp_service_flood(server.endpoint, heartbeat_ms=50))
    assert probe(context, server.endpoint, b"after") == b"after"
    stop(server)
    record(
        "one MDP client with HEARTBEAT_IVL 50 ms (PINGs among its requests): 13,000 "
        "requests for 2,000 made-up services, then closing (--backend)",
        1,
        f"server up {SURVIVE:g} s after the close; {grown}; a worker's client served; "
        "SIGTERM exits 0",
    )


def test_a_curve_mdp_client_flooding_made_up_services_then_closing(
    start_server, spawn, context, keys, record
):
    """Messages reach the pipe decrypted, so CURVE fills it as plain TCP does. (Not in
    thread mode: there the one I/O thread decrypting was slower than the old server's
    poll loop, whose pipe never filled; the old broker, which stopped reading at 10,000
    requests, is the reproduction.)"""
    key = lambda name, kind="key": str(keys / "keys" / f"{name}.{kind}")  # noqa: E731
    server, _ = broker_with_worker(
        start_server, spawn, "--quiet",
        "--curve-secret", key("server", "key_secret"),
        "--curve-clients", str(keys / "clients"), "--curve-workers", str(keys / "workers"),
        keys=keys,
    )  # fmt: skip
    alice = Curve.from_files(key("alice", "key_secret"), key("server"))
    grown = abuse_and_survive(server, lambda: mdp_service_flood(server.endpoint, curve=alice))
    assert probe(context, server.endpoint, b"after", alice) == b"after"
    stop(server)
    record(
        "one CURVE MDP client: 13,000 requests for 2,000 made-up services, then closing "
        "(--backend, CURVE on both sockets)",
        1,
        f"server up {SURVIVE:g} s after the close; {grown}; a worker's client served; "
        "SIGTERM exits 0",
    )


def test_the_raw_peers_stop_when_nobody_listens():
    """A server that died under them costs the raw peers no exception and no wait."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    start = time.monotonic()
    assert raw_ping_fill(port, rounds=2) == 0
    assert raw_worker_flood(port, rounds=2) == 0
    assert time.monotonic() - start < WAIT
