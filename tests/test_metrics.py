"""--metrics: what an operator's Prometheus scrapes from server.py and worker.py, with real
processes on loopback (each request's outcome by service, its duration, queues and
workers, restarts), and the counting and labelling rules in-process, without sockets."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import zmq
from harness import ECHO, REPO, WAIT, dealer, local_worker_pids, receive, start_broker
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_services import start_majortomo_worker

from zmq_hello import Client, NoReply, ServerError
from zmq_hello.metrics import ServerCollector, loads_by_label
from zmq_hello.runners import Load
from zmq_hello.tally import BUCKETS, MAX_SERVICE_LABELS, OTHER, ServiceTally, Tally

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
POLL = 0.02  # seconds between scrapes while waiting for the server to count something


def metrics_url(process) -> str:
    return process.wait_for(r"^Metrics on (http://127\.0\.0\.1:\d+/metrics)$").group(1)


def scrape(url: str) -> Samples:
    """Every sample on the page, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=WAIT) as page:
        assert page.status == 200
        text = page.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_scrape(url: str, check, timeout: float = WAIT) -> Samples:
    """Scrape until check(samples) holds: the server counts a request just after its
    reply leaves, so a client may have its reply a moment before the count shows."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {samples}")
        time.sleep(POLL)


def requests_of(samples: Samples, service: str) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: count
        for (name, labels), count in samples.items()
        if name == "zmq_hello_requests_total" and dict(labels)["service"] == service
    }


def service_labels(samples: Samples, name: str) -> set[str]:
    return {dict(labels)["service"] for (found, labels) in samples if found == name}


# With real processes --------------------------------------------------------------


def test_n_requests_show_as_n_answered_for_the_service_with_their_durations(echo_server):
    server = echo_server("--metrics", "127.0.0.1:0", "--service", "greet", "--quiet")
    url = metrics_url(server.process)
    with Client(server.endpoint, timeout=WAIT) as client:
        for n in range(7):
            assert client.request(b"x%d" % n) == b"x%d" % n
    samples = wait_scrape(url, lambda s: requests_of(s, "greet")["answered"] == 7)
    assert requests_of(samples, "greet") == {
        "answered": 7,
        "error": 0,
        "dropped": 0,
        "expired": 0,
        "unanswered": 0,
    }
    histogram = "zmq_hello_request_duration_seconds"
    assert value(samples, f"{histogram}_count", service="greet") == 7
    assert 0 < value(samples, f"{histogram}_sum", service="greet") < 7 * WAIT
    buckets = [value(samples, f"{histogram}_bucket", service="greet", le=str(b)) for b in BUCKETS]
    assert buckets == sorted(buckets) and buckets[-1] == 7
    assert value(samples, "zmq_hello_workers", service="greet", state="idle") == 16
    assert value(samples, "zmq_hello_worker_restarts_total") == 0
    for standard in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert value(samples, standard) > 0
    assert value(samples, "process_open_fds") > 0


def test_each_outcome_is_counted_once(echo_server, context):
    server = echo_server(
        "--metrics", "127.0.0.1:0", "--workers", "1", "--quiet", handler=f"{ECHO}_aloud"
    )
    url = metrics_url(server.process)
    with Client(server.endpoint, timeout=WAIT) as client, pytest.raises(ServerError):
        client.request(b"boom")
    # A caller that leaves before its reply: the reply is dropped.
    leaving = dealer(context, server.endpoint)
    leaving.send_multipart([b"", b"0.3 leaving"])
    server.process.wait_for("^handling 0.3 leaving$")
    leaving.close(linger=0)
    wait_scrape(url, lambda s: requests_of(s, "hello")["dropped"] == 1)
    # The only worker busy for 0.6 s; a caller who waits 0.2 s has gone when its turn comes.
    holder = dealer(context, server.endpoint)
    holder.send_multipart([b"", b"0.6 hold"])
    server.process.wait_for("^handling 0.6 hold$")
    with Client(server.endpoint, timeout=0.2, retries=0) as late, pytest.raises(NoReply):
        late.request(b"late")
    assert receive(holder)[-1] == b"0.6 hold"
    # MDP has no error reply: a request for a service nobody serves ends with none.
    mdp_client = dealer(context, server.endpoint)
    mdp_client.send_multipart([b"MDPC02", b"\x01", b"nobody", b"x"])
    samples = wait_scrape(
        url, lambda s: requests_of(s, "hello")["expired"] and requests_of(s, "other")["unanswered"]
    )
    hello = requests_of(samples, "hello")
    assert hello == {"answered": 1, "error": 1, "dropped": 1, "expired": 1, "unanswered": 0}
    assert requests_of(samples, "other")["unanswered"] == 1
    histogram = "zmq_hello_request_duration_seconds_count"
    assert value(samples, histogram, service="hello") == 2  # answered and error, timed
    assert service_labels(samples, "zmq_hello_requests_total") == {"hello", "other"}


def test_waiting_and_running_gauges_follow_a_burst_and_return_to_zero(echo_server, context):
    server = echo_server("--metrics", "127.0.0.1:0", "--workers", "1", "--quiet")
    url = metrics_url(server.process)
    callers = [dealer(context, server.endpoint) for _ in range(3)]
    for n, caller in enumerate(callers):
        caller.send_multipart([b"", b"0.4 burst %d" % n])

    def gauges(samples: Samples) -> tuple[float, ...]:
        return (
            value(samples, "zmq_hello_requests_waiting", service="hello"),
            value(samples, "zmq_hello_requests_running", service="hello"),
            value(samples, "zmq_hello_workers", service="hello", state="busy"),
            value(samples, "zmq_hello_workers", service="hello", state="idle"),
        )

    wait_scrape(url, lambda s: gauges(s) == (2, 1, 1, 0))
    wait_scrape(url, lambda s: gauges(s) == (1, 1, 1, 0))
    for caller in callers:
        receive(caller)
    samples = wait_scrape(url, lambda s: requests_of(s, "hello")["answered"] == 3)
    assert gauges(samples) == (0, 0, 0, 1)


def test_local_worker_processes_show_idle_then_busy_and_a_restart(echo_server, context):
    server = echo_server("--metrics", "127.0.0.1:0", "--processes", "2", "--quiet")
    url = metrics_url(server.process)

    def workers(samples: Samples) -> tuple[float, float]:
        idle = value(samples, "zmq_hello_workers", service="hello", state="idle")
        return idle, value(samples, "zmq_hello_workers", service="hello", state="busy")

    wait_scrape(url, lambda s: workers(s) == (2, 0))
    callers = [dealer(context, server.endpoint) for _ in range(2)]
    for caller in callers:
        caller.send_multipart([b"", b"1 busy"])
    samples = wait_scrape(url, lambda s: workers(s) == (0, 2))
    assert value(samples, "zmq_hello_requests_running", service="hello") == 2
    for caller in callers:
        receive(caller)
    server.process.wait_count(r"worker \S+ ready for 'hello'", 2, "err")
    victim = local_worker_pids(server)[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    samples = wait_scrape(url, lambda s: value(s, "zmq_hello_worker_restarts_total") == 1)
    wait_scrape(url, lambda s: workers(s) == (2, 0))
    assert requests_of(samples, "hello")["answered"] == 2


def test_a_worker_leaving_after_max_requests_is_no_restart(echo_server):
    server = echo_server(
        "--metrics", "127.0.0.1:0", "--processes", "1", "--max-requests", "2", "--quiet"
    )
    url = metrics_url(server.process)
    with Client(server.endpoint, timeout=WAIT) as client:
        for n in range(5):
            client.request(b"x%d" % n)
    server.process.wait_count(r"worker \S+ ready for 'hello'", 2, "err")
    samples = wait_scrape(url, lambda s: requests_of(s, "hello")["answered"] == 5)
    assert value(samples, "zmq_hello_worker_restarts_total") == 0


def test_made_up_service_names_share_one_label(start_server, spawn, context):
    server, backend = start_broker(start_server, "--metrics", "127.0.0.1:0", "--quiet")
    url = metrics_url(server.process)
    # A worker's service gets its own label; 150 names nobody serves share 'other'.
    worker = spawn("worker.py", "--connect", backend, "--service", "real", "--handler", ECHO)
    worker.wait_for("^Worker ready for real")
    client = dealer(context, server.endpoint)
    client.send_multipart([b"MDPC02", b"\x01", b"real", b"x"])
    assert receive(client)[-1] == b"x"
    names = 150
    for n in range(names):
        client.send_multipart([b"MDPC02", b"\x01", b"made-up-%d" % n, b"x"])
    while_waiting = wait_scrape(
        url, lambda s: value(s, "zmq_hello_requests_waiting", service="other")
    )
    assert service_labels(while_waiting, "zmq_hello_requests_waiting") <= {"hello", "real", "other"}
    samples = scrape(url)
    assert requests_of(samples, "real")["answered"] == 1
    labels = service_labels(samples, "zmq_hello_requests_total")
    assert labels == {"hello", "real", "other"}
    # What waits for a service no worker serves ends as the server stops: it exits 0.
    server.process.signal(signal.SIGTERM)
    assert server.process.finish() == 0


def test_a_streamed_reply_counts_once_at_its_final(start_server, spawn):
    server, backend = start_broker(start_server, "--metrics", "127.0.0.1:0", "--quiet")
    url = metrics_url(server.process)
    start_majortomo_worker(spawn, server, backend, "resize")
    parts: list[bytes] = []
    with Client(server.endpoint, timeout=WAIT) as client:
        reply = client.request(b"stream 3", service="resize", on_partial=parts.append)
    assert reply == b"majortomo: stream 3" and len(parts) == 3
    samples = wait_scrape(url, lambda s: requests_of(s, "resize")["answered"])
    assert requests_of(samples, "resize")["answered"] == 1
    assert value(samples, "zmq_hello_request_duration_seconds_count", service="resize") == 1


def test_requests_that_wait_out_no_worker_timeout_count_as_expired(start_server, context):
    server, _ = start_broker(
        start_server, "--metrics", "127.0.0.1:0", "--no-worker-timeout", "0.1", "--quiet"
    )
    url = metrics_url(server.process)
    plain = dealer(context, server.endpoint)
    plain.send_multipart([b"", b"x"])
    assert receive(plain)[-1] == b"ERROR: no worker for this service"
    mdp_client = dealer(context, server.endpoint)
    for n in range(120):
        mdp_client.send_multipart([b"MDPC02", b"\x01", b"nobody-%d" % n, b"x"])
    samples = wait_scrape(url, lambda s: requests_of(s, "other")["expired"] == 120)
    assert requests_of(samples, "hello")["expired"] == 1
    assert requests_of(samples, "hello")["error"] == 0
    assert requests_of(samples, "other")["unanswered"] == 0
    assert service_labels(samples, "zmq_hello_requests_total") == {"hello", "other"}


def test_scrapes_under_load_never_go_down_nor_count_more_than_was_sent(echo_server):
    server = echo_server("--metrics", "127.0.0.1:0", "--workers", "0", "--quiet")
    url = metrics_url(server.process)
    callers, each = 4, 250
    done = threading.Event()
    seen: list[tuple[float, float]] = []

    def scraper() -> None:
        while not done.is_set():
            samples = scrape(url)
            answered = requests_of(samples, "hello")["answered"]
            timed = value(samples, "zmq_hello_request_duration_seconds_count", service="hello")
            seen.append((answered, timed))

    def caller() -> None:
        with Client(server.endpoint, timeout=WAIT) as client:
            for n in range(each):
                client.request(b"x%d" % n)

    watching = threading.Thread(target=scraper)
    watching.start()
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    wait_scrape(url, lambda s: requests_of(s, "hello")["answered"] == callers * each)
    done.set()
    watching.join(WAIT)
    assert len(seen) >= 2
    for (answered, timed), (later_answered, later_timed) in zip(seen, seen[1:], strict=False):
        assert answered <= later_answered and timed <= later_timed
    # Every scrape: no more than was sent, and the histogram's count is the counter's.
    assert all(answered <= callers * each and answered == timed for answered, timed in seen)


def test_worker_metrics_count_its_requests_and_time_its_handler(start_server, spawn):
    server, backend = start_broker(start_server, "--quiet")
    worker = spawn("worker.py", "--connect", backend, "--handler", ECHO, "--metrics", "127.0.0.1:0")
    url = metrics_url(worker)
    worker.wait_for("^Worker ready for hello")
    with Client(server.endpoint, timeout=WAIT) as client:
        for n in range(5):
            client.request(b"0.01 %d" % n)
        with pytest.raises(ServerError):
            client.request(b"boom")
    samples = wait_scrape(
        url,
        lambda s: value(s, "zmq_hello_worker_requests_total", service="hello", outcome="error"),
    )
    requests = "zmq_hello_worker_requests_total"
    assert value(samples, requests, service="hello", outcome="answered") == 5
    histogram = "zmq_hello_worker_handler_duration_seconds"
    assert value(samples, f"{histogram}_count", service="hello") == 6
    assert value(samples, f"{histogram}_sum", service="hello") >= 5 * 0.01


def run_python(*args: str) -> subprocess.CompletedProcess:
    """Python with args, in the checkout, to its end (bounded); its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
    )


