"""The faults a production user meets: large replies, output nobody reads, servers killed
under busy workers, IPv6, ipc paths in use, signals, a bound on shutdown, leaking
handlers and worker churn. Real processes on loopback, as everywhere."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from harness import (
    ECHO,
    EPHEMERAL,
    HEARTBEAT,
    REPO,
    W02,
    WAIT,
    ask,
    dealer,
    incident_total,
    local_worker_pids,
    receive,
    start_broker,
    start_worker,
    wait_gone,
)

BIG = "tests.sample_handlers:big"
ALOUD = "tests.sample_handlers:echo_aloud"


def start_processes(start_server, *args: str, count: int = 1):
    """server.py --processes N, returned once its workers are registered."""
    server = start_server("--processes", str(count), "--worker-heartbeat", HEARTBEAT, *args)
    server.process.wait_count(r"^Worker ready", count)
    server.process.wait_count(r"worker \S+ ready", count, "err")
    return server


# Large replies


def test_a_reply_larger_than_the_client_frame_cap_reaches_the_client(
    start_server, run_client, record
):
    """2 MB from a worker process, at the default caps (1 MiB for clients' frames)."""
    server = start_processes(start_server, "--handler", BIG)
    result = run_client("1", "2000000", "--connect", server.endpoint, "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: " + "x" * 2_000_000
    assert run_client("2", "10", "--connect", server.endpoint).stdout.endswith("x" * 10 + "\n")
    server.process.signal(signal.SIGTERM)
    assert server.process.finish(timeout=5) == 0
    record(
        "a 2 MB reply from a worker process (clients' frame cap 1 MiB)",
        1,
        "delivered; the worker served the next request; SIGTERM exits 0",
    )


def test_a_reply_over_max_reply_size_is_an_error_and_the_worker_serves_on(start_server, run_client):
    server = start_processes(start_server, "--handler", BIG, "--max-reply-size", "1048576")
    started = time.monotonic()
    failed = run_client("1", "2000000", "--connect", server.endpoint, "--timeout", "5")
    assert failed.returncode == 3, failed.stderr
    assert failed.stderr == "client.py: the server answered with an error: reply too large\n"
    assert time.monotonic() - started < 5  # answered, not timed out
    server.process.wait_for("a reply of 2000000 bytes is over --max-reply-size 1048576", "err")
    assert run_client("2", "10", "--connect", server.endpoint).returncode == 0
    server.process.signal(signal.SIGTERM)
    assert server.process.finish(timeout=5) == 0


# Output that cannot be written


@pytest.mark.parametrize(
    "mode", [["--workers", "4"], ["--processes", "2"]], ids=["threads", "processes"]
)
def test_a_closed_stdout_never_stops_the_server(run_client, tmp_path, record, mode):
    """As `python server.py | head -1`: stdout closed right after the Listening line."""
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "server.py"), "--bind", EPHEMERAL, "--work-time", "0"]
            + [*mode, "--worker-heartbeat", HEARTBEAT],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        while not (line := server.stdout.readline()).startswith("Listening on") and line:
            pass
        endpoint = line.split()[-1]
        server.stdout.close()
        for client in range(3):
            result = run_client(str(client), "--connect", endpoint)
            assert result.returncode == 0, result.stderr + log.read_text()
        server.send_signal(signal.SIGTERM)
        assert server.wait(WAIT) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(WAIT)
    text = log.read_text()
    assert "cannot write to stdout" in text and "Traceback" not in text, text
    assert "exited" not in text, text  # no worker died of it, none was restarted
    assert "since start: 3 answered, 0 error replies, 0 dropped" in text, text
    record(
        f"stdout closed after the Listening line ({' '.join(mode)})",
        3,
        "logged once on stderr; clients served; no worker restarted; SIGTERM exits 0",
    )


# No orphans, no leftovers


def test_a_worker_busy_in_a_handler_exits_when_its_server_is_killed(start_server, context, record):
    server = start_processes(start_server, "--handler", ALOUD)
    (pid,) = local_worker_pids(server)
    directory = Path(re.search(r"ipc://(\S+)/workers$", server.process.out[-1]).group(1))
    stuck = dealer(context, server.endpoint)
    stuck.send(b"60 stuck")
    server.process.wait_for("^handling 60 stuck$")
    server.process.kill()  # SIGKILL: the server can neither stop its worker nor clean up
    started = time.monotonic()
    assert wait_gone(pid, 3.0), "the worker outlived its server"
    gone_after = time.monotonic() - started
    assert directory.exists()
    second = start_processes(start_server, "--work-time", "0")
    second.process.wait_for(f"removed {re.escape(str(directory))}, left by a server", "err")
    assert not directory.exists()
    record(
        "server killed (SIGKILL) while its local worker sits in a 60 s handler",
        1,
        f"the worker exited {gone_after:.1f} s later; the next server removed the "
        "private directory",
    )


