"""The server as a full Majordomo broker: MDP clients of each dialect, several services,
the management interface (mmi.service) and requests for services nobody serves. Real
processes on loopback; the MDP/0.1 and RFC 18 clients are raw sockets framed as the
guide's mdcliapi (REQ), mdcliapi2 (DEALER) and RFC 18 frame their requests, and
majortomo's Client and Worker are the real ones from PyPI."""

from __future__ import annotations

import re
import signal
import time

import pytest
import zmq
from harness import ECHO, HEARTBEAT, W01, W02, WAIT, dealer, mdp_peer, receive, start_broker
from majortomo.client import Client

MAJORTOMO_WORKER = "tests/majortomo_worker.py"


def start_service_worker(spawn, server, backend: str, service: str, *args: str):
    """worker.py for service, returned once the server has it registered."""
    worker = spawn(
        "worker.py", "--connect", backend, "--heartbeat", HEARTBEAT, "--handler", ECHO,
        "--service", service, *args,
    )  # fmt: skip
    server.process.wait_for(rf"worker \S+/{worker.popen.pid} ready for '{service}'", "err")
    return worker


def start_majortomo_worker(spawn, server, backend: str, service: str):
    worker = spawn(MAJORTOMO_WORKER, backend, HEARTBEAT, service)
    worker.wait_for("majortomo worker connected")
    server.process.wait_for(rf"ready for '{service}' \(MDP/0\.2\)$", "err")
    return worker


class RawClient:
    """An MDP client of one dialect on a raw socket: the frames it sends, and what it
    expects back (the frames before the reply body), as each implementation has them."""

    def __init__(self, context: zmq.Context, endpoint: str, dialect: str) -> None:
        self.dialect = dialect
        self.socket = context.socket(zmq.REQ if dialect == "0.1 REQ" else zmq.DEALER)
        self.socket.connect(endpoint)

    def send(self, service: bytes, body: bytes) -> None:
        head = {
            "0.1 REQ": [b"MDPC01"],  # REQ adds the empty frame itself
            "0.1 DEALER": [b"", b"MDPC01"],
            "RFC 18": [b"MDPC02", b"\x01"],
            "majortomo": [b"", b"MDPC02", b"\x02"],
        }[self.dialect]
        self.socket.send_multipart([*head, service, body])

    def head(self, service: bytes, final: bool = True) -> list[bytes]:
        return {
            "0.1 REQ": [b"MDPC01", service],
            "0.1 DEALER": [b"", b"MDPC01", service],
            "RFC 18": [b"MDPC02", b"\x03" if final else b"\x02", service],
            "majortomo": [b"", b"MDPC02", b"\x04" if final else b"\x03"],
        }[self.dialect]

    def ask(self, service: bytes, body: bytes) -> bytes:
        """Send, and the body of the final reply, checking its frames."""
        self.send(service, body)
        *head, reply = receive(self.socket)
        assert head == self.head(service), head
        return reply

    def close(self) -> None:
        self.socket.close(linger=0)


RAW_DIALECTS = ["0.1 REQ", "0.1 DEALER", "RFC 18", "majortomo"]


@pytest.fixture(params=RAW_DIALECTS)
def raw_client(request, context):
    """A factory of RawClients in each dialect."""
    made: list[RawClient] = []

    def make(endpoint: str) -> RawClient:
        made.append(RawClient(context, endpoint, request.param))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_each_mdp_client_dialect_is_answered_in_its_own_framing(start_server, spawn, raw_client):
    server, backend = start_broker(start_server)
    start_service_worker(spawn, server, backend, "echo")
    client = raw_client(server.endpoint)
    assert client.ask(b"echo", b"first") == b"first"
    assert client.ask(b"echo", b"second") == b"second"


