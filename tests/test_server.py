"""server.py as a user runs it: real processes on loopback, ephemeral ports."""

from __future__ import annotations

import math
import signal
import socket
import time

import pytest
import zmq
from harness import ECHO, ECHO_ASYNC, SIGNALS, WAIT, dealer, receive


def test_two_clients_are_both_answered(start_server, spawn):
    """The tutorial's scenario: `python server.py`, then clients 1 and 2."""
    server = start_server()
    clients = [spawn("client.py", name, "--connect", server.endpoint) for name in ("1", "2")]
    for name, client in zip(("1", "2"), clients, strict=True):
        assert client.finish() == 0, client
        assert client.out == [
            f"Client {name} sending 'Hello'",
            f"Client {name} received reply: World",
        ]
        server.process.wait_for(f"^Received request from {name}: Hello$")
        server.process.wait_for(f"^Sent reply to {name}$")


def test_listening_line_names_the_real_port(start_server):
    server = start_server("--bind", "tcp://127.0.0.1:*")
    assert server.port > 0
    assert server.process.out[0] == f"Listening on {server.endpoint}"


def test_port_in_use_is_one_line_and_exit_1(spawn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = spawn("server.py", "--bind", f"tcp://127.0.0.1:{port}")
        assert server.finish() == 1
    assert server.out == []
    assert len(server.err) == 1 and "Address already in use" in server.err[0], server


def test_bad_address_is_one_line_and_exit_1(spawn):
    server = spawn("server.py", "--bind", "nonsense")
    assert server.finish() == 1
    assert len(server.err) == 1 and "cannot listen on nonsense" in server.err[0], server


@pytest.mark.parametrize(
    "args",
    [
        ["--workers", "-1"],
        ["--workers", "many"],
        ["--work-time", "-1"],
        ["--max-message-size", "10"],
        ["--heartbeat", "0"],
        ["--curve-secret", "no-such-file", "--curve-clients", "."],
        ["--curve-secret", "keys/server.key_secret"],
        ["--no-such-flag"],
    ],
)
def test_bad_flags_are_one_line_and_exit_2(spawn, args):
    server = spawn("server.py", *args)
    assert server.finish() == 2
    assert server.out == [] and len(server.err) == 1, server
    assert server.err[0].startswith("server.py: error:")


KINDS = pytest.mark.parametrize("handler", [ECHO, ECHO_ASYNC], ids=["threads", "async"])


@KINDS
@pytest.mark.parametrize("clients, workers", [(8, 4), (5, 2)])
def test_n_slow_requests_take_ceil_n_over_workers_rounds(
    echo_server, context, handler, clients, workers
):
    server = echo_server("--workers", str(workers), "--quiet", handler=handler)
    dealers = [dealer(context, server.endpoint) for _ in range(clients)]
    start = time.monotonic()
    for each in dealers:
        each.send(b"0.5 x")
    for each in dealers:
        assert receive(each) == [b"0.5 x"]
    elapsed = time.monotonic() - start
    ideal = math.ceil(clients / workers) * 0.5
    # Fewer rounds would mean more than --workers at once; one more round, a stall.
    assert ideal * 0.95 <= elapsed < ideal + 0.5, f"{elapsed:.3f} s against {ideal} s"


@KINDS
def test_workers_0_runs_the_handler_inline(echo_server, context, handler):
    server = echo_server("--workers", "0", "--quiet", handler=handler)
    dealers = [dealer(context, server.endpoint) for _ in range(3)]
    start = time.monotonic()
    for each in dealers:
        each.send(b"0.2 x")
    for each in dealers:
        assert receive(each) == [b"0.2 x"]
    assert time.monotonic() - start >= 3 * 0.2 * 0.95  # one at a time, in the loop


@pytest.mark.parametrize(
    "handler, body, error",
    [
        (ECHO, "boom", "RuntimeError"),
        (ECHO_ASYNC, "boom", "RuntimeError"),
        ("tests.sample_handlers:not_bytes", "x", "TypeError"),
    ],
    ids=["threads", "async", "not-bytes"],
)
def test_a_failing_handler_gets_an_error_reply_and_the_next_is_served(
    echo_server, run_client, handler, body, error
):
    server = echo_server(handler=handler)
    failed = run_client("b", body, "--connect", server.endpoint)
    assert failed.returncode == 3
    assert (
        failed.stderr == f"client.py: the server answered with an error: handler failed ({error})\n"
    )
    server.process.wait_for("handler failed on a request", "err")
    server.process.wait_for(f"^{error}", "err")
    if handler != "tests.sample_handlers:not_bytes":
        served = run_client("next", "after", "--connect", server.endpoint)
        assert served.returncode == 0 and "received reply: after" in served.stdout


def test_an_idle_worker_takes_the_next_request(echo_server, context):
    """With one worker busy on a slow request, every fast one goes to the idle one."""
    server = echo_server("--workers", "2")
    slow = dealer(context, server.endpoint, b"slow")
    slow.send(b"3 slow")
    server.process.wait_for("^Received request from slow")
    fast = [dealer(context, server.endpoint, f"fast{i}".encode()) for i in range(4)]
    for i, each in enumerate(fast):
        each.send(f"0.2 fast{i}".encode())
    for i, each in enumerate(fast):
        assert receive(each) == [f"0.2 fast{i}".encode()]
    assert not slow.poll(0), "the slow request finished before the fast ones"
    assert receive(slow) == [b"3 slow"]


def test_quiet_prints_only_the_listening_line(start_server, run_client):
    server = start_server("--quiet", "--work-time", "0")
    assert run_client("q", "--connect", server.endpoint).returncode == 0
    server.process.signal(signal.SIGTERM)
    assert server.process.finish() == 0
    assert server.process.out == [f"Listening on {server.endpoint}"]


@pytest.mark.parametrize(
    "kind, frames, reply",
    [
        ("plain DEALER", [b"Hello"], [b"World"]),
        ("REQ-style envelope", [b"", b"Hello"], [b"", b"World"]),
        ("correlated", [b"token", b"", b"Hello"], [b"token", b"", b"World"]),
        ("proxy hops", [b"hop1", b"hop2", b"", b"Hello"], [b"hop1", b"hop2", b"", b"World"]),
        ("empty body", [b""], [b"World"]),
        ("empty frames", [b"", b"", b""], [b"", b"", b"World"]),
        ("binary body", [b"\x00\xff\n\x1b[2J"], [b"World"]),
    ],
)
def test_every_envelope_comes_back_unchanged(start_server, context, kind, frames, reply):
    server = start_server("--work-time", "0")
    client = dealer(context, server.endpoint)
    client.send_multipart(frames)
    assert receive(client) == reply


def test_req_socket_is_answered(start_server, context):
    server = start_server("--work-time", "0")
    req = context.socket(zmq.REQ)
    req.connect(server.endpoint)
    for _ in range(3):
        req.send(b"Hello")
        assert receive(req) == [b"World"]


def test_req_correlate_socket_is_answered(start_server, context):
    """libzmq's REQ_CORRELATE sends [request_id, b"", body]; the echo keeps it working."""
    server = start_server("--work-time", "0")
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.REQ_CORRELATE, 1)
    req.setsockopt(zmq.REQ_RELAXED, 1)
    req.connect(server.endpoint)
    req.send(b"Hello")
    assert receive(req) == [b"World"]


