"""Hostile and broken peers, faults and CURVE, each against a real server on loopback.

Every case adds a row to the reliability table that pytest prints at the end (the
README's "Reliability and security" table comes from such a run).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import zmq
from harness import REPO, WAIT, Process, ask, dealer, receive, rss_kib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RAW_TRIES = 10
ZMTP3_NULL_GREETING = (
    b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32)
)
RAW_PAYLOADS = {
    # Not starting with 0xff: libzmq would read these as unversioned ZMTP 1.0 frames.
    "random bytes": random.Random(4).randbytes(4096).lstrip(b"\xff"),
    "an HTTP request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "a ZMTP greeting, then garbage": ZMTP3_NULL_GREETING + random.Random(5).randbytes(512),
    "nothing (a silent connection)": b"",
}


def wait_closed(peer: socket.socket) -> float:
    """Read (the server's greeting, say) until the server closes; return the seconds taken."""
    start = time.monotonic()
    peer.settimeout(WAIT)
    try:
        while peer.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def raise_descriptor_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.mark.parametrize("kind", RAW_PAYLOADS)
def test_raw_tcp_peers_are_refused_and_never_reach_the_handler(start_server, context, record, kind):
    server = start_server("--work-time", "0", "--heartbeat", "0.2")
    peers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(RAW_TRIES)]
    for peer in peers:
        peer.sendall(RAW_PAYLOADS[kind])
    # The server closes each one: at once if refused, after 3 heartbeats if silent.
    held = max(wait_closed(peer) for peer in peers)
    for peer in peers:
        peer.close()
    assert ask(context, server.endpoint) == b"World"
    assert server.process.count("^Received request") == 1, server.process  # the probe only
    record(
        f"raw TCP peer sending {kind}",
        RAW_TRIES,
        f"closed by the server within {held:.1f} s; nothing reached the handler; "
        "next client served",
    )


def test_a_silent_connection_is_closed_after_the_handshake_interval(start_server):
    server = start_server("--heartbeat", "0.2")
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        assert 0.5 <= wait_closed(silent) < 3.0  # 3 x 0.2 s, not libzmq's default 30 s


@pytest.fixture(scope="module")
def fuzz_target(record):
    """One server for all the fuzzing examples, with a ROUTER peer already connected."""
    process = Process(
        REPO / "server.py", "--bind", "tcp://127.0.0.1:*", "--work-time", "0", "--quiet"
    )
    context = zmq.Context()
    context.setsockopt(zmq.LINGER, 0)
    try:
        endpoint = process.wait_for(r"^Listening on (\S+)$").group(1)
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.CONNECT_ROUTING_ID, b"server")
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.connect(endpoint)
        deadline = time.monotonic() + WAIT
        while True:  # until the connection is up, a ROUTER cannot route to it
            try:
                router.send_multipart([b"server", b"up"])
                break
            except zmq.ZMQError:
                assert time.monotonic() < deadline, "ROUTER peer never connected"
                router.poll(10)
        assert receive(router) == [b"server", b"World"]
        stats = {"batches": 0, "messages": 0}
        yield process, endpoint, context, router, stats
        record(
            "fuzzing (hypothesis): random multipart messages, 1-24 frames of 0-300 "
            "bytes, from DEALER and ROUTER peers",
            stats["messages"],
            f"{stats['batches']} batches; after each a normal request was answered",
        )
    finally:
        process.kill()
        context.destroy(linger=0)


def probe_after(socket: zmq.Socket, envelope: list[bytes]) -> None:
    """Send a correlated request after a batch on the same connection; since one
    connection's messages are handled in order, its reply means the batch was handled."""
    token = os.urandom(8)
    socket.send_multipart([*envelope, token, b"", b"probe"])
    deadline = time.monotonic() + WAIT
    while True:
        reply = receive(socket, max(deadline - time.monotonic(), 0.001))
        if reply[len(envelope) :] == [token, b"", b"World"]:
            return


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(
        st.lists(st.binary(max_size=300), min_size=1, max_size=24), min_size=1, max_size=8
    ),
    from_router=st.booleans(),
    routing_id=st.binary(min_size=1, max_size=200),
)
def test_fuzzed_messages_never_kill_the_server(fuzz_target, batch, from_router, routing_id):
    process, endpoint, context, router, stats = fuzz_target
    stats["batches"] += 1
    stats["messages"] += len(batch)
    if from_router:
        for frames in batch:
            router.send_multipart([b"server", *frames])
        probe_after(router, [b"server"])
    else:
        # A unique prefix: a reused id would be ignored while its last owner lingers.
        unique_id = f"fuzz{stats['batches']}-".encode() + routing_id
        with dealer(context, endpoint, unique_id) as peer:
            for frames in batch:
                peer.send_multipart(frames)
            probe_after(peer, [])
    assert process.popen.poll() is None