def test_majortomo_client_through_the_server_to_two_kinds_of_worker(start_server, spawn):
    server, backend = start_broker(start_server)
    start_service_worker(spawn, server, backend, "resize")
    start_majortomo_worker(spawn, server, backend, "ocr")
    with Client(server.endpoint) as client:
        for service, body, reply in [
            (b"resize", b"img", [b"img"]),
            (b"ocr", b"scan", [b"majortomo: scan"]),
            (b"resize", b"a", [b"a"]),
        ]:
            client.send(service, body)
            assert client.recv_all_as_list(timeout=WAIT) == reply


def test_two_services_each_client_gets_its_own_services_replies(
    start_server, spawn, run_client, context
):
    server, backend = start_broker(start_server)
    start_service_worker(spawn, server, backend, "hello")  # plain clients' service
    start_service_worker(spawn, server, backend, "resize")
    start_majortomo_worker(spawn, server, backend, "ocr")

    resize = run_client("r", "img", "--service", "resize", "--connect", server.endpoint)
    assert resize.stdout.splitlines() == ["Client r sending 'img'", "Client r received reply: img"]
    ocr = run_client("o", "page", "--service", "ocr", "--connect", server.endpoint)
    assert ocr.stdout.splitlines()[-1] == "Client o received reply: majortomo: page"
    plain = run_client("p", "hi", "--connect", server.endpoint)
    assert plain.stdout.splitlines()[-1] == "Client p received reply: hi"

    server.process.signal(signal.SIGUSR1)
    summary = server.process.wait_for(r"by service: (.*); 0 requests expired", "err").group(1)
    assert summary.split(" / ") == [
        "'hello' 1 connected, 0 busy, 0 waiting",
        "'resize' 1 connected, 0 busy, 0 waiting",
        "'ocr' 1 connected, 0 busy, 0 waiting",
    ]


def stream_then(client: RawClient) -> list[list[bytes]]:
    """The messages of a streamed reply, up to its final one."""
    messages = []
    while True:
        *head, body = receive(client.socket)
        messages.append([*head, body])
        if head == client.head(b"ocr"):
            return messages


def test_partials_reach_each_mdp_0_2_client_in_order_and_0_1_only_the_final(
    start_server, spawn, raw_client
):
    server, backend = start_broker(start_server)
    start_majortomo_worker(spawn, server, backend, "ocr")
    client = raw_client(server.endpoint)
    client.send(b"ocr", b"stream 3")
    final = [*client.head(b"ocr"), b"majortomo: stream 3"]
    if client.dialect.startswith("0.1"):
        expected = [final]
    else:
        partial = client.head(b"ocr", final=False)
        expected = [[*partial, b"part %d" % n] for n in (1, 2, 3)] + [final]
    assert stream_then(client) == expected


def test_majortomo_client_and_client_py_get_the_partials(start_server, spawn, run_client):
    server, backend = start_broker(start_server)
    start_majortomo_worker(spawn, server, backend, "ocr")
    with Client(server.endpoint) as client:
        client.send(b"ocr", b"stream 2")
        assert list(client.recv_all(timeout=WAIT)) == [
            [b"part 1"],
            [b"part 2"],
            [b"majortomo: stream 2"],
        ]
    result = run_client("c", "stream 2", "--service", "ocr", "--connect", server.endpoint)
    assert result.stdout.splitlines() == [
        "Client c sending 'stream 2'",
        "Client c received reply: part 1",
        "Client c received reply: part 2",
        "Client c received reply: majortomo: stream 2",
    ]


def test_mmi_service_in_every_dialect(start_server, spawn, raw_client):
    server, backend = start_broker(start_server)
    start_service_worker(spawn, server, backend, "resize")
    client = raw_client(server.endpoint)
    assert client.ask(b"mmi.service", b"resize") == b"200"
    assert client.ask(b"mmi.service", b"ocr") == b"404"
    assert client.ask(b"mmi.service", b"hello") == b"404"  # no worker registered for it
    assert client.ask(b"mmi.workers", b"resize") == b"501"


