"""Slow is not dead, across brokers: worker.py registered with several brokers and busy
in a long handler for one of them keeps its session with the others alive (a thread of
its own heartbeats them while the handler runs), and still finds a broker that went
silent. Real processes on loopback: server.py as the brokers, or ROUTERs playing them."""

from __future__ import annotations

import re
import signal
import time

import pytest
import zmq
from harness import ECHO, ECHO_ASYNC, HEARTBEAT, W02, WAIT, dealer, receive, start_broker

ALOUD = "tests.sample_handlers:echo_aloud"  # says "handling <request>" as it starts
LONG = 4.0  # seconds: 20 of the tests' 0.2 s heartbeat intervals
READY, REQUEST, FINAL, BEAT, DISCONNECT = b"\x01", b"\x02", b"\x04", b"\x05", b"\x06"


def start_two_broker_worker(start_server, spawn, *args: str):
    """Two server.py brokers and one worker.py registered with both:
    ((server, backend), (server, backend), worker)."""
    (a, backend_a), (b, backend_b) = start_broker(start_server), start_broker(start_server)
    worker = spawn(
        "worker.py", "--connect", backend_a, "--connect", backend_b, "--heartbeat", HEARTBEAT,
        *args,
    )  # fmt: skip
    for server in (a, b):
        server.process.wait_for(rf"worker \S+/{worker.popen.pid} ready for 'hello'", "err")
    return (a, backend_a), (b, backend_b), worker


@pytest.mark.parametrize(
    "handler, stop",
    [(ALOUD, "SIGTERM"), (ECHO_ASYNC, "--max-requests")],
    ids=["plain handler, stopped by SIGTERM", "async handler, --max-requests 3"],
)
def test_a_worker_busy_for_one_broker_keeps_its_session_with_the_other(
    start_server, spawn, context, record, handler, stop
):
    extra = ["--max-requests", "3"] if stop == "--max-requests" else []
    (a, _), (b, _), worker = start_two_broker_worker(
        start_server, spawn, "--handler", handler, *extra
    )
    pid = worker.popen.pid
    client_a, client_b = dealer(context, a.endpoint), dealer(context, b.endpoint)
    client_a.send_multipart([b"long", b"", b"%g long" % LONG])
    assert receive(client_a, WAIT + LONG) == [b"long", b"", b"%g long" % LONG]
    # Both sessions serve on, on the registration they began with.
    for client in (client_b, client_a):
        client.send_multipart([b"short", b"", b"short"])
        assert receive(client) == [b"short", b"", b"short"]

    if stop == "SIGTERM":
        worker.signal(signal.SIGTERM)
    assert worker.finish() == 0, worker
    for server in (a, b):
        # Its DISCONNECT is the last a server hears of it: every line before is logged.
        server.process.wait_for(rf"worker \S+/{pid} disconnected$", "err")
        about = [line for line in server.process.err if re.search(rf"worker \S+/{pid}\b", line)]
        # Registered once, left once: never found silent, gone or unknown in between.
        assert len(about) == 2, server.process
    assert worker.count("^Worker ready for hello at ") == 2, worker
    assert not [line for line in worker.err if "silent for" in line or "again" in line], worker
    record(
        f"worker.py on two servers, a {LONG:g} s request for one ({stop}; --heartbeat {HEARTBEAT})",
        1,
        "neither server lost it or saw it register again; both served it on",
    )


class RawBroker:
    """A ROUTER playing an MDP/0.2 broker for one worker, as the test drives it."""

    def __init__(self, context: zmq.Context) -> None:
        self.socket = context.socket(zmq.ROUTER)
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.worker = b""
        self.beats = 0  # HEARTBEATs received from the worker
        self.received: list[bytes] = []  # every other command, in order
        self.finals: list[bytes] = []  # the bodies of the FINALs

    def take(self) -> None:
        """One message from the worker, which must be waiting."""
        worker, *frames = self.socket.recv_multipart()
        assert frames[:2] == [b"", W02], frames
        if frames[2] == READY:
            self.worker = worker
        if frames[2] == BEAT:
            self.beats += 1
            return
        self.received.append(frames[2])
        if frames[2] == FINAL:
            self.finals.append(frames[-1])

    def send(self, command: bytes, *frames: bytes) -> None:
        self.socket.send_multipart([self.worker, b"", W02, command, *frames])