def test_huge_multiparts_are_refused_and_memory_stays_bounded(start_server, context, record):
    server = start_server("--work-time", "0", "--quiet")
    before = rss_kib(server.process.popen.pid)
    huge = [b"xy"] * 100_000
    with dealer(context, server.endpoint, b"huge") as peer:
        for _ in range(5):
            peer.send_multipart(huge)
            assert receive(peer) == [b"ERROR: malformed request"]
    grown = rss_kib(server.process.popen.pid) - before
    server.process.wait_for(r"malformed request from huge \(over 16 frames\)", "err")
    assert ask(context, server.endpoint) == b"World"
    assert grown < 64 * 1024, f"RSS grew {grown} KiB"
    record(
        "a multipart message of 100,000 frames",
        5,
        f"answered with an error; RSS grew {grown / 1024:.1f} MiB; next client served",
    )


def test_oversize_frames_disconnect_their_sender(start_server, context, record):
    server = start_server("--work-time", "0", "--max-message-size", "65536", "--quiet")
    before = rss_kib(server.process.popen.pid)
    for _ in range(5):
        with dealer(context, server.endpoint, b"oversize") as peer:
            peer.send(b"x" * (64 * 1024 * 1024))
            assert not peer.poll(300)
    grown = rss_kib(server.process.popen.pid) - before
    assert ask(context, server.endpoint) == b"World"
    assert grown < 32 * 1024, f"RSS grew {grown} KiB"
    record(
        "a 64 MiB frame (over --max-message-size)",
        5,
        f"sender disconnected; RSS grew {grown / 1024:.1f} MiB; next client served",
    )


def test_a_greedy_client_does_not_starve_the_others(echo_server, context, run_client, record):
    server = echo_server("--quiet")  # 16 workers, 64 waiting, the rest refused
    pid = server.process.popen.pid
    before = rss_kib(pid)
    greedy = context.socket(zmq.DEALER)
    greedy.setsockopt(zmq.ROUTING_ID, b"greedy")
    greedy.setsockopt(zmq.SNDHWM, 0)
    greedy.setsockopt(zmq.RCVHWM, 1)
    greedy.setsockopt(zmq.RCVBUF, 4096)  # and never reads: its replies back up
    greedy.connect(server.endpoint)
    sent = 20_000
    for _ in range(sent):
        greedy.send(b"x" * 4096)  # echoed: 80 MB of replies it will never read
    start = time.monotonic()
    served = run_client("polite", "--connect", server.endpoint, "--timeout", "2", "--retries", "0")
    waited = time.monotonic() - start
    assert served.returncode == 0, served.stderr
    server.process.wait_for(r"dropped a reply to greedy: its queue is full$", "err")
    # Its flood of drops is one line at once, then one line a second with a count.
    server.process.wait_for(
        r"dropped replies: \d+ more \(latest: dropped a reply to greedy: its queue is full\)",
        "err",
    )
    grown = rss_kib(pid) - before
    # The server reads every request as it comes (no receive high-water mark: see
    # docs/reliability.md), so its 80 MB burst passes through the server's memory, and
    # the allocator keeps what it took; 1,000 replies of 4 KiB stay queued to it.
    assert grown < 256 * 1024, f"RSS grew {grown} KiB"
    record(
        "a greedy client pipelining 20,000 requests of 4 KiB and never reading",
        1,
        f"another client answered in {waited:.2f} s (client.py start-up included); "
        f"its replies dropped and logged once its queue was full; RSS grew {grown / 1024:.1f} MiB",
    )


