"""client.py as a user runs it: replies, timeouts, retries, exit codes."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from harness import WAIT, dealer


def free_port() -> int:
    """A port nothing listens on (the kernel's pick of an unused one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_clients_sharing_an_id_never_get_each_others_reply(echo_server, spawn):
    """libzmq swallows a second live connection's requests under the same id; the
    client's retry on a fresh connection must still get its own reply, never the other's."""
    server = echo_server()
    messages = ["0.3 alpha", "0.3 beta"]
    clients = [
        spawn("client.py", "twin", message, "--connect", server.endpoint, "--timeout", "1")
        for message in messages
    ]
    for message, client in zip(messages, clients, strict=True):
        code = client.finish(timeout=WAIT)
        assert code in (0, 1), client
        if code == 0:
            assert client.out[-1] == f"Client twin received reply: {message}", client
        else:
            assert len(client.err) == 1 and "no reply from" in client.err[0], client
    assert any(client.popen.returncode == 0 for client in clients)


def test_a_reply_left_for_a_dead_client_with_the_same_id_is_ignored(echo_server, context, spawn):
    """A client that died mid-request leaves a reply routed to its id; the next client
    with that id receives it from libzmq and must drop it for its own."""
    server = echo_server()
    dead = dealer(context, server.endpoint, b"dup")
    dead.send_multipart([b"old-token", b"", b"1.5 first"])
    server.process.wait_for("^Received request from dup: 1.5 first$")
    dead.close(linger=0)
    client = spawn("client.py", "dup", "1.5 second", "--connect", server.endpoint, "--timeout", "5")
    assert client.finish() == 0, client
    assert client.out[-1] == "Client dup received reply: 1.5 second"
    # Both replies went out on the one connection with id "dup": the client's.
    assert server.process.count("^Sent reply to dup$") == 2, server.process


def test_no_server_is_one_line_and_exit_1_after_every_try(run_client):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run_client("1", "--connect", endpoint, "--timeout", "0.3", "--retries", "2")
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert result.stdout == "Client 1 sending 'Hello'\n"
    assert result.stderr.count("\n") == 1 and endpoint in result.stderr
    assert "after 3 tries" in result.stderr
    assert elapsed >= 3 * 0.3


def test_retry_reaches_a_server_started_after_the_first_try(start_server, spawn):
    first = start_server()
    first.process.signal(signal.SIGTERM)
    assert first.process.finish() == 0
    client = spawn(
        "client.py", "late", "--connect", first.endpoint, "--timeout", "1", "--retries", "5", "-v"
    )
    client.wait_for("retry 1 of 5", "err")
    start_server("--bind", first.endpoint, "--work-time", "0")
    assert client.finish() == 0, client
    assert client.out[-1] == "Client late received reply: World"


@pytest.mark.parametrize(
    "args",
    [
        [],
        [""],
        ["x" * 256],
        ["é" * 128],
        ["1", "--connect", "nonsense"],
        ["1", "--connect", "nope://x"],
        ["1", "--timeout", "-1"],
        ["1", "--timeout", "0"],
        ["1", "--timeout", "soon"],
        ["1", "--retries", "-1"],
        ["1", "--curve-secret", "no-such-file", "--curve-server", "no-such-file"],
        ["1", "--curve-secret", "keys/alice.key_secret"],
        ["1", "--no-such-flag"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(run_client, args):
    result = run_client(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


def test_longest_id_is_accepted(start_server, run_client):
    server = start_server("--work-time", "0")
    result = run_client("x" * 255, "--connect", server.endpoint)
    assert result.returncode == 0, result.stderr


def test_help_warns_that_a_retried_request_may_run_twice(run_client):
    result = run_client("--help")
    assert result.returncode == 0
    assert "may run it twice" in " ".join(result.stdout.split())


def test_ctrl_c_exits_130_without_a_traceback(spawn):
    client = spawn(
        "client.py", "1", "--connect", f"tcp://127.0.0.1:{free_port()}", "--timeout", "30"
    )
    client.wait_for("^Client 1 sending 'Hello'$")
    client.signal(signal.SIGINT)
    assert client.finish() == 130
    assert client.err == []
