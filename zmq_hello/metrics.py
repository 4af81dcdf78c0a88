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

from zmq_hello.runners import Load
from zmq_hello.tally import (
    ANSWERED,
    BUCKETS,
    DROPPED,
    ERROR,
    EXPIRED,
    MAX_SERVICE_LABELS,
    OTHER,
    OUTCOMES,
    ServiceTally,
    label_of,
)

PREFIX = "zmq_hello"


def serve(host: str, port: int, collector: object) -> str:
    """Register collector beside the library's process metrics and serve them all at
    host:port (0: a free port); the page's URL. OSError if it cannot be bound."""
    REGISTRY.register(collector)  # type: ignore[arg-type]
    httpd, _thread = start_http_server(port, host)
    host, port = str(httpd.server_address[0]), httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


class RequestMetrics(NamedTuple):
    """The names and help of the requests counter and the duration histogram, and the
    outcomes there are."""

    requests: str
    requests_help: str
    duration: str
    duration_help: str
    outcomes: tuple[str, ...] = OUTCOMES


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
    (ANSWERED, ERROR, DROPPED, EXPIRED),
)


def request_metrics(
    names: RequestMetrics, tallies: Iterable[tuple[str, ServiceTally]]
) -> Iterator[Metric]:
    """The requests counter and the duration histogram, from each service's tally."""
    requests = CounterMetricFamily(
        names.requests, names.requests_help, labels=["service", "outcome"]
    )
    duration = HistogramMetricFamily(names.duration, names.duration_help, labels=["service"])
    for service, tally in tallies:
        outcomes, counts, seconds = tally.read()
        for outcome in names.outcomes:
            requests.add_metric([service, outcome], outcomes[outcome])
        cumulative, total = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
            total += count
            cumulative.append((bound, total))
        duration.add_metric([service], cumulative, seconds)
    yield requests
    yield duration


def loads_by_label(loads: list[Load], labelled: set[str]) -> dict[str, Load]:
    """Each service's load under its label: its own if the counters have it (labelled)
    or a worker serves it, up to MAX_SERVICE_LABELS labels, the counters' first; else
    OTHER. Loads under one label are added up."""
    by_label: dict[str, Load] = {}
    served = []
    for load in loads:
        text = label_of(load.service)
        if text in labelled:
            by_label[text] = add(by_label.get(text), load)
        else:
            served.append((text, load))
    for text, load in served:
        own = (load.idle or load.busy) and (text in by_label or len(by_label) < MAX_SERVICE_LABELS)
        name = text if own else OTHER
        by_label[name] = add(by_label.get(name), load)
    return by_label


def add(total: Load | None, load: Load) -> Load:
    if total is None:
        return load
    return Load(
        total.service, total.waiting + load.waiting, total.idle + load.idle, total.busy + load.busy
    )


def load_gauges(loads: Iterable[tuple[str, Load]]) -> Iterator[Metric]:
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
    for service, load in loads:
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
        tallies: Callable[[], list[tuple[str, ServiceTally]]],
        loads: Callable[[], list[Load]],
        restarts: Callable[[], int],
    ) -> None:
        self.tallies = tallies
        self.loads = loads
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        tallies = self.tallies()
        yield from request_metrics(SERVER_REQUESTS, tallies)
        labelled = {name for name, _ in tallies}
        yield from load_gauges(loads_by_label(self.loads(), labelled).items())
        restarts = CounterMetricFamily(
            f"{PREFIX}_worker_restarts",
            "Local worker processes (--processes) restarted after an unexpected exit (a crash, "
            "a kill, a hang ended by the server); not those leaving after --max-requests.",
        )
        restarts.add_metric([], self.restarts())
        yield restarts


class WorkerCollector:
    """worker.py's metrics: its handler's requests by outcome and their duration."""

    def __init__(self, service: bytes, tally: ServiceTally) -> None:
        self.service = service
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        yield from request_metrics(WORKER_REQUESTS, [(label_of(self.service), self.tally)])