def test_a_pipelining_client_uses_every_worker_until_another_arrives(echo_server, context, record):
    """Work-conserving and fair: alone, a client's 6 requests run 4 at once on 4 workers;
    a client arriving meanwhile waits for one worker to free, not for that whole queue."""
    server = echo_server("--workers", "4")
    hog = dealer(context, server.endpoint, b"hog")
    start = time.monotonic()
    for i in range(6):
        hog.send(f"1 hog{i}".encode())
    for i in range(6):
        server.process.wait_for(f"^Received request from hog: 1 hog{i}$")
    other = dealer(context, server.endpoint, b"other")
    other.send(b"0.2 other")
    server.process.wait_for("^Received request from other")
    first_four = [receive(hog) for _ in range(4)]
    four_done = time.monotonic() - start
    assert sorted(reply[0] for reply in first_four) == [f"1 hog{i}".encode() for i in range(4)]
    assert receive(other) == [b"0.2 other"]
    other_done = time.monotonic() - start
    # Its turn came with the first free worker, before the hog's last two requests.
    assert not hog.poll(0), "the hog's queue ran before the other client's request"
    last_two = [receive(hog) for _ in range(2)]
    assert sorted(reply[0] for reply in last_two) == [b"1 hog4", b"1 hog5"]
    assert four_done < 1.6, f"4 requests on 4 workers took {four_done:.2f} s, not 1 s"
    assert other_done < 1.0 + 0.2 + 0.6, f"the other client waited {other_done:.2f} s"
    record(
        "one client pipelining 6 slow (1 s) requests to 4 workers, then another client",
        1,
        f"it ran 4 at once ({four_done:.2f} s for the first 4); the other client was answered "
        f"at {other_done:.2f} s, with the first free worker, not after the queue (2.2 s)",
    )


def test_a_frozen_client_is_dropped_by_heartbeats(echo_server, spawn, run_client, record):
    server = echo_server("--heartbeat", "0.5")
    frozen = spawn(
        "client.py", "frozen", "4 frozen", "--connect", server.endpoint, "--timeout", "30"
    )
    server.process.wait_for("^Received request from frozen")
    frozen.signal(signal.SIGSTOP)
    try:
        # Its TCP connection is still up: only heartbeats can tell the server it is gone
        # before the reply is due, 4 s after the request.
        server.process.wait_for("dropped a reply to frozen: client is gone", "err")
        assert server.process.count("^Sent reply to frozen") == 0
        assert run_client("next", "--connect", server.endpoint).returncode == 0
    finally:
        frozen.signal(signal.SIGCONT)
    record(
        "a client frozen with SIGSTOP mid-request (--heartbeat 0.5)",
        1,
        "dropped by heartbeats before its reply was due (4 s); the reply dropped and "
        "logged; next client served",
    )


def test_clients_killed_mid_request(echo_server, spawn, run_client, record):
    server = echo_server()
    victims = [
        spawn("client.py", f"victim{i}", "1 doomed", "--connect", server.endpoint) for i in range(5)
    ]
    for i in range(5):
        server.process.wait_for(f"^Received request from victim{i}:")
    for victim in victims:
        victim.popen.kill()
    server.process.wait_incidents("dropped replies", "dropped a reply to victim", 5)
    assert run_client("next", "--connect", server.endpoint).returncode == 0
    record("clients killed with SIGKILL mid-request", 5, "drops logged; next client served")


def test_a_connection_flood_loses_no_reply(start_server, record):
    raise_descriptor_limit()
    server = start_server("--work-time", "0.01", "--quiet")
    with zmq.Context() as context:
        context.set(zmq.MAX_SOCKETS, 2048)  # libzmq's default is 1023 a context
        context.setsockopt(zmq.LINGER, 0)
        idle = [dealer(context, server.endpoint) for _ in range(1000)]
        active = [dealer(context, server.endpoint) for _ in range(200)]
        rounds, lost = 3, 0
        for _ in range(rounds):
            for each in active:
                each.send_multipart([b"t", b"", b"Hello"])
            for each in active:
                lost += receive(each) != [b"t", b"", b"World"]
        assert lost == 0
        assert ask(context, server.endpoint) == b"World"
        assert server.process.popen.poll() is None
        for each in idle + active:
            each.close()
    record(
        "1000 idle connections + 200 active clients",
        rounds * 200,
        f"{rounds * 200} replies delivered, {lost} lost",
    )