def test_mmi_service_without_workers_names_the_handlers_service(echo_server, raw_client):
    server = echo_server("--service", "echo")
    client = raw_client(server.endpoint)
    assert client.ask(b"mmi.service", b"echo") == b"200"
    assert client.ask(b"mmi.service", b"hello") == b"404"
    assert client.ask(b"echo", b"in process") == b"in process"


def test_a_worker_for_an_mmi_service_is_refused(start_server, context):
    server, backend = start_broker(start_server)
    with mdp_peer(context, backend, b"sneaky") as peer:
        peer.send_multipart([b"", W02, b"\x01", b"mmi.service"])
        assert receive(peer) == [b"", W02, b"\x06"]  # DISCONNECT
    server.process.wait_for(r"worker sneaky registered for 'mmi.service': mmi. services", "err")


def test_a_worker_reading_the_client_address_as_a_c_string_answers(start_server, context):
    """The guide's C++ worker (mdwrkapi.cpp) keeps the address frame as a C string and
    asserts it is not empty: an address with a NUL byte cut it short, and it aborted."""
    server, backend = start_broker(start_server)
    with mdp_peer(context, backend, b"cpp") as worker:
        worker.send_multipart([b"", W01, b"\x01", b"hello"])
        server.process.wait_for(r"worker cpp ready for 'hello' \(MDP/0\.1\)$", "err")
        with dealer(context, server.endpoint) as client:
            client.send_multipart([b"", b"ping"])
            frames = receive(worker)
            while frames[2] != b"\x02":  # heartbeats before the REQUEST
                frames = receive(worker)
            _, _, _, address, empty, body = frames
            assert (empty, body) == (b"", b"ping")
            as_c_string = address.split(b"\0")[0]
            assert as_c_string == address and address.isascii()
            worker.send_multipart([b"", W01, b"\x03", as_c_string, b"", b"pong"])
            assert receive(client) == [b"", b"pong"]


def test_a_request_nobody_serves_expires(start_server, run_client, raw_client):
    server, _ = start_broker(start_server, "--no-worker-timeout", "0.3")
    started = time.monotonic()
    result = run_client("p", "--connect", server.endpoint, "--retries", "0")
    assert result.returncode == 3, result.stderr
    assert "error: no worker for this service" in result.stderr
    assert time.monotonic() - started < 5
    server.process.wait_for(r"requests for service 'hello' expired: no worker registered", "err")

    lost = raw_client(server.endpoint)
    lost.send(b"ocr", b"lost")
    server.process.wait_for(r"^Received request from .*: lost$")
    server.process.wait_for(r"requests for service 'ocr' expired", "err")
    # MDP has no error reply: nothing came, as the summary counts.
    assert raw_client(server.endpoint).ask(b"mmi.service", b"ocr") == b"404"
    assert not lost.socket.poll(0)
    server.process.signal(signal.SIGUSR1)
    server.process.wait_for(
        r"2 requests expired with no worker; .* 1 MDP requests unanswered$", "err"
    )


def test_a_worker_registering_in_time_gets_the_waiting_requests(start_server, spawn, raw_client):
    server, backend = start_broker(start_server, "--no-worker-timeout", "20")
    client = raw_client(server.endpoint)
    client.send(b"late", b"waited")
    server.process.wait_for(r"^Received request from .*: waited$")
    server.process.signal(signal.SIGUSR1)
    server.process.wait_for(r"'late' 0 connected, 0 busy, 1 waiting", "err")
    start_service_worker(spawn, server, backend, "late")
    *_, reply = receive(client.socket)
    assert reply == b"waited"


