"""Deadlines end to end, with real processes on loopback: a request carries its caller's
remaining time; no handler starts one whose caller has given up, in every mode; a
handler sees its time (time_remaining()) and passes it on; clients that send no
deadline, and MDP workers that know nothing of them, are served as before."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time

import pytest
import zmq
from harness import ECHO, WAIT, dealer, receive, start_broker, start_worker
from majortomo.client import Client as MajortomoClient
from test_services import start_majortomo_worker

from zmq_hello import Client, NoReply

SUMMARY = (
    r"since start: (\d+) answered, (\d+) error replies, (\d+) dropped, "
    r"(\d+ expired past their deadline.*), \d+ MDP requests unanswered$"
)
REMAINING = "tests.sample_handlers:remaining"


def final_summary(server) -> tuple[int, str]:
    """Stop the server (SIGTERM: it finishes what it took first) and read its last
    summary: the handler calls (answered, errors, dropped), and the expired part."""
    server.process.signal(signal.SIGTERM)
    assert server.process.finish() == 0
    match = [m for line in server.process.err if (m := re.search(SUMMARY, line))][-1]
    return int(match[1]) + int(match[2]) + int(match[3]), match[4]


def ten_at_once(endpoint: str) -> list[bytes | None]:
    """Ten callers at once, each of its own connection (made first, so that all send
    together), each waiting 0.5 s, no retry, for a request whose handler takes 0.3 s."""
    replies: list[bytes | None] = [None] * 10
    together = threading.Barrier(10, timeout=WAIT)

    def caller(n: int) -> None:
        with Client(endpoint, timeout=0.5, retries=0) as client, contextlib.suppress(NoReply):
            together.wait()
            replies[n] = client.request(b"0.3 call %d" % n)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return replies


def assert_two_or_three_ran(server, replies: list[bytes | None]) -> None:
    answered = [reply for reply in replies if reply is not None]
    assert 1 <= len(answered) <= 2, replies  # the first, and the second if it was quick
    server.process.wait_for(r"did not start a request for service 'hello' from ", "err")
    calls, expired = final_summary(server)
    assert calls in (2, 3), server.process
    assert expired == f"{10 - calls} expired past their deadline ('hello' {10 - calls})"


@pytest.mark.parametrize(
    "mode",
    [
        ["--workers", "1", "--handler", ECHO],
        ["--workers", "1", "--handler", "tests.sample_handlers:echo_async"],
        ["--processes", "1", "--handler", ECHO],
    ],
    ids=["threads", "async", "processes"],
)
def test_ten_requests_past_their_deadline_are_not_run(start_server, mode):
    server = start_server("--quiet", *mode)
    if "--processes" in mode:
        server.process.wait_for(r"worker \S+ ready for 'hello'", "err")
    assert_two_or_three_ran(server, ten_at_once(server.endpoint))


def test_ten_requests_past_their_deadline_are_not_sent_to_a_remote_worker(start_server, spawn):
    server, backend = start_broker(start_server, "--quiet")
    start_worker(spawn, server, backend)
    assert_two_or_three_ran(server, ten_at_once(server.endpoint))


@pytest.mark.parametrize("workers", ["0", "1"], ids=["inline", "threads"])
def test_a_handler_sees_its_deadline_and_the_next_none(echo_server, workers):
    server = echo_server("--workers", workers, handler=REMAINING)
    with Client(server.endpoint, timeout=2.0) as client:
        assert 1.8 <= float(client.request(b"0 x")) <= 2.0
    with zmq.Context() as context, dealer(context, server.endpoint) as plain:
        plain.send_multipart([b"0 no deadline"])  # the same thread runs it: none seen
        assert receive(plain) == [b"None"]


@pytest.mark.parametrize(
    "mode",
    [["--workers", "1"], ["--workers", "1", "async"], ["--processes", "1"], ["remote"]],
    ids=["threads", "async", "processes", "remote worker"],
)
def test_time_remaining_is_the_timeout_less_the_wait(start_server, spawn, mode):
    handler = REMAINING + ("_async" if "async" in mode else "")
    if mode == ["remote"]:
        server, backend = start_broker(start_server, "--quiet")
        runs_it = start_worker(spawn, server, backend, handler=REMAINING)
    else:
        server = start_server("--quiet", "--handler", handler, *mode[:2])
        runs_it = server.process  # local worker processes print on the server's stdout
        if "--processes" in mode:
            server.process.wait_for(r"worker \S+ ready for 'hello'", "err")
    replies = {}

    def call(name: str, body: bytes, timeout: float) -> None:
        with Client(server.endpoint, timeout=timeout, retries=0) as client:
            replies[name] = float(client.request(body))

    first = threading.Thread(target=call, args=("first", b"0.5 hold", 3.0))
    first_sent = time.monotonic()
    first.start()
    runs_it.wait_for("^handling 0.5 hold$")
    second_sent = time.monotonic()
    call("second", b"0 x", 2.0)  # waits for the one worker: what is left of the first's 0.5 s
    first.join(WAIT)
    assert 2.7 <= replies["first"] <= 3.0
    # 2 s less its wait: at most 0.5 s, less however long the first ran before it came.
    assert 1.5 - 0.15 <= replies["second"] <= 1.5 + (second_sent - first_sent) + 0.05, replies


def test_no_deadline_from_a_dealer_a_req_socket_or_a_majortomo_client(start_server, spawn):
    server, backend = start_broker(start_server, "--quiet")
    start_worker(spawn, server, backend, handler=REMAINING)
    with zmq.Context() as context:
        with context.socket(zmq.REQ) as req:
            req.connect(server.endpoint)
            req.send(b"0 x")
            assert receive(req) == [b"None"]
        with dealer(context, server.endpoint) as plain:
            # client.py's framing of old, an 8-byte token: no deadline in it
            plain.send_multipart([b"12345678", b"", b"0 x"])
            assert receive(plain) == [b"12345678", b"", b"None"]
    with MajortomoClient(server.endpoint) as client:
        client.send(b"hello", b"0 x")
        assert client.recv_all_as_list(timeout=WAIT) == [b"None"]


def test_a_foreign_worker_answers_a_request_with_a_deadline(start_server, spawn):
    server, backend = start_broker(start_server, "--quiet")
    start_majortomo_worker(spawn, server, backend, "hello")
    with Client(server.endpoint, timeout=2.0) as client:
        assert client.request(b"with a deadline") == b"majortomo: with a deadline"
        assert client.request(b"again", service="hello") == b"majortomo: again"


def test_a_guide_worker_answers_a_request_with_a_deadline(start_server):
    """A raw MDP/0.1 worker that reads the REQUEST as the guide's mdwrkapi does: one
    frame of client address, then an empty frame, then the body."""
    server, backend = start_broker(start_server, "--quiet")
    with zmq.Context() as context, dealer(context, backend, b"guide") as worker:
        worker.send_multipart([b"", b"MDPW01", b"\x01", b"hello"])
        server.process.wait_for(r"worker guide ready for 'hello' \(MDP/0\.1\)$", "err")
        answered: list[bytes] = []

        def client() -> None:
            with Client(server.endpoint, timeout=3.0) as client:
                answered.append(client.request(b"ping"))

        caller = threading.Thread(target=client)
        caller.start()
        while True:
            frames = receive(worker)
            if frames[2] == b"\x02":  # REQUEST; heartbeats (\x04) before it are skipped
                break
        empty, header, command, address, delimiter, body = frames
        assert (empty, header, delimiter, body) == (b"", b"MDPW01", b"", b"ping")
        assert re.fullmatch(rb"[0-9a-f]{8}\.[0-9a-f]+\+\d+", address), address
        worker.send_multipart([b"", b"MDPW01", b"\x03", address, b"", b"pong"])
        caller.join(WAIT)
    assert answered == [b"pong"]


@pytest.mark.parametrize("handler", ["relay", "relay_async"])
def test_a_handler_calling_another_service_gives_up_at_its_callers_deadline(echo_server, handler):
    downstream = echo_server("--quiet")
    relay = echo_server("--handler", f"tests.sample_handlers:{handler}", "--quiet")
    with Client(relay.endpoint, timeout=1.0, retries=0) as client, pytest.raises(NoReply):
        # The downstream handler takes 5 s; the relay's Client would wait 2.5 s a try.
        client.request(f"{downstream.endpoint} 5 slow".encode())
    gave_up = relay.process.wait_for(r"relay gave up after ([\d.]+) s: (.*)$")
    assert 0.9 <= float(gave_up[1]) <= 1.3, gave_up[0]
    assert gave_up[2].endswith("before the handler's deadline")
    # An expected end, once its caller is gone: one line, no traceback.
    relay.process.wait_for(r"handler failed after its caller's deadline: NoReply: ", "err")
    assert relay.process.count("Traceback", "err") == 0


def test_a_handler_passes_its_shorter_deadline_on(echo_server):
    downstream = echo_server("--quiet", handler=REMAINING)
    relay = echo_server("--handler", "tests.sample_handlers:relay", "--quiet")
    with Client(relay.endpoint, timeout=1.0) as client:
        seen_downstream = float(client.request(f"{downstream.endpoint} 0 x".encode()))
    assert 0.5 <= seen_downstream < 1.0  # not the relay Client's own 2.5 s


def test_a_request_for_a_service_with_no_worker_waits_until_its_deadline(start_server):
    """Not --no-worker-timeout's 60 s: its caller said how long it waits."""
    server, _backend = start_broker(start_server, "--quiet", "--no-worker-timeout", "60")
    with Client(server.endpoint, timeout=0.3, retries=0) as client, pytest.raises(NoReply):
        client.request(b"nobody", service="nobody")
    server.process.wait_for(r"did not start a request for service 'nobody' from ", "err")
    assert final_summary(server)[1] == "1 expired past their deadline ('nobody' 1)"