NOT_INSTALLED = {
    # No distribution: what pip uninstall leaves (importlib.metadata finds none).
    "no distribution": "import importlib.metadata as m; "
    "m.version = lambda name: (_ for _ in ()).throw(m.PackageNotFoundError(name)); ",
    # No module: an import of a module set to None in sys.modules fails.
    "no module": "import sys; sys.modules['prometheus_client'] = None; ",
}


@pytest.mark.parametrize("script", ["server.py", "worker.py"])
@pytest.mark.parametrize("missing", NOT_INSTALLED)
def test_metrics_without_prometheus_client_exits_2_with_one_line(script, missing):
    starter = (
        f"import runpy, sys; {NOT_INSTALLED[missing]}"
        f"sys.argv = [{script!r}, '--metrics', '127.0.0.1:0']; "
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    result = run_python("-c", starter)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        rf"{script}: error: --metrics needs prometheus-client 0.20 or newer: .*", line
    )
    assert "pip install" in line


def test_a_bad_metrics_address_is_a_usage_error():
    result = run_python("server.py", "--metrics", "9105")
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr and "Traceback" not in result.stderr


def test_without_metrics_the_server_never_imports_prometheus_client(echo_server, context):
    # server.py --metrics off: a handler that reports whether the module was loaded.
    server = echo_server(handler="tests.sample_handlers:loaded_modules")
    reply = receive_reply(context, server.endpoint, b"prometheus_client")
    assert reply == b"False"