def test_a_slow_service_does_not_delay_a_fast_one(start_server, spawn, context):
    server, backend = start_broker(start_server)
    start_service_worker(spawn, server, backend, "slow")
    start_service_worker(spawn, server, backend, "fast")
    with dealer(context, server.endpoint) as slow, dealer(context, server.endpoint) as fast:
        for n in range(3):  # one runs, two wait for the one slow worker
            slow.send_multipart([b"MDPC02", b"\x01", b"slow", b"3 slow%d" % n])
        server.process.wait_count(r"^Received request from .*: 3 slow", 3)
        server.process.signal(signal.SIGUSR1)
        server.process.wait_for(r"'slow' 1 connected, 1 busy, 2 waiting", "err")
        started = time.monotonic()
        for n in range(5):
            fast.send_multipart([b"MDPC02", b"\x01", b"fast", b"quick%d" % n])
            assert receive(fast)[-1] == b"quick%d" % n
        assert time.monotonic() - started < 2.5  # well before the slow request's 3 s
        assert not slow.poll(0)


HOSTILE = [
    [b"MDPC02", b"\x01"],  # no service
    [b"MDPC02", b"\x09", b"svc", b"x"],  # unknown command
    [b"MDPC02", b"\x04", b"svc", b"x"],  # a worker's FINAL code from a client
    [b"MDPC02", b"\x01", b"s" * 256, b"x"],  # service over 255 bytes
    [b"MDPC02", b"\x01", b"", b"x"],  # empty service
    [b"", b"MDPC01", b"svc"],  # no body
    [b"", b"MDPC01", b"", b"x"],  # empty service, 0.1
    [b"", b"MDPC02", b"\x02"],  # majortomo dialect, no service
    [b"", b"MDPC02", b"\x01", b"svc", *[b"x"] * 20],  # far too many frames
]


def test_hostile_mdp_traffic_is_logged_and_never_stops_the_server(
    start_server, spawn, context, record
):
    server, backend = start_broker(start_server)
    start_service_worker(spawn, server, backend, "echo")
    with dealer(context, server.endpoint) as hostile:
        for _ in range(20):
            for frames in HOSTILE:
                hostile.send_multipart(frames)
        # Replies on one connection keep their order: any answer to the hostile messages
        # would come before this one.
        hostile.send_multipart([b"MDPC02", b"\x01", b"echo", b"still here"])
        first = receive(hostile)
    assert first[-1] == b"still here", first
    # Every one is accounted for, in two lines: the first, and a count naming the latest.
    server.process.wait_incidents(
        "malformed MDP requests", "a malformed MDP request from", 20 * len(HOSTILE)
    )
    err = "\n".join(server.process.err)
    assert server.process.count("malformed MDP request", "err") == 2, err
    assert not re.search(r"Traceback", err)
    record(
        f"malformed MDP client requests ({len(HOSTILE)} shapes: no service, unknown "
        "command, empty or 256-byte service, no body, 24 frames)",
        20 * len(HOSTILE),
        "logged in two lines (the first at once, then a count); no reply; the next request served",
    )


def test_a_request_of_a_worker_that_died_runs_again_in_its_own_service(
    start_server, spawn, context
):
    server, backend = start_broker(start_server)
    aloud = "tests.sample_handlers:echo_aloud"
    first = start_service_worker(spawn, server, backend, "ocr", "--handler", aloud)
    start_service_worker(spawn, server, backend, "resize")  # another service: not a taker
    with dealer(context, server.endpoint) as client:
        client.send_multipart([b"MDPC02", b"\x01", b"ocr", b"1 page"])
        first.wait_for("^handling 1 page$")
        second = start_service_worker(spawn, server, backend, "ocr", "--handler", aloud)
        first.kill()
        assert receive(client) == [b"MDPC02", b"\x03", b"ocr", b"1 page"]
    second.wait_for("^handling 1 page$")


def test_client_py_service_without_workers_reaches_the_handler(echo_server, run_client):
    server = echo_server()
    result = run_client("1", "hi", "--service", "hello", "--connect", server.endpoint)
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: hi", result.stderr
    other = run_client(
        "2", "--service", "ocr", "--connect", server.endpoint, "--timeout", "0.3", "--retries", "0"
    )
    assert other.returncode == 1
    assert other.stderr.endswith("is the server running, with a worker for service ocr?\n")
    server.process.wait_for(r"sent no reply to MDP requests for service 'ocr': no worker", "err")
