"""No single point of failure: clients given several servers, workers serving several,
and a server killed, frozen or restarted under load. Real processes on loopback."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import zmq
from harness import ECHO, EPHEMERAL, HEARTBEAT, WAIT

LOGGED = "tests.sample_handlers:echo_logged"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_pair(start_server, spawn, handler: str = ECHO, workers: int = 2):
    """Two servers with --backend, and worker.py processes connected to both."""
    servers, backends = [], []
    for _ in range(2):
        server = start_server("--backend", EPHEMERAL, "--worker-heartbeat", HEARTBEAT, "--quiet")
        servers.append(server)
        backends.append(re.fullmatch(r"Workers connect to (\S+)", server.process.out[0]).group(1))
    connects = [arg for backend in backends for arg in ("--connect", backend)]
    started = []
    for _ in range(workers):
        worker = spawn("worker.py", *connects, "--heartbeat", HEARTBEAT, "--handler", handler)
        for backend in backends:
            worker.wait_for(f"^Worker ready for hello at {re.escape(backend)}$")
        started.append(worker)
    for server in servers:
        server.process.wait_count(r"worker \S+ ready for 'hello'", workers, "err")
    return servers, backends, started


def test_a_dead_endpoint_first_costs_no_timeout(echo_server, run_client):
    server = echo_server()
    dead = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_client(
        "1", "hi", "--connect", dead, "--connect", server.endpoint, "--timeout", "5"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: hi"
    assert time.monotonic() - started < 2.5  # far below the 5 s timeout


def test_both_down_names_every_endpoint(run_client):
    dead = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    args = ["1", "--connect", dead[0], "--connect", dead[1], "--timeout", "0.2", "--retries", "1"]
    result = run_client(*args)
    assert result.returncode == 1
    assert result.stderr == (
        f"client.py: no reply from {dead[0]}, {dead[1]} after 2 tries of 0.2 s; "
        "is the server running?\n"
    )


def test_a_frozen_server_costs_at_most_one_timeout(echo_server, run_client):
    frozen, live = echo_server(), echo_server()
    frozen.process.signal(signal.SIGSTOP)
    try:
        for n in range(3):
            started = time.monotonic()
            result = run_client(
                str(n), "--connect", frozen.endpoint, "--connect", live.endpoint,
                "--timeout", "1", "--retries", "2",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert time.monotonic() - started < 1 + 1.5
    finally:
        frozen.process.signal(signal.SIGCONT)


def test_a_silent_server_costs_one_timeout_then_the_next_try_goes_elsewhere(
    start_server, spawn, run_client
):
    # Up and connected, but with no worker: a request there is never answered in time.
    silent = start_server("--backend", EPHEMERAL, "--no-worker-timeout", "60", "--quiet")
    live = start_server("--handler", ECHO)
    started = time.monotonic()
    result = run_client(
        "1", "hi", "--connect", silent.endpoint, "--connect", live.endpoint,
        "--timeout", "1", "--retries", "2", "-v",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The first try goes to whichever connection is up first: the silent server costs a
    # timeout, or nothing if the live one's handshake finished first.
    assert time.monotonic() - started < 1 + 1.5
    assert "retry 2 of 2" not in result.stderr


def test_worker_py_serving_two_servers_runs_one_request_at_a_time(start_server, spawn, context):
    servers, _, (worker,) = start_pair(start_server, spawn, LOGGED, workers=1)
    clients = []
    for server in servers:
        client = context.socket(zmq.DEALER)
        client.connect(server.endpoint)
        clients.append(client)
    for n, client in enumerate(clients):
        for k in range(3):
            client.send_multipart([b"t", b"", b"0.1 s%d-%d" % (n, k)])
    for n, client in enumerate(clients):
        replies = sorted(receive_body(client) for _ in range(3))
        assert replies == [b"0.1 s%d-%d" % (n, k) for k in range(3)]  # its own, each once
    lines = [line.split()[0] for line in worker.out if line.split()[0] in ("start", "end")]
    assert lines == ["start", "end"] * 6, worker.out
    for server in servers:
        assert not [line for line in server.process.err if "does not hold" in line]


def receive_body(socket) -> bytes:
    assert socket.poll(WAIT * 1000), "no reply"
    token, empty, body = socket.recv_multipart()
    return body


def test_a_server_killed_under_load_loses_nothing_and_comes_back(
    start_server, spawn, run_client, record
):
    servers, backends, workers = start_pair(start_server, spawn)
    endpoints = [server.endpoint for server in servers]
    clients = [
        spawn("tests/failover_client.py", f"c{n}", "20", "1", "3", *endpoints) for n in range(20)
    ]
    for client in clients:
        client.wait_for("^first reply$", timeout=30)
    victim = servers[0]
    victim.process.popen.kill()
    summaries = []
    for client in clients:
        assert client.finish(timeout=60) == 0, client
        summaries.append(json.loads(client.out[-1]))
    assert sum(s["lost"] + s["wrong"] for s in summaries) == 0
    answered = sum(s["answered"] for s in summaries)
    assert answered == 20 * 20

    # Restarted on its old endpoints, it serves again without a worker restarted.
    port, backend = victim.port, backends[0]
    again = start_server("--bind", f"tcp://127.0.0.1:{port}", "--backend", backend,
                         "--worker-heartbeat", HEARTBEAT)  # fmt: skip
    again.process.wait_count(r"worker \S+ ready for 'hello'", 2, "err")
    result = run_client("after", "--connect", again.endpoint)
    assert result.stdout.splitlines()[-1] == "Client after received reply: Hello"
    assert all(worker.popen.poll() is None for worker in workers)
    record(
        "one of two servers SIGKILLed under 20 clients' load, two workers on both",
        answered,
        f"0 lost, 0 wrong, {sum(s['retried'] for s in summaries)} answered by a retry; "
        "restarted, the workers registered again",
    )