def receive_reply(context: zmq.Context, endpoint: str, body: bytes) -> bytes:
    with context.socket(zmq.DEALER) as socket:
        socket.connect(endpoint)
        socket.send_multipart([b"", body])
        return receive(socket)[-1]


# In-process: counting and labels --------------------------------------------------


def request_for(service: bytes) -> object:
    from zmq_hello.envelope import Request

    return Request([b"client"], b"x", service, received=time.monotonic())


def test_a_service_gets_its_own_label_only_while_a_worker_serves_it():
    served = {b"real"}
    tally = Tally(b"hello", served.__contains__)
    for n in range(300):
        tally.ended(request_for(b"made-up-%d" % n), "expired")  # type: ignore[arg-type]
    tally.ended(request_for(b"real"), "answered")  # type: ignore[arg-type]
    tally.ended(request_for(b""), "answered")  # type: ignore[arg-type]  # a plain client's
    labels = {name: service.read().outcomes for name, service in tally.snapshot()}
    assert set(labels) == {"hello", "real", OTHER}
    assert labels[OTHER]["expired"] == 300
    assert labels["real"]["answered"] == labels["hello"]["answered"] == 1


def test_labels_stop_at_their_bound_and_other_is_never_a_service_of_its_own():
    tally = Tally(b"hello", lambda name: True)
    for n in range(MAX_SERVICE_LABELS * 2):
        tally.ended(request_for(b"s%d" % n), "answered")  # type: ignore[arg-type]
    tally.ended(request_for(b"other"), "answered")  # type: ignore[arg-type]
    labels = {name: service.read().outcomes for name, service in tally.snapshot()}
    assert len(labels) == MAX_SERVICE_LABELS + 1
    assert labels[OTHER]["answered"] == MAX_SERVICE_LABELS + 2