# IPv6


def test_ipv6_loopback_end_to_end(spawn, run_client):
    server = spawn("server.py", "--bind", "tcp://[::1]:*", "--backend", "tcp://[::1]:*")
    backend = server.wait_for(r"^Workers connect to (tcp://\[::1\]:\d+)$").group(1)
    endpoint = server.wait_for(r"^Listening on (tcp://\[::1\]:\d+)$").group(1)
    worker = spawn("worker.py", "--connect", backend, "--handler", ECHO)
    worker.wait_for(rf"^Worker ready for hello at {re.escape(backend)}$")
    result = run_client("6", "over IPv6", "--connect", endpoint)
    assert result.returncode == 0, f"{result.stderr}\n{server}"
    assert result.stdout.splitlines()[-1] == "Client 6 received reply: over IPv6"


def test_an_ipv6_backend_beyond_loopback_needs_curve(spawn):
    server = spawn("server.py", "--backend", "tcp://[::]:*")
    assert server.finish() == 2
    assert "is reachable beyond this machine" in server.err[0]


# ipc paths in use


def test_a_second_server_on_an_ipc_path_in_use_exits_1_and_the_first_serves(
    spawn, run_client, tmp_path
):
    endpoint = f"ipc://{tmp_path / 'server'}"
    first = spawn("server.py", "--bind", endpoint, "--work-time", "0")
    first.wait_for("^Listening on")
    second = spawn("server.py", "--bind", endpoint, "--work-time", "0")
    assert second.finish() == 1
    assert second.err == [f"server.py: cannot listen on {endpoint}: Address already in use"]
    assert run_client("1", "--connect", endpoint).returncode == 0


def test_a_stale_ipc_socket_file_is_bound_over(spawn, run_client, tmp_path):
    path = tmp_path / "server"
    first = spawn("server.py", "--bind", f"ipc://{path}", "--work-time", "0")
    first.wait_for("^Listening on")
    first.kill()
    assert path.exists()  # SIGKILL leaves the socket file, with nobody behind it
    second = spawn("server.py", "--bind", f"ipc://{path}", "--work-time", "0")
    second.wait_for("^Listening on")
    assert run_client("1", "--connect", f"ipc://{path}").returncode == 0


# Signals and the bound on shutdown


def test_sigquit_abandons_what_is_in_flight_at_once(echo_server, context):
    server = echo_server()
    stuck = dealer(context, server.endpoint, b"stuck")
    stuck.send(b"60 stuck")
    server.process.wait_for("^Received request from stuck")
    server.process.signal(signal.SIGQUIT)
    assert server.process.finish(timeout=3) == 1
    server.process.wait_for(r"1 requests still in flight after 0 s .*: abandoned", "err")


@pytest.mark.parametrize(
    "mode, bound",
    [([], 1.5), (["--workers", "0"], 2.0), (["--processes", "1"], 1.5)],
    ids=["threads", "inline", "processes"],
)
def test_graceful_timeout_bounds_the_wait_for_a_blocked_handler(start_server, context, mode, bound):
    args = ["--handler", ALOUD, "--graceful-timeout", "1"]
    if "--processes" in mode:
        server = start_processes(start_server, *args)
    else:
        server = start_server(*args, *mode)
    stuck = dealer(context, server.endpoint, b"stuck")
    stuck.send(b"60 stuck")
    server.process.wait_for("^handling 60 stuck$")
    pids = local_worker_pids(server)
    started = time.monotonic()
    server.process.signal(signal.SIGTERM)
    assert server.process.finish(timeout=5) == 1
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < bound, f"exited {elapsed:.2f} s after SIGTERM"
    abandoned = r"1 requests still in flight after 1 s|backstop: exiting now, 1 replies abandoned"
    server.process.wait_for(abandoned, "err")
    assert all(wait_gone(pid, 1.0) for pid in pids), "a local worker outlived the server"


