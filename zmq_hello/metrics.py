"""--metrics HOST:PORT, for server.py and worker.py: the Prometheus text format on
http://HOST:PORT/metrics, served by prometheus-client (the optional extra `metrics`)
from a thread of its own. Imported only with --metrics.

Each scrape reads what the program already keeps, through a custom collector: the
tallies of requests (zmq_hello.tally), the runner's load, the supervisor's restarts.
Nothing is locked or recorded per request for the scraper's sake, no ZeroMQ socket is
touched from its thread, and the library's own process metrics (CPU seconds, resident
memory, open file descriptors) come with them. docs/metrics.md says what each means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from zmq_hello.envelope import printable
from zmq_hello.runners import Load
from zmq_hello.tally import BUCKETS, MAX_SERVICE_LABELS, OTHER, OUTCOMES, ServiceTally

PREFIX = "zmq_hello"


def serve(host: str, port: int, collector: object) -> str:
    """Register collector beside the library's process metrics and serve them all at
    host:port (0: a free port); the page's URL. OSError if it cannot be bound."""
    REGISTRY.register(collector)  # type: ignore[arg-type]
    httpd, _thread = start_http_server(port, host)
    host, port = str(httpd.server_address[0]), httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


def label(name: bytes) -> str:
    return printable(name, 100)


class RequestMetrics(NamedTuple):
    """The names and help of the requests counter and the duration histogram."""

    requests: str
    requests_help: str
    duration: str
    duration_help: str


SERVER_REQUESTS = RequestMetrics(
    f"{PREFIX}_requests",
    "Requests that ended, by service and outcome (answered, error, dropped, expired, unanswered).",
    f"{PREFIX}_request_duration_seconds",
    "From a request being read to its reply sent, for those answered (error replies too).",
)
WORKER_REQUESTS = RequestMetrics(
    f"{PREFIX}_worker_requests",
    "Requests this worker ended, by service and outcome (answered, error, dropped, expired).",
    f"{PREFIX}_worker_handler_duration_seconds",
    "The handler's time, for requests it answered (error replies too).",
)


def request_metrics(
    names: RequestMetrics, tallies: Iterable[tuple[bytes, ServiceTally]]
) -> Iterator[Metric]:
    """The requests counter and the duration histogram, from each service's tally."""
    requests = CounterMetricFamily(
        names.requests, names.requests_help, labels=["service", "outcome"]
    )
    duration = HistogramMetricFamily(names.duration, names.duration_help, labels=["service"])
    for name, tally in tallies:
        outcomes, counts, seconds = tally.read()
        service = label(name)
        for outcome in OUTCOMES:
            requests.add_metric([service, outcome], outcomes[outcome])
        cumulative, total = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
            total += count
            cumulative.append((bound, total))
        duration.add_metric([service], cumulative, seconds)
    yield requests
    yield duration


def loads_by_label(loads: list[Load], labelled: Callable[[bytes], bool]) -> dict[bytes, Load]:
    """Each service's load under its label: its own name if labelled(name) or a worker
    serves it (up to MAX_SERVICE_LABELS names), else OTHER, summed."""
    by_label: dict[bytes, Load] = {}
    for load in loads:
        name = load.service
        own = labelled(name) or (load.idle + load.busy and name != OTHER)
        if not own or (name not in by_label and len(by_label) >= MAX_SERVICE_LABELS):
            name = OTHER
        if (seen := by_label.get(name)) is not None:
            waiting, idle, busy = (
                seen.waiting + load.waiting,
                seen.idle + load.idle,
                seen.busy + load.busy,
            )
            load = Load(name, waiting, idle, busy)
        by_label[name] = load
    return by_label


def load_gauges(loads: Iterable[Load]) -> Iterator[Metric]:
    waiting = GaugeMetricFamily(
        f"{PREFIX}_requests_waiting",
        "Requests taken and waiting for a worker, by service.",
        labels=["service"],
    )
    running = GaugeMetricFamily(
        f"{PREFIX}_requests_running",
        "Requests a worker is running now, by service.",
        labels=["service"],
    )
    workers = GaugeMetricFamily(
        f"{PREFIX}_workers",
        "Workers (threads, tasks, worker processes; the poll loop itself inline), by service "
        "and state (idle, busy).",
        labels=["service", "state"],
    )
    for load in loads:
        service = label(load.service)
        waiting.add_metric([service], load.waiting)
        running.add_metric([service], load.busy)
        workers.add_metric([service, "idle"], load.idle)
        workers.add_metric([service, "busy"], load.busy)
    yield waiting
    yield running
    yield workers


class ServerCollector:
    """server.py's metrics, read at each scrape from the poll loop's tally, the runner's
    load and the supervisor's count of restarts (only reads: see the module)."""

    def __init__(
        self,
        tallies: Callable[[], list[tuple[bytes, ServiceTally]]],
        loads: Callable[[], list[Load]],
        restarts: Callable[[], int],
    ) -> None:
        self.tallies = tallies
        self.loads = loads
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        tallies = self.tallies()
        yield from request_metrics(SERVER_REQUESTS, tallies)
        labelled = {name for name, _ in tallies}.__contains__
        yield from load_gauges(loads_by_label(self.loads(), labelled).values())
        restarts = CounterMetricFamily(
            f"{PREFIX}_worker_restarts",
            "Local worker processes (--processes) restarted after they exited or hung.",
        )
        restarts.add_metric([], self.restarts())
        yield restarts


class WorkerCollector:
    """worker.py's metrics: its handler's requests by outcome and their duration."""

    def __init__(self, service: bytes, tally: ServiceTally) -> None:
        self.service = service
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        yield from request_metrics(WORKER_REQUESTS, [(self.service, self.tally)])