def test_names_that_look_alike_escaped_never_share_a_label():
    tally = Tally(b"hello", lambda name: True)
    for name in (b"\xff", b"\xff", b"\\xff", b"caf\xc3\xa9", b"caf\xe9"):
        tally.ended(request_for(name), "answered")  # type: ignore[arg-type]
    counts = {name: service.read().outcomes["answered"] for name, service in tally.snapshot()}
    assert counts == {"hello": 0, "\\xff": 2, "café": 1, "caf\\xe9": 1, OTHER: 1}


def test_a_server_whose_own_service_is_named_other_shows_each_series_once():
    tally = Tally(b"other", lambda name: False)
    tally.ended(request_for(b""), "answered")  # type: ignore[arg-type]
    tally.ended(request_for(b"made-up"), "expired")  # type: ignore[arg-type]
    [(name, service)] = tally.snapshot()
    assert name == OTHER and service.read().outcomes["answered"] == 1


@pytest.mark.parametrize(
    "seconds, bucket",
    [(0.0, 0), (0.0001, 0), (0.00011, 1), (1.0, BUCKETS.index(1.0)), (1e6, len(BUCKETS))],
)
def test_a_duration_falls_in_the_first_bucket_whose_bound_it_does_not_exceed(seconds, bucket):
    tally = ServiceTally()
    tally.timed(tally.errors, seconds)
    reading = tally.read()
    assert reading.buckets.index(1) == bucket and reading.seconds == seconds
    assert reading.outcomes == {
        "answered": 0,
        "error": 1,
        "dropped": 0,
        "expired": 0,
        "unanswered": 0,
    }


