"""--handler and async handlers: real server.py and client.py processes on loopback."""

from __future__ import annotations

import time

import pytest
from harness import ECHO, ECHO_ASYNC, dealer, receive

HANDLERS = "tests.sample_handlers"


@pytest.mark.parametrize(
    "spec, says",
    [
        # Every kind of bad spec is tested in-process (test_pure.py); these show that
        # each reaches the user as one line and exit code 2.
        ("examples.echo", "expected MODULE:FUNCTION"),
        ("examples.echo:no_such_function", "module 'examples.echo' has no 'no_such_function'"),
        ("tests.raises_on_import:handle", "importing 'tests.raises_on_import' raised"),
    ],
)
def test_a_bad_handler_spec_is_one_line_and_exit_2(spawn, tmp_path, spec, says):
    if "raises_on_import" in spec:
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "raises_on_import.py").write_text("raise ImportError('no DB')\n")
        server = spawn("server.py", "--handler", spec, cwd=tmp_path)
    else:
        server = spawn("server.py", "--handler", spec)
    assert server.finish() == 2
    assert server.out == [] and len(server.err) == 1, server
    assert server.err[0].startswith(f"server.py: error: --handler {spec}: {says}"), server


def test_work_time_with_a_handler_is_refused(spawn):
    server = spawn("server.py", "--handler", "examples.echo:handle", "--work-time", "1")
    assert server.finish() == 2
    assert server.err == [
        "server.py: error: --work-time applies to the built-in handler only, not to --handler "
        "(see --help)"
    ]


def test_a_handler_module_in_the_current_directory_is_served(spawn, run_client, tmp_path):
    (tmp_path / "myapp.py").write_text(
        "def shout(request: bytes) -> bytes:\n    return request.upper() + b'!'\n"
    )
    server = spawn(
        "server.py", "--bind", "tcp://127.0.0.1:*", "--handler", "myapp:shout", cwd=tmp_path
    )
    endpoint = server.wait_for(r"^Listening on (\S+)$").group(1)
    result = run_client("1", "hello", "--connect", endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: HELLO!"


@pytest.mark.parametrize(
    "spec, request_body, reply",
    [
        ("examples.echo:handle", "echo me", "echo me"),
        ("examples.slow_async:handle", "Hello", "World"),
        ("examples.cpu:handle", "Hello", "550 primes below 4000"),
        (f"{HANDLERS}:text", "str", "str as text"),  # a str is sent as UTF-8
    ],
)
def test_the_examples_are_served(start_server, run_client, spec, request_body, reply):
    server = start_server("--handler", spec)
    result = run_client("1", request_body, "--connect", server.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"Client 1 received reply: {reply}"


def test_an_async_handler_runs_a_thousand_requests_at_once_by_default(echo_server, context):
    """1000 requests each awaiting 0.5 s: about 0.5 s on one event loop, not 1000/16 x 0.5."""
    server = echo_server("--quiet", handler=ECHO_ASYNC)
    clients = [dealer(context, server.endpoint) for _ in range(200)]
    for each in clients:  # connected and served once before the timed burst
        each.send(b"0 warm")
    for each in clients:
        assert receive(each) == [b"0 warm"]
    start = time.monotonic()
    for each in clients:
        for _ in range(5):
            each.send(b"0.5 wait")
    for each in clients:
        for _ in range(5):
            assert receive(each) == [b"0.5 wait"]
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 0.5 + 1.5, f"1000 x 0.5 s took {elapsed:.2f} s"


@pytest.mark.parametrize("handler", [ECHO, ECHO_ASYNC], ids=["threads", "async"])
def test_a_lone_client_uses_every_worker(echo_server, context, handler):
    """--workers 2 and two requests back to back from one DEALER: both answered by ~1 s."""
    server = echo_server("--workers", "2", "--quiet", handler=handler)
    client = dealer(context, server.endpoint)
    start = time.monotonic()
    client.send(b"1 first")
    client.send(b"1 second")
    assert sorted(receive(client)[0] for _ in range(2)) == [b"1 first", b"1 second"]
    elapsed = time.monotonic() - start
    assert elapsed < 1.5, f"two 1 s requests on 2 workers took {elapsed:.2f} s"


@pytest.mark.parametrize("handler", [ECHO, ECHO_ASYNC], ids=["threads", "async"])
def test_a_client_past_its_waiting_cap_gets_an_error(echo_server, context, handler):
    server = echo_server("--workers", "1", "--quiet", handler=handler)
    client = dealer(context, server.endpoint, b"eager")
    for i in range(1 + 64 + 1):  # one running, 64 waiting, one too many
        client.send(f"{0.5 if i == 0 else 0} r{i}".encode())
    assert receive(client) == [b"ERROR: too many requests from this client"]
    replies = [receive(client)[0] for _ in range(65)]
    assert replies[0] == b"0.5 r0" and replies[1:] == [f"0 r{i}".encode() for i in range(1, 65)]