def test_running_out_of_descriptors_is_reported_and_survived(spawn, context, record):
    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    server = spawn(
        "server.py", "--bind", "tcp://127.0.0.1:*", "--heartbeat", "0.2", preexec_fn=few_descriptors
    )
    endpoint = server.wait_for(r"^Listening on (\S+)$").group(1)
    port = int(endpoint.rsplit(":", 1)[1])
    peers = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    server.wait_for(r"cannot accept a connection: Too many open files \(see ulimit -n\)", "err")
    for peer in peers:
        peer.close()
    assert ask(context, endpoint) == b"World"
    assert server.popen.poll() is None
    record(
        "100 connections to a server limited to 64 descriptors",
        100,
        "failed accepts logged (once a second at most); served again once they closed",
    )


def test_a_client_retry_reaches_a_restarted_server(echo_server, spawn, record):
    first = echo_server()
    client = spawn(
        "client.py",
        "patient",
        "0.2 again",
        "--connect",
        first.endpoint,
        "--timeout",
        "1",
        "--retries",
        "5",
    )
    first.process.wait_for("^Received request from patient")
    first.process.kill()
    echo_server("--bind", first.endpoint)
    assert client.finish() == 0, client
    assert client.out[-1] == "Client patient received reply: 0.2 again"
    record(
        "server killed (SIGKILL) and restarted while a client waits", 1, "the retry got its reply"
    )


def test_make_keys_writes_secret_keys_for_their_owner_only(keys):
    for name in ("server", "alice", "mallory"):
        assert stat.S_IMODE((keys / "keys" / f"{name}.key_secret").stat().st_mode) == 0o600
        assert stat.S_IMODE((keys / "keys" / f"{name}.key").stat().st_mode) == 0o644
    again = subprocess.run(
        [sys.executable, str(REPO / "make_keys.py"), str(keys / "keys"), "alice"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 1 and "not overwritten" in again.stderr


def test_curve_serves_allowed_clients_and_refuses_the_rest(start_server, run_client, keys, record):
    key = lambda name, kind="key": str(keys / "keys" / f"{name}.{kind}")  # noqa: E731
    server = start_server(
        "--work-time",
        "0",
        "--curve-secret",
        key("server", "key_secret"),
        "--curve-clients",
        str(keys / "clients"),
    )
    allowed = ["--curve-secret", key("alice", "key_secret"), "--curve-server", key("server")]
    served = run_client("alice", "--connect", server.endpoint, *allowed)
    assert served.returncode == 0 and served.stdout.endswith("received reply: World\n"), served
    refused = {
        "an unknown client key": [
            "--curve-secret",
            key("mallory", "key_secret"),
            "--curve-server",
            key("server"),
        ],
        "a wrong server key": [
            "--curve-secret",
            key("alice", "key_secret"),
            "--curve-server",
            key("mallory"),
        ],
        "a plaintext client": [],
    }
    for case, curve in refused.items():
        result = run_client(
            "intruder", "--connect", server.endpoint, "--timeout", "0.5", "--retries", "1", *curve
        )
        assert result.returncode == 1, (case, result)
        assert result.stderr.count("\n") == 1 and "no reply from" in result.stderr, (case, result)
        record(f"CURVE server, {case}", 2, "refused; never reached the handler; one-line timeout")
    assert server.process.count("^Received request from intruder") == 0
    assert run_client("alice", "--connect", server.endpoint, *allowed).returncode == 0
    assert server.process.count("^Received request from alice") == 2


def test_a_bind_beyond_loopback_without_curve_warns(spawn):
    server = spawn("server.py", "--bind", "tcp://0.0.0.0:*")
    server.wait_for(r"listening on tcp://0\.0\.0\.0:\d+ beyond this machine without CURVE", "err")
    server.wait_for(r"^Listening on tcp://0\.0\.0\.0:\d+$")  # ready, signals handled
    server.signal(signal.SIGTERM)
    assert server.finish() == 0


def test_a_loopback_bind_does_not_warn(start_server):
    server = start_server()
    server.process.signal(signal.SIGTERM)
    assert server.process.finish() == 0
    assert len(server.process.err) == 2 and "SIGTERM" in server.process.err[0]
    assert "workers:" in server.process.err[1]  # the summary at exit
