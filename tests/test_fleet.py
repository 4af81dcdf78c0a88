"""server.py as a Majordomo broker and worker.py as a worker: real processes on loopback,
with majortomo (PyPI) and hand-written MDP/0.1 and 0.2 peers for interop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from harness import (
    ECHO,
    HEARTBEAT,
    W01,
    W02,
    WAIT,
    ask,
    dealer,
    local_worker_pids,
    mdp_peer,
    receive,
    start_broker,
    start_worker,
    wait_gone,
)

# worker.py and server.py together


def test_worker_py_serves_client_py_through_the_server(start_server, spawn, run_client):
    server, backend = start_broker(start_server)
    start_worker(spawn, server, backend)
    result = run_client("1", "via a worker", "--connect", server.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: via a worker"


def test_processes_serve_and_stop_leaving_no_worker_behind(start_server, context):
    server = start_server("--processes", "2", "--handler", ECHO, "--worker-heartbeat", HEARTBEAT)
    server.process.wait_count(r"worker \S+/\d+ ready", 2, "err")
    pids = local_worker_pids(server)
    assert len(set(pids)) == 2
    taken = [dealer(context, server.endpoint, f"taken{i}".encode()) for i in range(2)]
    for each in taken:
        each.send(b"0.5 taken")
    for i in range(2):
        server.process.wait_for(f"^Received request from taken{i}")
    server.process.signal(signal.SIGTERM)
    for each in taken:  # finished by the workers before they are stopped
        assert receive(each) == [b"0.5 taken"]
    assert server.process.finish() == 0
    assert all(wait_gone(pid, 0.1) for pid in pids), pids
    assert "since start: 2 answered" in server.process.err[-1]


def test_a_killed_server_leaves_no_local_worker(start_server):
    server = start_server("--processes", "2", "--worker-heartbeat", HEARTBEAT)
    server.process.wait_count(r"worker \S+/\d+ ready", 2, "err")
    pids = local_worker_pids(server)
    server.process.kill()
    # They notice their parent's end within a heartbeat interval or so.
    assert all(wait_gone(pid, 5.0) for pid in pids), pids


def test_a_local_worker_that_exits_is_restarted(start_server, run_client):
    server = start_server("--processes", "1", "--handler", ECHO, "--worker-heartbeat", HEARTBEAT)
    server.process.wait_for(r"worker \S+/\d+ ready", "err")
    assert run_client("1", "first", "--connect", server.endpoint).returncode == 0
    (first,) = local_worker_pids(server)
    os.kill(first, signal.SIGKILL)  # a worker that served: no start-up crash
    server.process.wait_for(
        rf"local worker pid {first} exited \(signal 9\): restarting in 0\.0 s", "err"
    )
    server.process.wait_for(rf"worker \S+/(?!{first}\b)\d+ ready", "err")
    assert run_client("1", "again", "--connect", server.endpoint).returncode == 0


def test_a_worker_that_crashes_at_start_is_restarted_with_growing_pauses(start_server):
    server = start_server("--processes", "1", "--handler", "tests.crash_in_worker:handle")
    server.process.wait_for(r"exited \(code \d+\): restarting in 0\.5 s", "err", timeout=WAIT)
    server.process.wait_for(r"exited \(code \d+\): restarting in 1\.0 s", "err", timeout=WAIT)


def test_usr1_logs_a_summary_of_the_fleet(start_server, spawn, run_client):
    server, backend = start_broker(start_server)
    start_worker(spawn, server, backend)
    assert run_client("1", "--connect", server.endpoint).returncode == 0
    server.process.signal(signal.SIGUSR1)
    server.process.wait_for(
        r"workers: 1 connected, 0 busy; by service: 'hello' 1 connected, 0 busy, 0 waiting; "
        r"0 requests expired with no worker; requests: 0 waiting, 0 running; "
        r"since start: 1 answered, 0 error replies, 0 dropped, 0 expired past their deadline, "
        r"0 MDP requests unanswered$",
        "err",
    )


def test_worker_py_finishes_its_request_on_sigterm(start_server, spawn, context):
    server, backend = start_broker(start_server)
    worker = start_worker(spawn, server, backend, handler="tests.sample_handlers:echo_aloud")
    client = dealer(context, server.endpoint, b"c")
    client.send(b"1 last")
    worker.wait_for("^handling 1 last$")
    worker.signal(signal.SIGTERM)
    assert receive(client) == [b"1 last"]
    assert worker.finish() == 0
    server.process.wait_for(rf"worker \S+/{worker.popen.pid} disconnected$", "err")


@pytest.mark.parametrize(
    "args, says",
    [
        (["--heartbeat", "0"], "--heartbeat must be at least 0.01 seconds"),
        (["--handler", "nope"], "--handler nope: expected MODULE:FUNCTION"),
        (["--curve-secret", "x"], "--curve-secret and --curve-server go together"),
        (["--connect", "nonsense"], "cannot connect to nonsense"),
    ],
)
def test_worker_py_bad_arguments_are_one_line(spawn, args, says):
    worker = spawn("worker.py", *args)
    code = worker.finish()
    assert code == 2 and worker.out == [] and len(worker.err) == 1, worker
    assert says in worker.err[0]


# Interop with other MDP implementations


def test_a_majortomo_worker_serves_client_py_through_the_server(start_server, spawn, run_client):
    server, backend = start_broker(start_server)
    spawn("tests/majortomo_worker.py", backend, "0.05").wait_for("majortomo worker connected")
    server.process.wait_for(r"ready for 'hello' \(MDP/0\.2\)$", "err")
    result = run_client("1", "interop", "--connect", server.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: majortomo: interop"


def test_worker_py_serves_majortomo_clients_behind_majortomo_broker(spawn):
    with socket.socket() as probe:  # a free port: majortomo's broker prints no endpoint
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    spawn_broker = subprocess.Popen(
        [sys.executable, "-m", "majortomo.broker", "-b", endpoint],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        worker = spawn("worker.py", "--connect", endpoint, "--handler", ECHO)
        worker.wait_for("^Worker ready for hello")
        answer = subprocess.run(
            [sys.executable, "-c", MAJORTOMO_CLIENT, endpoint],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout == "[b'from majortomo']\n"
    finally:
        spawn_broker.kill()
        spawn_broker.wait()


MAJORTOMO_CLIENT = """
import sys
from majortomo.client import Client
with Client(sys.argv[1]) as client:
    client.send(b"hello", b"from majortomo")
    print(client.recv_all_as_list(timeout=10))
