"""One connection must not stop the others: a flood of requests for made-up services is
refused past the client's share while a real service is served at once, and floods of
every kind cost the log a few lines a second, with counts, peer values escaped. Real
processes on loopback."""

from __future__ import annotations

import re
import signal
import statistics
import time

import zmq
from harness import dealer, incident_total, mdp_peer, receive, start_broker
from test_services import start_service_worker

RFC18 = [b"MDPC02", b"\x01"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} server: ")


def flood_made_up_services(socket: zmq.Socket, requests: int, names: int) -> None:
    for n in range(requests):
        socket.send_multipart([*RFC18, b"made-up-%d" % (n % names), b"x"])


def test_a_real_service_is_served_at_once_while_one_connection_floods(
    start_server, spawn, context, record
):
    server, backend = start_broker(start_server, "--quiet")
    start_service_worker(spawn, server, backend, "real")
    flooder = dealer(context, server.endpoint)
    caller = dealer(context, server.endpoint)
    # The flood is in the server's queue before the first real request.
    flood_made_up_services(flooder, 10_000, 2_000)
    took = []
    for n in range(20):
        started = time.monotonic()
        caller.send_multipart([*RFC18, b"real", b"0 %d" % n])
        assert receive(caller)[-1] == b"0 %d" % n
        took.append(time.monotonic() - started)
    # The flood is taken up to the client's share (256 across all the names it used);
    # the rest is refused at once (an MDP client gets no reply), and counted.
    server.process.wait_incidents(
        "MDP requests unanswered", "sent no reply to MDP requests", 10_000 - 256
    )
    server.process.signal(signal.SIGUSR1)
    summary = server.process.wait_for(r"requests: (\d+) waiting", "err")
    assert int(summary.group(1)) == 256, summary.group(0)
    assert max(took) < 0.1, [f"{t * 1000:.0f} ms" for t in took]
    record(
        "one connection floods 10,000 requests for 2,000 made-up services; a real service "
        "is asked 20 times meanwhile",
        20,
        f"real service answered in {statistics.median(took) * 1000:.1f} ms median, "
        f"{max(took) * 1000:.1f} ms at most; the flood took 256 places, the rest refused",
    )


def server_lines(server, since: int) -> list[str]:
    return [line for line in server.process.err[since:] if LOG_LINE.match(line)]


def test_a_flood_of_malformed_requests_costs_a_few_lines(start_server, context, record):
    server = start_server("--work-time", "0", "--quiet")
    before = len(server.process.err)
    flooder = dealer(context, server.endpoint)
    for _ in range(20_000):
        flooder.send_multipart([b"a", b"b"])  # an envelope without its delimiter
    started = time.monotonic()
    server.process.wait_incidents("malformed requests", "malformed request from", 20_000)
    seconds = time.monotonic() - started + 1
    lines = server_lines(server, before)
    assert len(lines) <= 2 + 2 * seconds, lines
    record(
        "20,000 malformed requests from one connection",
        20_000,
        f"each answered with an error; {len(lines)} log lines in all, with counts",
    )


def test_2000_services_expiring_cost_a_few_lines_and_a_bounded_summary(
    start_server, context, record
):
    server, _ = start_broker(start_server, "--no-worker-timeout", "0.5", "--quiet")
    before = len(server.process.err)
    clients = [dealer(context, server.endpoint) for _ in range(10)]
    for n, client in enumerate(clients):  # 200 names each: within each client's share
        for name in range(200):
            client.send_multipart([*RFC18, b"gone-%d-%d" % (n, name), b"x"])
    server.process.signal(signal.SIGUSR1)
    summary = server.process.wait_for(r"workers: .*requests: \d+ waiting.*", "err").group(0)
    assert len(summary) < 2_500, len(summary)
    server.process.wait_incidents("requests expired", "requests for service", 2_000)
    lines = server_lines(server, before)
    assert len(lines) <= 6, lines
    record(
        "2,000 made-up services, one request each, expiring (--no-worker-timeout 0.5)",
        2_000,
        f"{len(lines)} log lines in all, with counts; the summary line {len(summary)} "
        "characters (the busiest 10 services, a count of the rest)",
    )


def test_many_clients_leaving_cost_a_few_lines(start_server, context, record):
    server = start_server("--work-time", "0.3", "--workers", "100", "--quiet")
    before = len(server.process.err)
    leavers = [dealer(context, server.endpoint) for _ in range(100)]
    for leaver in leavers:
        leaver.send(b"Hello")
    for leaver in leavers:
        leaver.close(linger=1000)  # once its request has left
    server.process.wait_incidents("dropped replies", "dropped a reply to", 100)
    lines = server_lines(server, before)
    assert len(lines) <= 4, lines
    record(
        "100 clients leaving before their replies",
        100,
        f"each drop counted; {len(lines)} log lines in all",
    )


def test_a_worker_id_cannot_forge_a_log_line(start_server, context, record):
    server, backend = start_broker(start_server)
    forged = b"evil\n2026-01-01 00:00:00,000 server: all is well\x1b[31m"
    worker = mdp_peer(context, backend, forged)
    worker.send_multipart([b"", b"MDPW02", b"\x01", b"svc\nforged"])
    shown = server.process.wait_for(r"worker evil.* ready for .*", "err").group(0)
    assert "\\n2026-01-01" in shown and "\\x1b[31m" in shown and "svc\\nforged" in shown
    err = "\n".join(server.process.err)
    assert "all is well" not in err.replace(shown, "")
    assert "\x1b" not in err
    record(
        "a worker whose routing id and service name hold a newline and a terminal escape",
        1,
        "logged escaped, on one line",
    )


def test_incident_total_counts_single_and_counted_lines():
    lines = [
        "t server: dropped a reply to a: client is gone",
        "t server: dropped replies: 41 more (latest: dropped a reply to b: client is gone)",
        "t server: worker x ready for 'y'",
    ]
    assert incident_total(lines, "dropped replies", "dropped a reply to") == 42