@pytest.mark.parametrize(
    "kind, frames",
    [
        ("the tutorial client's id as a data frame", [b"1", b"Hello"]),
        ("an envelope without its empty delimiter", [b"a", b"b", b"Hello"]),
        ("too many frames", [b""] * 20 + [b"Hello"]),
    ],
)
def test_malformed_requests_get_an_error_reply(start_server, context, run_client, kind, frames):
    server = start_server("--work-time", "0")
    client = dealer(context, server.endpoint, b"bad")
    client.send_multipart(frames)
    assert receive(client) == [b"ERROR: malformed request"]
    shape = f"{len(frames) + 1} frames" if len(frames) < 16 else "over 16 frames"
    server.process.wait_for(rf"malformed request from bad \({shape}\)", "err")
    assert run_client("next", "--connect", server.endpoint).returncode == 0
    assert server.process.popen.poll() is None


def test_non_utf8_ids_and_bodies_are_logged_escaped(start_server, context):
    server = start_server("--work-time", "0")
    client = dealer(context, server.endpoint, b"\xff\xfe\x01")
    client.send(b"\x00caf\xc3\xa9\n\xff" + b"x" * 100)
    assert receive(client) == [b"World"]
    line = server.process.wait_for(r"^Received request from \\xff\\xfe\\x01: ").string
    assert r"\x00café\n\xff" in line and line.endswith("... (108 bytes)")
    server.process.wait_for(r"^Sent reply to \\xff\\xfe\\x01$")