"""


@pytest.mark.parametrize(
    "header, empty_first",
    [(W01, True), (W01, False), (W02, True), (W02, False)],
    ids=["MDP/0.1", "MDP/0.1 without the empty frame", "MDP/0.2", "MDP/0.2 as RFC 18 shows it"],
)
def test_each_worker_is_answered_in_its_own_framing(start_server, context, header, empty_first):
    server, backend = start_broker(start_server)
    first = [b""] if empty_first else []
    worker = mdp_peer(context, backend)
    worker.send_multipart([*first, header, b"\x01", b"hello"])
    server.process.wait_for(r"worker raw ready", "err")
    client = dealer(context, server.endpoint, b"c")
    client.send_multipart([b"token", b"", b"Hi"])
    request = receive(worker)
    while request[len(first) + 1] != b"\x02":  # heartbeats may come first
        request = receive(worker)
    assert request[: len(first) + 2] == [*first, header, b"\x02"]
    address, delimiter, body = request[len(first) + 2 :]
    assert delimiter == b"" and body == b"Hi"
    final = b"\x03" if header == W01 else b"\x04"  # MDP/0.1 REPLY, MDP/0.2 FINAL
    worker.send_multipart([*first, header, final, address, b"", b"Hi back"])
    assert receive(client) == [b"token", b"", b"Hi back"]


def test_partial_replies_reach_the_client_in_order(start_server, context):
    server, backend = start_broker(start_server)
    worker = mdp_peer(context, backend)
    worker.send_multipart([b"", W02, b"\x01", b"hello"])
    server.process.wait_for(r"worker raw ready", "err")
    client = dealer(context, server.endpoint, b"c")
    client.send_multipart([b"token", b"", b"stream"])
    request = receive(worker)
    while request[2] != b"\x02":
        request = receive(worker)
    address = request[3]
    for part in (b"one", b"two"):
        worker.send_multipart([b"", W02, b"\x03", address, b"", part])
    worker.send_multipart([b"", W02, b"\x04", address, b"", b"done"])
    assert [receive(client) for _ in range(3)] == [
        [b"token", b"", b"one"],
        [b"token", b"", b"two"],
        [b"token", b"", b"done"],
    ]


# Faults


def test_a_worker_killed_mid_request_costs_a_rerun_not_the_reply(
    start_server, spawn, context, record
):
    server, backend = start_broker(start_server)
    doomed = start_worker(spawn, server, backend)
    client = dealer(context, server.endpoint, b"c")
    client.send(b"1 survives")
    server.process.wait_for("^Received request from c")
    start_worker(spawn, server, backend)  # idle, so the first one holds the request
    doomed.popen.kill()
    server.process.wait_for(
        rf"worker \S+/{doomed.popen.pid} is gone holding a request: running it once more", "err"
    )
    assert receive(client) == [b"1 survives"]
    record(
        "an MDP worker killed with SIGKILL mid-request",
        1,
        "its request ran once more on another worker; the client got its reply",
    )


def test_a_frozen_busy_worker_is_declared_dead_and_its_request_rerun(
    start_server, spawn, context, record
):
    server, backend = start_broker(start_server)
    frozen = start_worker(spawn, server, backend)
    client = dealer(context, server.endpoint, b"c")
    client.send(b"1 thawed")
    server.process.wait_for("^Received request from c")
    start_worker(spawn, server, backend)
    frozen.signal(signal.SIGSTOP)
    try:
        # Its connection stays up; only libzmq's heartbeats (3 x 0.2 s) find it frozen.
        started = time.monotonic()
        server.process.wait_for(rf"worker \S+/{frozen.popen.pid} is gone holding a request", "err")
        noticed = time.monotonic() - started
        assert receive(client) == [b"1 thawed"]
    finally:
        frozen.signal(signal.SIGCONT)
    record(
        "an MDP worker frozen with SIGSTOP mid-request (--worker-heartbeat 0.2)",
        1,
        f"found dead by connection heartbeats in {noticed:.1f} s; its request ran once more "
        "on another worker; the client got its reply",
    )


def test_a_request_that_kills_every_worker_gets_an_error(start_server, run_client, record):
    server = start_server("--processes", "2", "--handler", ECHO, "--worker-heartbeat", HEARTBEAT)
    server.process.wait_count(r"worker \S+/\d+ ready", 2, "err")
    poisoned = run_client(
        "p", "die", "--connect", server.endpoint, "--retries", "0", "--timeout", "10"
    )
    assert poisoned.returncode == 3, poisoned
    assert poisoned.stderr == "client.py: the server answered with an error: worker failed\n"
    server.process.wait_for(r"holding a request that a worker died on before", "err")
    served = run_client("next", "fine", "--connect", server.endpoint, "--timeout", "10")
    assert served.returncode == 0, served
    record(
        "a request that kills every worker it reaches (--processes 2)",
        1,
        "2 workers died, then ERROR: worker failed; both restarted; the next client served",
    )


def test_workers_register_again_with_a_restarted_server(start_server, spawn, run_client, record):
    first, backend = start_broker(start_server)
    worker = start_worker(spawn, first, backend)
    first.process.kill()
    second = start_server(
        "--bind", first.endpoint, "--backend", backend, "--worker-heartbeat", HEARTBEAT
    )
    second.process.wait_for(rf"worker \S+/{worker.popen.pid}/\d+ ready", "err")  # a new id
    result = run_client("1", "again", "--connect", second.endpoint)
    assert result.returncode == 0, result.stderr
    record(
        "server killed (SIGKILL) and restarted with an MDP worker connected",
        1,
        "the worker registered again and served the next client",
    )


HOSTILE_BACKEND = {
    "an unknown protocol header": [b"", b"MDPX99", b"\x01", b"hello"],
    "an unknown command": [b"", W02, b"\x09"],
    "too few frames": [b""],
    "a REQUEST, which only brokers send": [b"", W02, b"\x02", b"a", b"", b"b"],
    "a FINAL from a worker never registered": [b"", W02, b"\x04", b"a", b"", b"b"],
    "a HEARTBEAT from a worker never registered": [b"", W02, b"\x05"],
    "a FINAL without its empty frame": [b"", W02, b"\x04", b"a", b"b"],
}


def test_hostile_backend_traffic_never_stalls_the_server(
    start_server, spawn, context, run_client, record
):
    server, backend = start_broker(start_server)
    start_worker(spawn, server, backend)
    for i, frames in enumerate(HOSTILE_BACKEND.values()):
        with mdp_peer(context, backend, f"hostile{i}".encode()) as peer:
            peer.send_multipart(frames)
            assert ask(context, server.endpoint) == b"Hello"  # served in between
    # A registered worker that answers a request it does not hold is disconnected.
    liar = mdp_peer(context, backend, b"liar")
    liar.send_multipart([b"", W02, b"\x01", b"hello"])
    server.process.wait_for("worker liar ready", "err")
    liar.send_multipart([b"", W02, b"\x04", b"not-a-key", b"", b"forged"])
    while (command := receive(liar)[2]) == b"\x05":  # heartbeats, then DISCONNECT
        pass
    assert command == b"\x06"
    server.process.wait_for(
        "unexpected FINAL from worker liar for a request it does not hold", "err"
    )
    port = int(backend.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(os.urandom(2048).lstrip(b"\xff"))
    assert run_client("after", "still here", "--connect", server.endpoint).returncode == 0
    assert server.process.popen.poll() is None
    record(
        "hostile MDP traffic on the backend (bad headers, commands, frames, forged replies, "
        "random bytes)",
        len(HOSTILE_BACKEND) + 6,
        "logged; the forger sent DISCONNECT; clients served throughout",
    )


def test_a_backend_beyond_loopback_without_curve_is_refused(spawn):
    server = spawn("server.py", "--backend", "tcp://0.0.0.0:*")
    assert server.finish() == 2
    assert server.out == [] and len(server.err) == 1, server
    assert "is reachable beyond this machine" in server.err[0]


def test_a_curve_backend_accepts_only_known_workers(start_server, spawn, run_client, keys, record):
    key = lambda name, kind="key": str(keys / "keys" / f"{name}.{kind}")  # noqa: E731
    server, backend = start_broker(
        start_server,
        "--curve-secret",
        key("server", "key_secret"),
        "--curve-clients",
        str(keys / "clients"),
        "--curve-workers",
        str(keys / "workers"),
    )
    stranger = spawn(
        "worker.py",
        "--connect",
        backend,
        "--heartbeat",
        HEARTBEAT,
        "--curve-secret",
        key("w2", "key_secret"),
        "--curve-server",
        key("server"),
    )
    # Its handshake is refused, so it hears nothing and, after 3 heartbeats, tries again.
    stranger.wait_for(r"the broker at \S+ has been silent for 3 heartbeats", "err")
    known = start_worker(
        spawn,
        server,
        backend,
        "--curve-secret",
        key("w1", "key_secret"),
        "--curve-server",
        key("server"),
    )
    served = run_client(
        "alice",
        "secret",
        "--connect",
        server.endpoint,
        "--curve-secret",
        key("alice", "key_secret"),
        "--curve-server",
        key("server"),
    )
    assert served.returncode == 0, served
    assert server.process.count(rf"worker \S+/{stranger.popen.pid}(/\d+)? ready", "err") == 0
    assert known.popen.poll() is None
    record(
        "CURVE backend, a worker with an unknown key",
        1,
        "refused; never registered; a known worker served the next client",
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGQUIT])
def test_shutdown_with_no_worker_able_to_serve_answers_the_waiting(start_server, context, stop):
    """Local workers that crash at start can never run what waits: at shutdown the
    waiting requests get an error instead of holding the server up forever, at once
    (SIGQUIT's grace of 0 included: nothing is abandoned that could be answered)."""
    server = start_server("--processes", "1", "--handler", "tests.crash_in_worker:handle")
    client = dealer(context, server.endpoint, b"c")
    client.send(b"stranded")
    server.process.wait_for("^Received request from c")
    server.process.wait_for(r"exited \(code \d+\): restarting in", "err")
    server.process.signal(stop)
    assert receive(client) == [b"ERROR: no worker available"]
    assert server.process.finish() == 0