def test_loads_of_unlabelled_services_add_up_under_other():
    loads = [
        Load(b"hello", 1, 2, 3),
        Load(b"real", 0, 1, 0),  # a worker serves it: its own label
        Load(b"asked-for-1", 4, 0, 0),
        Load(b"asked-for-2", 5, 0, 0),
    ]
    by_label = loads_by_label(loads, {"hello", OTHER})
    assert by_label == {
        "hello": Load(b"hello", 1, 2, 3),
        "real": Load(b"real", 0, 1, 0),
        OTHER: Load(b"asked-for-1", 9, 0, 0),
    }
    # Past the bound, what the counters label keeps its label; the rest is OTHER's.
    many = [Load(b"s%d" % n, 0, 1, 0) for n in range(MAX_SERVICE_LABELS + 10)]
    by_label = loads_by_label([*many, Load(b"hello", 0, 1, 0)], {"hello"})
    assert len(by_label) == MAX_SERVICE_LABELS + 1 and "hello" in by_label


def test_the_page_is_the_text_format_with_cumulative_buckets():
    tally = Tally(b"hello", lambda name: False)
    for seconds in (0.00005, 0.002, 0.002, 45.0):
        service = tally.services[b"hello"]
        service.timed(service.answered, seconds)
    registry = CollectorRegistry()
    registry.register(ServerCollector(tally.snapshot, lambda: [Load(b"hello", 0, 4, 0)], lambda: 3))
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["zmq_hello_requests"].type == "counter"
    assert families["zmq_hello_request_duration_seconds"].type == "histogram"
    assert families["zmq_hello_requests_waiting"].type == "gauge"
    assert families["zmq_hello_workers"].type == "gauge"
    assert families["zmq_hello_worker_restarts"].samples[0].value == 3
    buckets = {
        sample.labels["le"]: sample.value
        for sample in families["zmq_hello_request_duration_seconds"].samples
        if sample.name.endswith("_bucket") and sample.labels["service"] == "hello"
    }
    assert (buckets["0.0001"], buckets["0.0025"], buckets["30.0"], buckets["+Inf"]) == (1, 3, 3, 4)