def test_heartbeats_go_to_the_other_brokers_while_the_handler_runs(spawn, context):
    """A, whose request runs, silent meanwhile (as the guide's broker is with busy
    workers); B heartbeating the worker as an idle one, then sending it a request of
    its own. B hears from the worker throughout and A does not (a heartbeat would hide
    a frozen worker from A's libzmq); neither is lost after; B's request waits for its
    turn in the worker's socket."""
    a, b = RawBroker(context), RawBroker(context)
    brokers = {a.socket: a, b.socket: b}
    worker = spawn(
        "worker.py", "--connect", a.endpoint, "--connect", b.endpoint,
        "--heartbeat", HEARTBEAT, "--handler", ECHO,
    )  # fmt: skip
    interval = float(HEARTBEAT)
    poller = zmq.Poller()
    for broker in (a, b):
        poller.register(broker.socket, zmq.POLLIN)

    def play(until, beating) -> None:
        """Take what the worker sends until until() holds, heartbeating it from the
        brokers in beating at twice its rate."""
        deadline = time.monotonic() + WAIT + LONG
        next_beat = 0.0
        while not until():
            now = time.monotonic()
            assert now < deadline, (a.received, b.received, worker)
            if now >= next_beat:
                for broker in beating:
                    broker.send(BEAT)
                next_beat = now + interval / 2
            for socket, _ in poller.poll(max(1, round((next_beat - now) * 1000))):
                brokers[socket].take()

    play(lambda: a.worker and b.worker, [])
    a.send(REQUEST, b"client-a", b"", b"%g long" % LONG)
    a.beats = b.beats = 0
    half = LONG / interval / 2  # heartbeats due in half the handler's time
    play(lambda: b.beats >= half, [b])
    assert not a.finals, f"B got fewer than {half:g} heartbeats while the handler ran"
    b.send(REQUEST, b"client-b", b"", b"0 short")
    play(lambda: b.finals, [b])
    assert a.finals == [b"%g long" % LONG]  # the long request ended first
    # One heartbeat may have left for A before the worker read A's request.
    assert a.beats <= 1 and b.beats >= 1.5 * half, (a.beats, b.beats)
    # After: both brokers heartbeat it as an idle worker, for over 3 intervals.
    beats = a.beats + b.beats
    play(lambda: a.beats + b.beats >= beats + 2 * 5, [a, b])
    worker.signal(signal.SIGTERM)
    play(lambda: DISCONNECT in a.received and DISCONNECT in b.received, [a, b])
    assert worker.finish() == 0, worker
    assert a.received == [READY, FINAL, DISCONNECT], a.received
    assert b.received == [READY, FINAL, DISCONNECT], b.received
    assert not [line for line in worker.err if "silent for" in line or "again" in line], worker


def test_a_busy_worker_still_finds_a_broker_that_went_silent(start_server, spawn, context):
    """Forgiving the silence a handler causes is no cover for a broker that is gone."""
    (a, backend_a), (b, backend_b), worker = start_two_broker_worker(
        start_server, spawn, "--handler", ALOUD
    )
    client = dealer(context, a.endpoint)
    client.send_multipart([b"long", b"", b"2 long"])
    worker.wait_for("^handling 2 long$")
    b.process.signal(signal.SIGSTOP)  # silent from now on
    try:
        assert receive(client, WAIT + 2) == [b"long", b"", b"2 long"]
        worker.wait_for(rf"the broker at {re.escape(backend_b)} has been silent", "err")
    finally:
        b.process.signal(signal.SIGCONT)
    assert worker.count(rf"the broker at {re.escape(backend_a)}", "err") == 0, worker