def test_oversize_frame_disconnects_only_its_sender(start_server, context, run_client):
    server = start_server("--work-time", "0", "--max-message-size", "1024")
    greedy = dealer(context, server.endpoint, b"greedy")
    greedy.send(b"x" * 1025)
    normal = dealer(context, server.endpoint, b"normal")
    normal.send(b"x" * 1024)
    assert receive(normal) == [b"World"]
    assert run_client("next", "--connect", server.endpoint).returncode == 0
    assert server.process.count("from greedy") == 0
    assert server.process.popen.poll() is None


def test_a_client_that_leaves_before_its_reply_is_logged_at_once(start_server, context, run_client):
    """The first drop of its kind is logged when it happens, not at a once-a-second report;
    the drops that follow it within the second are counted on one line, the latest named."""
    server = start_server("--work-time", "0.3")
    for i in range(3):
        leaver = dealer(context, server.endpoint, f"leaver{i}".encode())
        leaver.send(b"Hello")
        server.process.wait_for(f"^Received request from leaver{i}")
        leaver.close(linger=0)
        due = time.monotonic() + 0.3
        if i == 0:
            server.process.wait_for("dropped a reply to leaver0: client is gone$", "err")
            late = time.monotonic() - due
            assert late < 0.35, f"the drop was logged {late:.2f} s after the reply was due"
    server.process.wait_for(
        r"dropped replies: 2 more \(latest: dropped a reply to leaver2: client is gone\)$", "err"
    )
    assert server.process.count("dropped a reply to leaver1: client is gone$", "err") == 0
    assert run_client("next", "--connect", server.endpoint).returncode == 0


@KINDS
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_signal_finishes_requests_in_flight_then_exits_0(echo_server, context, signum, handler):
    server = echo_server(handler=handler)
    taken = [dealer(context, server.endpoint, f"taken{i}".encode()) for i in range(3)]
    for each in taken:
        each.send(b"1 taken")
    for i in range(3):
        server.process.wait_for(f"^Received request from taken{i}")
    server.process.signal(signum)
    server.process.wait_for(f"{signum.name}: stopped taking requests; finishing 3 in flight", "err")
    late = dealer(context, server.endpoint, b"late")
    late.send(b"late")
    for each in taken:
        assert receive(each) == [b"1 taken"]
    assert server.process.finish() == 0
    assert len(server.process.err) == 2, server.process  # no traceback
    assert "since start: 3 answered, 0 error replies, 0 dropped" in server.process.err[1]
    assert server.process.count("from late") == 0
    assert not late.poll(0)


@KINDS
def test_second_signal_exits_at_once(echo_server, context, handler):
    server = echo_server(handler=handler)
    stuck = dealer(context, server.endpoint, b"stuck")
    stuck.send(b"60 stuck")
    server.process.wait_for("^Received request from stuck")
    server.process.signal(signal.SIGTERM)
    server.process.wait_for("stopped taking requests", "err")
    server.process.signal(signal.SIGINT)
    assert server.process.finish(timeout=WAIT) == 1
    server.process.wait_for("SIGINT again: exiting now, 1 replies abandoned", "err")