# Leaking handlers: --max-requests


def test_max_requests_replaces_local_workers_and_loses_nothing(start_server, context, record):
    server = start_processes(start_server, "--handler", ECHO, "--max-requests", "5", count=2)
    clients = [dealer(context, server.endpoint) for _ in range(10)]
    for round_ in range(6):  # 60 requests: each worker leaves about every 5
        for i, client in enumerate(clients):
            client.send(f"0 c{i} r{round_}".encode())
        for i, client in enumerate(clients):
            assert receive(client) == [f"0 c{i} r{round_}".encode()]
    assert server.process.count(r"^Worker ready") >= 6  # the first 2 and their successors
    server.process.signal(signal.SIGTERM)
    assert server.process.finish() == 0
    server.process.wait_for("since start: 60 answered, 0 error replies, 0 dropped", "err")
    started = server.process.count(r"^Worker ready")
    record(
        "--processes 2 --max-requests 5 under 10 clients' load",
        60,
        f"{started - 2} workers replaced; 60 answered, 0 lost, 0 error replies",
    )


def test_retiring_local_workers_exit_on_their_own(
    start_server, context, tmp_path, monkeypatch, record
):
    """A worker that reaches --max-requests says DISCONNECT and exits by itself: its atexit
    hooks run (the cleanup its replacement exists for), it is not killed as hung."""
    monkeypatch.setenv("ZMQ_HELLO_EXIT_MARKS", str(tmp_path))
    server = start_processes(
        start_server, "--handler", "tests.exit_handlers:echo", "--max-requests", "3", count=1
    )
    client = dealer(context, server.endpoint)
    for n in range(16):  # each worker leaves after 3 or 4
        client.send(b"%d" % n)
        assert receive(client) == [b"%d" % n]
    exited = re.compile(r"local worker pid (\d+) exited \((.*?)\)")
    server.process.wait_count(exited.pattern, 3, "err")
    exits = [exited.search(line).groups() for line in server.process.err if exited.search(line)]
    assert all(how == "code 0" for _, how in exits), server.process
    marked = {path.name for path in tmp_path.iterdir()}
    assert {pid for pid, _ in exits} <= marked, (exits, marked)
    record(
        "--processes 1 --max-requests 3, a handler with an atexit hook",
        len(exits),
        f"{len(exits)} workers retired; each exited 0 on its own, its atexit hook ran",
    )


def test_worker_py_max_requests_leaves_and_exits_0(start_server, spawn, context):
    server, backend = start_broker(start_server)
    worker = start_worker(spawn, server, backend, "--max-requests", "2")
    assert ask(context, server.endpoint, b"one") == b"one"
    assert ask(context, server.endpoint, b"two") == b"two"
    assert worker.finish() == 0
    worker.wait_for(r"answered 2 \(--max-requests\): told the brokers, exiting", "err")
    server.process.wait_for(rf"worker \S+/{worker.popen.pid} disconnected$", "err")


# Worker churn


def test_workers_registering_and_vanishing_cost_a_bounded_log(start_server, context, record):
    server, backend = start_broker(start_server)
    before = len(server.process.err)
    peers = []
    for i in range(200):
        peer = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.ROUTING_ID, f"churn{i}".encode())
        peer.setsockopt(zmq.IMMEDIATE, 1)  # writable once connected: READY is not dropped
        peer.setsockopt(zmq.LINGER, 1000)  # and it leaves before the peer vanishes
        peer.connect(backend)
        peers.append(peer)
    for peer in peers:
        assert peer.poll(WAIT * 1000, zmq.POLLOUT), "a peer never connected"
        peer.send_multipart([b"", W02, b"\x01", b"hello"])
        peer.close()

    def all_came_and_went(lines: list[str]) -> bool:
        """200 registrations and 200 departures logged, one by one or counted"""
        came = incident_total(lines, "workers registering", r"worker churn\d+ ready")
        went = incident_total(lines, "workers leaving", r"worker churn\d+ (is gone|was silent)")
        return came == 200 and went == 200

    server.process.wait_until(all_came_and_went, "err", timeout=20)
    lines = len(server.process.err) - before
    assert lines <= 40, f"{lines} log lines for 200 workers coming and going"
    record(
        "200 MDP peers registering, then vanishing",
        200,
        f"{lines} log lines for 400 events (8 a second by name, then a count)",
    )
