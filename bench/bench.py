#!/usr/bin/env python3
"""Benchmark server.py against a baseline measured in the same run.

The baseline is the tutorial's server loop with its two bugs fixed (baseline_server.py).
Servers run as real processes on loopback with ephemeral ports; load comes from
load.py, a separate process (clients.py for the client library's figures). Measurements
of the baseline and of server.py alternate (A B A B ...) and every figure is a median,
reported beside its ratio to the baseline's median, because a shared machine is noisy.
Progress goes to stderr, the table to stdout.

    python bench/bench.py               # about 22 minutes, 4 more for each --against REV
    python bench/bench.py --quick       # under 2 minutes: keeps the benchmark working
    python bench/bench.py --json out.json
    python bench/bench.py --only against --against 75994fd   # side by side with a commit
    python bench/bench.py --markdown docs/performance.md   # the report, and its charts (charts.py)

--against REV (repeatable) runs the same figures on REV's server.py and client.py, from a
git worktree made for the run, interleaved with this tree's: a restructuring is judged
against the code before it, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent / "server.py"
CLIENT = HERE.parent / "client.py"
BASELINE = HERE / "baseline_server.py"
LOAD = HERE / "load.py"
OVERLOAD = HERE / "overload.py"
CLIENTS = HERE / "clients.py"
LBBROKER = HERE / "lbbroker.py"
WORKER = HERE.parent / "worker.py"
MAJORTOMO_WORKER = HERE / "majortomo_worker.py"
FAILOVER_CLIENT = HERE.parent / "tests" / "failover_client.py"
FAILOVER_HEARTBEAT = "0.5"  # seconds, servers and workers: a restart is found quickly
FAILOVER_TIMEOUT = 1.0  # each client try
# majortomo's broker logs a line per reply at its default level (INFO); server.py runs
# --quiet: both at warnings.
MAJORTOMO_LOGGING = "logging:\n  root: {level: WARNING}\n  handlers: {console: {level: WARNING}}\n"
EPHEMERAL = "tcp://127.0.0.1:*"

# The figures the project promises, as ratios to this run's own baseline.
TARGETS = {
    "inline_rps": 0.95,  # inline, zero work, C = 100: req/s at least this x the baseline
    "inline_cpu": 1.10,  # ... and server CPU per request at most this x the baseline
    "workers_rps": 0.60,  # thread workers (--workers 4), zero work, C = 100
    "async_rps": 0.60,  # an async handler, zero work, C = 100
    "burst": 1.05,  # 1000 x 0.5 s async at most this x (0.5 s + the baseline's burst)
    "processes_rps": 0.90,  # --processes 2, zero work, C = 100, against lbbroker with 2 workers
    "cpu_rps": 1.75,  # --processes 2 against 16 threads, CPU-bound handler, C = 20
    "slow_work": {4: 1.01, 16: 1.01, 100: 1.03},  # wall time at most this x the ideal
    "client": 1.15,  # client.py at most this x `python -c "import zmq"`
    "memory": 1.02,  # RSS added by 1000 idle clients at most this x the baseline's
    "majortomo_rps": 1.2,  # zero work: server.py (plain and MDP clients) x majortomo's broker
    "majortomo_cpu_rps": 0.90,  # CPU-bound: both bound by their workers
    "failover_wait": 1.5,  # kill run: worst client wait at most --timeout (1 s) + 0.5 s
    "against_rps": 0.95,  # each figure at least this x the same figure for --against REV
    # ... and each worker-process figure (plain and MDP clients), whose rounds are more (9)
    "against_processes_rps": 0.97,
    # The client library (issue 22), each against a bare loop of a few lines in the same run:
    "client_rps": 0.85,  # Client.request in a loop, one thread, inline zero work: x a bare DEALER
    "async_client_rps": 0.80,  # AsyncClient, 100 in flight: x a bare zmq.asyncio DEALER
    "client_threads": 1.10,  # one Client, 16 threads x K requests of 0.1 s: wall / K x 0.1 s
    "client_burst": 1.10,  # 1000 AsyncClient requests x 0.5 s async / (0.5 s + zero-work burst)
    # Deadlines (issue 24). At twice capacity, callers answered a second / capacity, at least:
    "overload_rps": 0.90,
    "overload_wasted": 0.05,  # handler calls whose reply nobody took / all, at most
    "deadline_cpu": 1.03,  # inline zero work C = 100: CPU per request with / without a deadline
    # Metrics (issue 25), zero work, C = 100, /metrics scraped every second: req/s with
    # --metrics 127.0.0.1:0 / without, at least
    "metrics_inline_rps": 0.95,  # inline (--workers 0)
    "metrics_processes_rps": 0.97,  # --processes 2
}
# The overload figure: --workers 4 (or --processes 4) and a 50 ms handler answer 80
# requests a second; callers come at twice that, each on a connection of its own, each
# waiting 0.5 s a try and trying 3 times in all (bench/overload.py).
OVERLOAD_CAPACITY = 80
OVERLOAD_RATE = 160
OVERLOAD_MODES = {
    "--workers 4": ["--workers", "4", "--work-time", "0.05"],
    "--processes 4": ["--processes", "4", "--work-time", "0.05"],
}
# The overload sweep (--workers 4 only, one round a load, for the charts): offered loads
# as multiples of OVERLOAD_CAPACITY are in Settings.sweep_loads.
SWEEP_MODE = "--workers 4"
# The metrics figure: each mode without --metrics and with it, a scrape every second.
METRICS_MODES = {
    "inline": (["--workers", "0", "--work-time", "0"], "metrics_inline_rps"),
    "--processes 2": (["--processes", "2", "--work-time", "0"], "metrics_processes_rps"),
}
METRICS_FLAG = ["--metrics", "127.0.0.1:0"]
METRICS_LINE = re.compile(r"Metrics on (\S+)")
SCRAPE_INTERVAL = 1.0  # seconds between two GETs of /metrics
SUMMARY_COUNTS = re.compile(
    r"(\d+) waiting, (\d+) running; since start: (\d+) answered, (\d+) error replies, "
    r"(\d+) dropped(?:, (\d+) expired past their deadline)?"
)


@dataclass
class Settings:
    """How long and how often each phase measures (QUICK below: a smoke run)."""

    rounds: int = 5
    seconds: float = 0.6  # each throughput measurement
    warmup: float = 0.2
    concurrency: tuple[int, ...] = (1, 10, 100)
    slow_clients: int = 100
    slow_work: float = 0.5
    slow_workers: tuple[int, ...] = (4, 16, 100)
    client_runs: int = 30
    idle_clients: int = 1000
    burst_clients: int = 1000
    burst_rounds: int = 5
    burst_threads: bool = True  # the same burst on 16 threads, once: about 32 s
    # The worker-process comparisons run 3 to 4 processes on 2 shared cores: longer
    # windows, so that one stall of the machine weighs less in any one measurement.
    processes_seconds: float = 2.0  # each zero-work measurement through worker processes
    # One round of one target moved by up to 25 % against the next: the median of more
    # rounds is what holds still.
    processes_rounds: int = 9
    cpu_seconds: float = 3.0  # each CPU-bound measurement
    kill_seconds: float = 10.0  # the load run during which a worker is killed each second
    failover_seconds: float = 20.0  # the load run during which a server is killed
    # The client library against bare loops (clients.py): req/s measurements, then wall
    # times (16 threads sharing a Client, a burst of burst_clients on an AsyncClient).
    clients_rounds: int = 7
    clients_seconds: float = 1.5
    clients_wall_rounds: int = 5
    clients_requests: int = 10  # each of the 16 threads', one after another
    overload_seconds: float = 15.0  # callers arrive for this long, each overload run
    overload_rounds: int = 3
    deadline_rounds: int = 12  # with and without a deadline, ABBA: CPU per request, 1 % apart
    sweep_loads: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)  # x OVERLOAD_CAPACITY
    # Callers arrive for this long, each sweep run: long enough that a queue's first
    # seconds, answered before it grows past the callers' budget, weigh little.
    sweep_seconds: float = 8.0
    metrics_rounds: int = 16  # without and with --metrics, ABBA, of processes_seconds each


QUICK = Settings(
    rounds=3,
    seconds=0.2,
    warmup=0.05,
    concurrency=(1, 100),
    slow_clients=20,
    slow_work=0.1,
    slow_workers=(4, 100),
    client_runs=3,
    idle_clients=100,
    burst_clients=100,
    burst_rounds=1,
    burst_threads=False,
    processes_seconds=0.3,
    processes_rounds=3,
    cpu_seconds=0.3,
    kill_seconds=2.0,
    failover_seconds=4.0,
    clients_rounds=1,
    clients_seconds=0.2,
    clients_wall_rounds=1,
    clients_requests=3,
    overload_seconds=1.5,
    overload_rounds=1,
    deadline_rounds=1,
    sweep_loads=(0.5, 2.0),
    sweep_seconds=1.0,
    metrics_rounds=2,
)


def progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


class Server:
    """A server process started on an ephemeral port; stopped by its pid at the end."""

    def __init__(self, script: Path, *args: str, workers: int = 0, stderr=None) -> None:
        """workers: how many 'Worker ready' lines (from --processes) to wait for; with
        --metrics, its 'Metrics on URL' line too (metrics_url). It runs in its script's
        directory, so that --handler finds that tree's modules first."""
        self.popen = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=script.parent,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        line = self.popen.stdout.readline()
        if line.startswith("Workers connect to "):  # --backend: remote workers' endpoint
            self.backend = line.split()[-1]
            line = self.popen.stdout.readline()
        if not line.startswith("Listening on "):
            self.stop()
            raise SystemExit(f"bench: {script.name} did not start: {line!r}")
        self.endpoint = line.split()[-1]
        self.pid = self.popen.pid
        self.metrics_url: str | None = None
        ready, metrics = 0, "--metrics" in args
        while ready < workers or (metrics and not self.metrics_url):
            # Counted, not matched line by line: older worker.py versions wrote their ready
            # line in two writes, which interleave when two workers start at once.
            line = self.popen.stdout.readline()
            ready += line.count("Worker ready")
            if found := METRICS_LINE.search(line):
                self.metrics_url = found.group(1)
            elif not line or not (line.strip() == "" or "Worker ready" in line):
                self.stop()
                raise SystemExit(f"bench: {script.name} did not start all it runs: {line!r}")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def children(self) -> list[int]:
        with open(f"/proc/{self.pid}/task/{self.pid}/children") as children:
            return [int(pid) for pid in children.read().split()]

    def stop(self) -> None:
        """SIGTERM, so that server.py stops its worker processes; SIGKILL if it lingers."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.popen.wait()


def start_workers(commands: list[list[str]], brokers: int = 1) -> list[subprocess.Popen]:
    """Worker processes, returned once each has printed a 'Worker ready' line for each
    of its brokers; if one does not, all are ended."""
    started = [
        subprocess.Popen(
            [sys.executable, *command],
            cwd=HERE.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for command in commands
    ]
    for worker in started:
        for _ in range(brokers):
            line = worker.stdout.readline() if worker.stdout else ""
            if not line.startswith("Worker ready"):
                for process in started:
                    process.kill()
                    process.wait()
                raise SystemExit(f"bench: a worker did not start: {line!r}")
    return started


class Fleet:
    """A broker with worker.py processes of its own, stopped together: majortomo's broker
    from PyPI, or server.py --backend; endpoint and pid are the broker's."""

    def __init__(self, broker: Server | subprocess.Popen, endpoint: str, backend: str) -> None:
        self.broker = broker
        self.endpoint = endpoint
        self.backend = backend
        self.pid = broker.pid
        self.workers: list[subprocess.Popen] = []

    def add_workers(self, services: list[str], *args: str) -> None:
        """One worker.py per name in services; returns once each has registered."""
        self.start_workers(
            [
                [str(WORKER), "--connect", self.backend, "--service", name, *args]
                for name in services
            ]
        )

    def start_workers(self, commands: list[list[str]]) -> None:
        try:
            self.workers += start_workers(commands)
        except SystemExit:
            self.stop()
            raise

    def stop(self) -> None:
        for process in [*self.workers, self.broker]:
            if isinstance(process, Server):
                process.stop()
            elif process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def majortomo(logging_config: Path) -> Fleet:
    """majortomo's broker (one socket for clients and workers), logging only warnings."""
    with socket.socket() as probe:  # a free port: majortomo's broker prints no endpoint
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    command = ["-m", "majortomo.broker", "-b", endpoint, "-c", str(logging_config)]
    broker = subprocess.Popen(
        [sys.executable, *command], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return Fleet(broker, endpoint, endpoint)


def server_fleet(*args: str) -> Fleet:
    target = server("--backend", EPHEMERAL, *args, stderr=subprocess.DEVNULL)
    return Fleet(target, target.endpoint, target.backend)


def baseline() -> Server:
    return Server(BASELINE, EPHEMERAL)


def server(*args: str, **options) -> Server:
    return Server(SERVER, "--bind", EPHEMERAL, "--quiet", *args, **options)


def load(target: Server, mode: str, clients: int, seconds: float, *extra: str) -> dict:
    args = [str(LOAD), target.endpoint, mode, str(clients), str(seconds), *extra]
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=seconds + 60
    )
    if result.returncode != 0:
        raise SystemExit(f"bench: load.py failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def median(values: list[float | None]) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def throughput(settings: Settings) -> dict:
    """Zero work, --quiet: the baseline, inline mode and worker mode, interleaved."""
    servers = {
        "baseline": baseline(),
        "inline": server("--workers", "0", "--work-time", "0"),
        "workers": server("--workers", "4", "--work-time", "0"),
        "async": server("--handler", "bench.handlers:world_async"),
    }
    runs: dict[tuple[str, int], list[dict]] = {}
    try:
        for clients in settings.concurrency:
            for round_ in range(settings.rounds):
                for name, target in servers.items():
                    result = load(
                        target,
                        "rate",
                        clients,
                        settings.seconds,
                        "--server-pid",
                        str(target.pid),
                        "--warmup",
                        str(settings.warmup),
                    )
                    runs.setdefault((name, clients), []).append(result)
                    progress(
                        f"C={clients} round {round_ + 1}/{settings.rounds} {name}: "
                        f"{result['rps']:.0f} req/s, lost {result['lost']}"
                    )
    finally:
        for target in servers.values():
            target.stop()
    summary = {}
    for (name, clients), results in runs.items():
        summary[f"{name} C={clients}"] = {
            "mode": name,
            "clients": clients,
            **{
                key: median([result[key] for result in results])
                for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")
            },
            "lost": sum(result["lost"] for result in results),
            "rounds": [result["rps"] for result in results],
        }
    for row in summary.values():
        base = summary[f"baseline C={row['clients']}"]
        row["rps_ratio"] = row["rps"] / base["rps"]
        if row["cpu_us_per_request"] and base["cpu_us_per_request"]:
            row["cpu_ratio"] = row["cpu_us_per_request"] / base["cpu_us_per_request"]
        else:
            row["cpu_ratio"] = None
    return summary


def slow_work(settings: Settings) -> dict:
    """N clients x T seconds of work with W workers, against the ideal ceil(N / W) x T."""
    summary = {}
    for workers in settings.slow_workers:
        target = server("--workers", str(workers), "--work-time", str(settings.slow_work))
        try:
            ideal = math.ceil(settings.slow_clients / workers) * settings.slow_work
            result = load(target, "once", settings.slow_clients, ideal + 30)
        finally:
            target.stop()
        summary[workers] = {"ideal": ideal, **result, "ratio": result["seconds"] / ideal}
        progress(
            f"slow work W={workers}: {result['seconds']:.3f} s, ideal {ideal:.3f} s, "
            f"lost {result['lost']}"
        )
    return summary


def peak_rss_during(target: Server, command: list[str], timeout: float) -> tuple[dict, int]:
    """Run a load command; return its JSON and the server's highest RSS while it ran."""
    loader = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = target.rss_kib()
    deadline = time.monotonic() + timeout
    while loader.poll() is None and time.monotonic() < deadline:
        peak = max(peak, target.rss_kib())
        time.sleep(0.01)
    out, _ = loader.communicate(timeout=max(deadline - time.monotonic(), 1))
    if loader.returncode != 0:
        raise SystemExit("bench: load.py failed")
    return json.loads(out), peak


def burst(settings: Settings) -> dict:
    """1000 clients at once, each request awaiting 0.5 s (examples/slow_async.py, default
    --workers), against the baseline's wall time for the same burst with zero work."""
    n, work = settings.burst_clients, 0.5
    targets = {
        "baseline": baseline(),
        "async": server("--handler", "examples.slow_async:handle"),
    }
    walls: dict[str, list[float]] = {name: [] for name in targets}
    peaks: list[int] = []
    lost = 0
    try:
        for round_ in range(settings.burst_rounds):
            for name, target in targets.items():
                command = [sys.executable, str(LOAD), target.endpoint, "once", str(n), "60"]
                result, peak = peak_rss_during(target, command, 90)
                walls[name].append(result["seconds"])
                lost += result["lost"]
                if name == "async":
                    peaks.append(peak)
                progress(
                    f"burst round {round_ + 1}/{settings.burst_rounds} {name}: "
                    f"{result['seconds']:.3f} s, peak RSS {peak} KiB, lost {result['lost']}"
                )
        idle_rss = targets["async"].rss_kib()
    finally:
        for target in targets.values():
            target.stop()
    figures = {
        "clients": n,
        "work": work,
        "baseline_s": statistics.median(walls["baseline"]),
        "async_s": statistics.median(walls["async"]),
        "async_peak_rss_kib": statistics.median(peaks),
        "async_rss_after_kib": idle_rss,
        "lost": lost,
    }
    figures["ideal_s"] = work + figures["baseline_s"]
    figures["ratio"] = figures["async_s"] / figures["ideal_s"]
    if settings.burst_threads:
        target = server("--work-time", str(work))  # 16 threads, the default
        try:
            command = [sys.executable, str(LOAD), target.endpoint, "once", str(n), "120"]
            result, peak = peak_rss_during(target, command, 150)
        finally:
            target.stop()
        figures["threads_s"] = result["seconds"]
        figures["threads_peak_rss_kib"] = peak
        figures["lost"] += result["lost"]
        progress(f"burst on 16 threads: {result['seconds']:.3f} s, lost {result['lost']}")
    return figures


def interleaved(
    settings: Settings,
    targets: dict,
    clients: int,
    seconds: float,
    rounds: int,
    load_args: dict[str, list[str]] | None = None,
    abba: bool = False,
) -> dict:
    """rounds of alternating rate measurements of each target (load_args: more for load.py,
    by target); medians per target. abba: every other round in the reverse order, so that
    whatever favours the first (or the second) of a round favours each target as often."""
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    for round_ in range(rounds):
        order = list(targets.items())
        if abba and round_ % 2:
            order.reverse()
        for name, target in order:
            result = load(
                target,
                "rate",
                clients,
                seconds,
                "--server-pid",
                str(target.pid),
                "--warmup",
                str(settings.warmup),
                *(load_args or {}).get(name, []),
            )
            runs[name].append(result)
            progress(
                f"C={clients} round {round_ + 1}/{rounds} {name}: "
                f"{result['rps']:.0f} req/s, lost {result['lost']}"
            )
    return {
        name: {
            "rps": median([result["rps"] for result in results]),
            "cpu_us_per_request": median([result["cpu_us_per_request"] for result in results]),
            "p50_ms": median([result["p50_ms"] for result in results]),
            "lost": sum(result["lost"] for result in results),
            "rounds": [result["rps"] for result in results],
        }
        for name, results in runs.items()
    }


def processes(settings: Settings) -> dict:
    """Zero work, C = 100: server.py --processes 2 against the guide's bare load-balancing
    broker with 2 worker processes, of two kinds: the guide's REQ workers, and the same
    worker.py processes that --processes runs (MDP), so that the second ratio is the
    broker's cost alone; then a CPU-bound handler, C = 20, against threads."""
    targets = {
        "lbbroker": Server(LBBROKER, EPHEMERAL),
        "lbbroker_mdp": Server(LBBROKER, EPHEMERAL, "--mdp", workers=2),
        "processes": server("--processes", "2", "--work-time", "0", workers=2),
    }
    try:
        zero = interleaved(
            settings, targets, 100, settings.processes_seconds, settings.processes_rounds
        )
    finally:
        for target in targets.values():
            target.stop()
    zero["processes"]["ratio"] = zero["processes"]["rps"] / zero["lbbroker_mdp"]["rps"]
    zero["processes"]["ratio_req"] = zero["processes"]["rps"] / zero["lbbroker"]["rps"]

    cpu = "examples.cpu:handle"
    targets = {
        "threads": server("--handler", cpu),
        "processes": server("--processes", "2", "--handler", cpu, workers=2),
    }
    try:
        bound = interleaved(settings, targets, 20, settings.cpu_seconds, settings.processes_rounds)
    finally:
        for target in targets.values():
            target.stop()
    bound["processes"]["ratio"] = bound["processes"]["rps"] / bound["threads"]["rps"]
    sys.path.insert(0, str(HERE.parent))
    from examples import cpu as cpu_example

    handler_times = []
    for _ in range(50):
        started = time.perf_counter()
        cpu_example.handle(b"")
        handler_times.append(time.perf_counter() - started)
    bound["handler_ms"] = 1000 * statistics.median(handler_times)
    return {
        "zero": zero,
        "cpu": bound,
        "lost": sum(
            row["lost"] for row in [*zero.values(), *bound.values()] if isinstance(row, dict)
        ),
    }


def majordomo(settings: Settings) -> dict:
    """server.py as a Majordomo broker against majortomo's (PyPI), each with 2 worker
    processes, zero work and CPU-bound, C = 20 and 100: majortomo's broker with its own
    workers (the stack a majortomo user runs; the targets are judged against it), and
    with worker.py's (the broker alone); server.py --processes 2 with its plain clients
    and with majortomo's MDP/0.2 clients (the one dialect majortomo's broker speaks), so
    that every target gets the same load generator in its own protocol. Then ten services
    of 1 worker each against one service of 10 workers.

    The load generator waits with epoll here (load.py --epoll): zmq_poll over 100 DEALERs
    cost it 75-90 us a request, more than either broker, on the 2 cores they share, so
    that every broker looked alike; with epoll it costs 35-45 us."""
    rows: dict = {}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        config.write(MAJORTOMO_LOGGING)
        config.flush()
        for work, worker_args, seconds in [
            ("zero work", ["--work-time", "0"], settings.processes_seconds),
            ("examples/cpu.py", ["--handler", "examples.cpu:handle"], settings.cpu_seconds),
        ]:
            for clients in (20, 100):
                native, shared = majortomo(Path(config.name)), majortomo(Path(config.name))
                targets: dict[str, Fleet | Server] = {"majortomo": native, "majortomo+w": shared}
                try:
                    cpu_flag = ["--cpu"] if work != "zero work" else []
                    command = [str(MAJORTOMO_WORKER), native.endpoint, *cpu_flag]
                    native.start_workers([command] * 2)
                    shared.add_workers(["hello"] * 2, *worker_args)
                    targets["plain"] = server("--processes", "2", *worker_args, workers=2)
                    targets["mdp"] = targets["plain"]
                    epoll, mdp = ["--epoll"], ["--epoll", "--protocol", "majortomo"]
                    load_args = {"majortomo": mdp, "majortomo+w": mdp, "plain": epoll, "mdp": mdp}
                    row = interleaved(
                        settings, targets, clients, seconds, settings.processes_rounds, load_args
                    )
                finally:
                    for target in set(targets.values()):
                        target.stop()
                for name in ("plain", "mdp"):
                    row[name]["ratio"] = row[name]["rps"] / row["majortomo"]["rps"]
                    row[name]["ratio_shared"] = row[name]["rps"] / row["majortomo+w"]["rps"]
                rows[f"{work}, C={clients}"] = row
        spread = {"one service, 10 workers": ["s0"] * 10, "ten services, 1 worker each": []}
        spread["ten services, 1 worker each"] = [f"s{n}" for n in range(10)]
        fleets = {label: server_fleet() for label in spread}
        try:
            for label, names in spread.items():
                fleets[label].add_workers(names, "--work-time", "0")
            load_args = {
                "one service, 10 workers": [
                    "--epoll",
                    "--protocol",
                    "majortomo",
                    "--service",
                    "s0",
                ],
                "ten services, 1 worker each": ["--epoll", "--protocol", "majortomo"]
                + ["--service", "s", "--services", "10"],
            }
            row = interleaved(
                settings, fleets, 100, settings.processes_seconds, settings.processes_rounds,
                load_args,
            )  # fmt: skip
        finally:
            for fleet in fleets.values():
                fleet.stop()
        first, second = spread
        row[second]["ratio"] = row[second]["rps"] / row[first]["rps"]
        rows["services"] = row
    return {"rows": rows, "lost": lost(rows)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failover_pair(ports: list[tuple[int, int]], handler: str) -> tuple[list[Server], list]:
    """Two servers on fixed ports (frontend, backend) and 2 worker.py connected to both."""
    servers = [server_on(front, back) for front, back in ports]
    connects = [arg for _, back in ports for arg in ("--connect", f"tcp://127.0.0.1:{back}")]
    command = [str(WORKER), *connects, "--heartbeat", FAILOVER_HEARTBEAT, "--handler", handler]
    try:
        return servers, start_workers([command] * 2, brokers=len(ports))
    except SystemExit:
        for target in servers:
            target.stop()
        raise


def server_on(front: int, back: int) -> Server:
    return server(
        "--bind", f"tcp://127.0.0.1:{front}", "--backend", f"tcp://127.0.0.1:{back}",
        "--worker-heartbeat", FAILOVER_HEARTBEAT, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def failover(settings: Settings) -> dict:
    """The kill run: two servers, two worker.py connected to both, 20 clients looping
    with both endpoints (client.request); one server SIGKILLed at a quarter of the run
    and restarted on its old ports at half of it. Then two servers sharing the load
    against one, the same two workers behind them."""
    rows: dict = {}
    seconds = settings.failover_seconds
    for work, handler in [
        ("zero work", "examples.echo:handle"),
        ("examples/cpu.py", "examples.cpu:handle"),
    ]:
        ports = [(free_port(), free_port()) for _ in range(2)]
        servers, workers = failover_pair(ports, handler)
        environment = {**os.environ, "FAILOVER_ANY_REPLY": "1" if "cpu" in handler else "0"}
        endpoints = [f"tcp://127.0.0.1:{front}" for front, _ in ports]
        command = [sys.executable, str(FAILOVER_CLIENT)]
        clients = [
            subprocess.Popen(
                [*command, f"k{n}", f"{seconds}s", str(FAILOVER_TIMEOUT), "3", *endpoints],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=environment,
            )  # fmt: skip
            for n in range(20)
        ]
        try:
            time.sleep(seconds / 4)  # a benchmark's schedule, not a test's wait
            servers[0].popen.kill()
            servers[0].popen.wait()
            time.sleep(seconds / 4)
            servers[0] = server_on(*ports[0])
            summaries = [json.loads(client.communicate(timeout=seconds + 60)[0].splitlines()[-1])
                         for client in clients]  # fmt: skip
        finally:
            for process in [*clients, *workers]:
                if process.poll() is None:
                    process.terminate()
                process.wait()
            for target in servers:
                target.stop()
        rows[work] = {
            key: sum(summary[key] for summary in summaries)
            for key in ("answered", "wrong", "lost", "retried")
        }
        rows[work]["worst_s"] = max(summary["worst_s"] for summary in summaries)
        rows[work]["lost"] += rows[work].pop("wrong")
        progress(f"kill run, {work}: {rows[work]}")
    rows["spread"] = spread_over_two(settings)
    return {"rows": rows, "lost": lost(rows)}


def spread_over_two(settings: Settings) -> dict:
    """Zero work, C = 100: one server, or two with the clients split between them, the
    same 2 worker.py behind (connected to both); req/s summed over the load generators."""
    ports = [(free_port(), free_port()) for _ in range(2)]
    servers, workers = failover_pair(ports, "examples.echo:handle")
    runs: dict[str, list[float]] = {"one server": [], "two servers": []}
    try:
        for _ in range(settings.processes_rounds):
            for label in runs:
                targets = servers[:1] if label == "one server" else servers
                clients = 100 // len(targets)
                loads = [
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(LOAD),
                            target.endpoint,
                            "rate",
                            str(clients),
                            str(settings.processes_seconds),
                            "--server-pid",
                            str(target.pid),
                            "--warmup",
                            str(settings.warmup),
                            "--epoll",
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )  # fmt: skip
                    for target in targets
                ]
                results = [json.loads(load.communicate(timeout=120)[0]) for load in loads]
                runs[label].append(sum(result["rps"] for result in results))
                progress(f"spread {label}: {runs[label][-1]:.0f} req/s")
    finally:
        for process in workers:
            process.terminate()
            process.wait()
        for target in servers:
            target.stop()
    row = {label: {"rps": median(values), "rounds": values} for label, values in runs.items()}
    row["two servers"]["ratio"] = row["two servers"]["rps"] / row["one server"]["rps"]
    return row


def kill_loop(settings: Settings) -> dict:
    """A load run on --processes 2 (CPU-bound handler, C = 20) while one worker is killed
    with SIGKILL every second: every request must still be answered."""
    with tempfile.TemporaryFile("w+") as log:
        target = server(
            "--processes", "2", "--handler", "examples.cpu:handle", workers=2, stderr=log
        )
        try:
            command = [
                sys.executable,
                str(LOAD),
                target.endpoint,
                "rate",
                "20",
                str(settings.kill_seconds),
                "--server-pid",
                str(target.pid),
            ]
            loader = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            killed = 0
            deadline = time.monotonic() + settings.kill_seconds
            while time.monotonic() + 1 < deadline:
                time.sleep(1)  # the fault's own schedule: one kill a second
                if victims := target.children():
                    os.kill(victims[killed % len(victims)], signal.SIGKILL)
                    killed += 1
            out, _ = loader.communicate(timeout=settings.kill_seconds + 60)
            result = json.loads(out)
        finally:
            target.stop()
        log.seek(0)
        text = log.read()
    summary = re.findall(r"since start: (\d+) answered, (\d+) error replies, (\d+) dropped", text)
    answered, errors, dropped = (int(n) for n in summary[-1]) if summary else (0, 0, 0)
    figures = {
        "killed": killed,
        "requests": result["requests"],
        "rps": result["rps"],
        "lost": result["lost"],
        "reruns": text.count("running it once more"),
        "worker_failed": text.count("that a worker died on before"),
        "answered": answered,
        "error_replies": errors,
        "dropped": dropped,
    }
    progress(f"kill loop: {figures}")
    return figures


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A checkout of git revision rev, for the run: its server.py, client.py, bench."""
    checkout = Path(tempfile.mkdtemp(prefix="bench-against-"))
    git = ["git", "-C", str(HERE.parent)]
    subprocess.run(
        [*git, "worktree", "add", "--detach", str(checkout), rev], check=True, capture_output=True
    )
    try:
        yield checkout
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(checkout)], capture_output=True)


def against(settings: Settings, rev: str) -> dict:
    """The same figures for this tree and for REV (a git worktree), interleaved: threads,
    inline and async at zero work, --processes 2 at zero work and CPU-bound, client.py.
    Figures REV's server.py cannot run (no --handler, no --processes) are left out."""
    with worktree(rev) as checkout:
        help_text = subprocess.run(
            [sys.executable, str(checkout / "server.py"), "--help"], capture_output=True, text=True
        ).stdout
        figures = [
            (
                "threads (--workers 4), zero work, C=100",
                ["--workers", "4", "--work-time", "0"],
                100,
            ),
            ("inline, zero work, C=100", ["--workers", "0", "--work-time", "0"], 100),
        ]
        if "--handler" in help_text:
            figures.append(
                ("async, zero work, C=100", ["--handler", "bench.handlers:world_async"], 100)
            )
        if "--processes" in help_text:
            figures += [
                ("--processes 2, zero work, C=100", ["--processes", "2", "--work-time", "0"], 100),
                (
                    "--processes 2, examples/cpu.py, C=20",
                    ["--processes", "2", "--handler", "examples.cpu:handle"],
                    20,
                ),
            ]
        if "--no-worker-timeout" in help_text:  # a broker for MDP clients too
            figures += [
                (
                    "--processes 2, zero work, C=100, MDP clients",
                    ["--processes", "2", "--work-time", "0"],
                    100,
                ),
                (
                    "--processes 2, examples/cpu.py, C=20, MDP clients",
                    ["--processes", "2", "--handler", "examples.cpu:handle"],
                    20,
                ),
            ]
        rows = {}
        for label, args, clients in figures:
            workers = 2 if "--processes" in args else 0
            seconds, rounds = settings.seconds, settings.rounds
            if workers:
                seconds = settings.cpu_seconds if clients == 20 else settings.processes_seconds
                rounds = settings.processes_rounds
            targets = {
                "this": Server(SERVER, "--bind", EPHEMERAL, "--quiet", *args, workers=workers),
                rev: Server(
                    checkout / "server.py", "--bind", EPHEMERAL, "--quiet", *args, workers=workers
                ),
            }
            # MDP clients speak majortomo's dialect, the one every peer broker knows.
            mdp = ["--epoll", "--protocol", "majortomo"] if label.endswith("MDP clients") else []
            try:
                rows[label] = interleaved(
                    settings, targets, clients, seconds, rounds, dict.fromkeys(targets, mdp)
                )
            finally:
                for target in targets.values():
                    target.stop()
            rows[label]["ratio"] = rows[label]["this"]["rps"] / rows[label][rev]["rps"]
        rows["client"] = client_startup(settings, {"this": CLIENT, rev: checkout / "client.py"})
        rows["client"]["ratio"] = rows["client"][rev]["ms"] / rows["client"]["this"]["ms"]
    return {"rev": rev, "rows": rows, "lost": lost(rows)}


def server_counts(target: Server, log: Path) -> dict:
    """The server's own counts, from the summary that SIGUSR1 has it log."""
    seen = log.read_text().count("since start:")
    os.kill(target.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while log.read_text().count("since start:") <= seen:
        if time.monotonic() > deadline:
            raise SystemExit("bench: the server logged no summary on SIGUSR1")
        time.sleep(0.05)
    match = SUMMARY_COUNTS.findall(log.read_text())[-1]
    waiting, running, answered, errors, dropped, expired = (int(n or 0) for n in match)
    return {"handler_calls": answered + errors + dropped, "expired": expired, "left": waiting}


def overload_run(
    script: Path, args: list[str], seconds: float, rate: float = OVERLOAD_RATE
) -> dict:
    """One overload run: callers at rate a second for seconds on a fresh server, then its
    counts; the server is stopped at once (SIGQUIT), whatever is left in its queue."""
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        workers = 4 if "--processes" in args else 0
        target = Server(script, "--bind", EPHEMERAL, "--quiet", *args, workers=workers, stderr=log)
        try:
            command = [sys.executable, str(OVERLOAD), target.endpoint, f"{rate:g}"]
            result = subprocess.run(
                [*command, str(seconds)], capture_output=True, text=True, timeout=seconds + 60
            )
            if result.returncode != 0:
                raise SystemExit(f"bench: overload.py failed: {result.stderr.strip()}")
            callers = json.loads(result.stdout)
            counts = server_counts(target, Path(log.name))
        finally:
            if target.popen.poll() is None:
                target.popen.send_signal(signal.SIGQUIT)
            target.stop()
    capacity = OVERLOAD_CAPACITY * callers["elapsed"]
    wasted = counts["handler_calls"] - callers["answered"]
    return {
        **callers,
        **counts,
        "answered_per_s": callers["answered"] / callers["elapsed"],
        "goodput": callers["answered"] / capacity,
        "wasted": wasted / counts["handler_calls"] if counts["handler_calls"] else 0.0,
    }


def overload(settings: Settings, revs: list[str]) -> dict:
    """Twice the capacity, by callers with a budget (OVERLOAD_RATE), on this tree and on
    each REV, in interleaved rounds: callers answered in time against capacity, and the
    handler calls whose reply nobody took. Then the sweep over offered loads."""
    with contextlib.ExitStack() as stack:
        scripts = {"this": SERVER}
        for rev in revs:
            scripts[rev] = stack.enter_context(worktree(rev)) / "server.py"
        rows = {
            mode: overload_rounds(settings, scripts, mode, args)
            for mode, args in OVERLOAD_MODES.items()
        }
        started = time.monotonic()
        sweep = overload_sweep(settings, scripts)
        progress(f"overload sweep took {time.monotonic() - started:.0f} s")
    return {"revs": revs, "rows": rows, "seconds": settings.overload_seconds, "sweep": sweep}


def overload_rounds(
    settings: Settings, scripts: dict[str, Path], mode: str, args: list[str]
) -> dict:
    """settings.overload_rounds of overload runs of each script in mode, interleaved: medians."""
    runs: dict[str, list[dict]] = {name: [] for name in scripts}
    for round_ in range(settings.overload_rounds):
        for name, script in scripts.items():
            run = overload_run(script, args, settings.overload_seconds)
            runs[name].append(run)
            progress(
                f"overload {mode} round {round_ + 1}/{settings.overload_rounds} {name}: "
                f"{run['answered']} of {run['callers']} callers answered, "
                f"{run['wasted']:.0%} of {run['handler_calls']} handler calls wasted"
            )
    return {
        name: {
            key: median([run[key] for run in results])
            for key in ("callers", "answered", "goodput", "wasted", "handler_calls")
            + ("expired", "left", "p50_ms", "lag_ms")
        }
        | {
            "goodput_rounds": [run["goodput"] for run in results],
            "wasted_rounds": [run["wasted"] for run in results],
        }
        for name, results in runs.items()
    }


def overload_sweep(settings: Settings, scripts: dict[str, Path]) -> dict:
    """Offered load against goodput and waste, for the chart: SWEEP_MODE only, one run of
    settings.sweep_seconds a load and script, the scripts interleaved at each load."""
    points: dict[str, list[dict]] = {name: [] for name in scripts}
    for offered in settings.sweep_loads:
        rate = offered * OVERLOAD_CAPACITY
        for name, script in scripts.items():
            run = overload_run(script, OVERLOAD_MODES[SWEEP_MODE], settings.sweep_seconds, rate)
            keys = ("callers", "answered", "answered_per_s", "goodput", "handler_calls", "wasted")
            points[name].append({"offered": offered, "rate": rate} | {k: run[k] for k in keys})
            progress(
                f"overload sweep {offered:g}x capacity {name}: {run['answered_per_s']:.0f} "
                f"answered/s, {run['wasted']:.0%} of {run['handler_calls']} handler calls wasted"
            )
    return {
        "mode": SWEEP_MODE,
        "capacity": OVERLOAD_CAPACITY,
        "seconds": settings.sweep_seconds,
        "points": points,
    }


def deadline_cost(settings: Settings) -> dict:
    """Inline, zero work, C = 100: requests framed as client.py's with a deadline in the
    call frame, against the same framing without one (an 8-byte token), interleaved in
    ABBA order, on one server process (so that nothing but the framing differs)."""
    target = Server(SERVER, "--bind", EPHEMERAL, "--quiet", "--workers", "0", "--work-time", "0")
    framing = {"without": ["--protocol", "token"], "with": ["--protocol", "deadline"]}
    try:
        rows = interleaved(
            settings,
            dict.fromkeys(framing, target),
            100,
            settings.processes_seconds,
            settings.deadline_rounds,
            framing,
            abba=True,
        )
    finally:
        target.stop()
    rows["cpu_ratio"] = rows["with"]["cpu_us_per_request"] / rows["without"]["cpu_us_per_request"]
    rows["rps_ratio"] = rows["with"]["rps"] / rows["without"]["rps"]
    return rows


class Scraper:
    """GETs url every SCRAPE_INTERVAL seconds on a thread of its own, from entering to
    leaving the with block, as Prometheus would: counts the scrapes, keeps what went wrong
    with those that were not HTTP 200, and the size of the last body."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self.errors: list[str] = []
        self.size = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="scraper", daemon=True)
        # No proxy from the environment: the server is on loopback.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def run(self) -> None:
        due = time.monotonic()
        while not self.stopped.is_set():
            self.scrape()
            due += SCRAPE_INTERVAL
            self.stopped.wait(max(due - time.monotonic(), 0))

    def scrape(self) -> None:
        self.scrapes += 1
        try:
            with self.opener.open(self.url, timeout=5) as reply:
                self.size = len(reply.read())
                status = reply.status
        except OSError as error:  # urllib's HTTPError and URLError among them
            self.errors.append(str(error))
            return
        if status != 200:
            self.errors.append(f"HTTP {status}")

    def figures(self) -> dict:
        """Scrapes, the failed ones as lost (a reply that did not come), the last size."""
        return {
            "count": self.scrapes,
            "lost": len(self.errors),
            "errors": self.errors[:5],
            "bytes": self.size,
        }


def metrics_cost(settings: Settings) -> dict:
    """Zero work, C = 100, each of METRICS_MODES: a server without --metrics against one
    with it, whose /metrics a Scraper GETs every second all along, in interleaved ABBA
    rounds: req/s and the server process's CPU per request (with --processes, the
    broker process's own, as everywhere in this benchmark: not its workers')."""
    rows = {}
    for mode, (args, _) in METRICS_MODES.items():
        workers = 2 if "--processes" in args else 0
        with contextlib.ExitStack() as stack:
            targets = {}
            for name, extra in (("off", []), ("on", METRICS_FLAG)):
                targets[name] = server(*args, *extra, workers=workers)
                stack.callback(targets[name].stop)
            scraper = stack.enter_context(Scraper(str(targets["on"].metrics_url)))
            row = interleaved(
                settings, targets, 100, settings.processes_seconds, settings.metrics_rounds,
                abba=True,
            )  # fmt: skip
        row["ratio"] = row["on"]["rps"] / row["off"]["rps"]
        row["cpu_ratio"] = row["on"]["cpu_us_per_request"] / row["off"]["cpu_us_per_request"]
        row["scrapes"] = scraper.figures()
        progress(f"metrics {mode}: on / off {row['ratio']:.3f}, scrapes {row['scrapes']}")
        rows[mode] = row
    return {"rows": rows}


# Start-up is timed as users run programs: their Python caches compiled modules (and pip
# compiles an installed package's). A PYTHONDONTWRITEBYTECODE in this environment would
# have every run compile zmq_hello's modules again, which no user pays.
USER_ENVIRONMENT = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    code = subprocess.run(command, capture_output=True, timeout=60, env=USER_ENVIRONMENT).returncode
    return time.perf_counter() - start, code


def client_startup(settings: Settings, clients: dict[str, Path] | None = None) -> dict:
    """client.py per invocation against `python -c "import zmq"`, interleaved; with
    clients (name -> script), each of them in turn, and the ratio of the first."""
    clients = clients or {"client": CLIENT}
    target = server("--workers", "0", "--work-time", "0")
    times: dict[str, list[float]] = {name: [] for name in [*clients, "import zmq"]}
    failed = 0
    try:
        for script in clients.values():  # once untimed, for the compiled modules' cache
            timed([sys.executable, str(script), "1", "--connect", target.endpoint])
        for _ in range(settings.client_runs):
            for name, script in clients.items():
                seconds, code = timed(
                    [sys.executable, str(script), "1", "--connect", target.endpoint]
                )
                times[name].append(seconds)
                failed += code != 0
            times["import zmq"].append(timed([sys.executable, "-c", "import zmq"])[0])
    finally:
        target.stop()
    medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
    spread = {name: (1000 * min(values), 1000 * max(values)) for name, values in times.items()}
    progress(f"{', '.join(f'{name} {ms:.1f} ms' for name, ms in medians.items())}; failed {failed}")
    first = next(iter(clients))
    return {
        **{name: {"ms": ms, "spread_ms": spread[name]} for name, ms in medians.items()},
        "client_ms": medians[first],
        "import_zmq_ms": medians["import zmq"],
        "ratio": medians[first] / medians["import zmq"],
        "lost": failed,
    }


def clients_load(target: Server, *args: str) -> dict:
    """One measurement by a clients.py process against target: its JSON."""
    command = [sys.executable, str(CLIENTS), target.endpoint, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"bench: clients.py failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def medians(results: list[dict], key: str) -> dict:
    """The median of key over rounds, with the rounds, CPU per request and lost."""
    return {
        key: median([result[key] for result in results]),
        "rounds": [result[key] for result in results],
        "cpu_us_per_request": median([result["cpu_us_per_request"] for result in results]),
        "lost": sum(result["lost"] for result in results),
    }


def client_library(settings: Settings) -> dict:
    """The client library (issue 22) against the bare loops it wraps, in interleaved
    rounds, a clients.py process per measurement: Client.request in a loop on one thread
    (and client.py's legacy request(), for context) against a bare DEALER, and AsyncClient
    with 100 requests in flight against a bare zmq.asyncio DEALER with futures by token,
    inline at zero work; one Client shared by 16 threads, each sending K requests of 0.1 s
    on --workers 16, against the ideal K x 0.1 s; a burst of AsyncClient requests to an
    async handler awaiting 0.5 s, against 0.5 s plus the same burst at zero work."""
    rounds, seconds, warmup = settings.clients_rounds, settings.clients_seconds, settings.warmup
    figures: dict = {}
    target = server("--workers", "0", "--work-time", "0")
    try:
        for figure, kinds, args in [
            ("loop", ("bare", "client", "legacy"), []),
            ("inflight", ("bare", "client"), ["100"]),
        ]:
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for round_ in range(rounds):
                for kind in kinds:
                    result = clients_load(
                        target, figure, kind, *args, str(seconds), "--warmup", str(warmup)
                    )
                    runs[kind].append(result)
                    progress(
                        f"clients {figure} round {round_ + 1}/{rounds} {kind}: "
                        f"{result['rps']:.0f} req/s, {result['cpu_us_per_request']:.1f} us CPU "
                        f"a request, lost {result['lost']}"
                    )
            rows = {kind: medians(results, "rps") for kind, results in runs.items()}
            for row in rows.values():
                row["ratio"] = row["rps"] / rows["bare"]["rps"]
                row["cpu_ratio"] = row["cpu_us_per_request"] / rows["bare"]["cpu_us_per_request"]
            figures[figure] = rows
    finally:
        target.stop()

    work, threads, each = 0.1, 16, settings.clients_requests
    target = server("--workers", str(threads), "--work-time", str(work))
    try:
        results = []
        for round_ in range(settings.clients_wall_rounds):
            results.append(clients_load(target, "threads", str(threads), str(each)))
            progress(
                f"clients {threads} threads x {each} round {round_ + 1}/"
                f"{settings.clients_wall_rounds}: {results[-1]['seconds']:.3f} s, "
                f"lost {results[-1]['lost']}"
            )
    finally:
        target.stop()
    row = figures["threads"] = medians(results, "seconds")
    row.update(threads=threads, requests=each, work=work, ideal=each * work)
    row["ratio"] = row["seconds"] / row["ideal"]

    n, work = settings.burst_clients, 0.5
    targets = {
        "zero": server("--handler", "bench.handlers:world_async"),
        "slow": server("--handler", "examples.slow_async:handle"),
    }
    runs = {name: [] for name in targets}
    try:
        for round_ in range(settings.clients_wall_rounds):
            for name, target in targets.items():
                runs[name].append(clients_load(target, "burst", str(n)))
                progress(
                    f"clients burst of {n} round {round_ + 1}/{settings.clients_wall_rounds} "
                    f"{name}: {runs[name][-1]['seconds']:.3f} s, lost {runs[name][-1]['lost']}"
                )
    finally:
        for target in targets.values():
            target.stop()
    burst_rows = {name: medians(results, "seconds") for name, results in runs.items()}
    ideal = work + burst_rows["zero"]["seconds"]
    figures["burst"] = {
        **burst_rows,
        "clients": n,
        "work": work,
        "ideal": ideal,
        "ratio": burst_rows["slow"]["seconds"] / ideal,
    }
    return figures


def memory(settings: Settings) -> dict:
    """Server RSS idle and with many connected idle clients, baseline and server.py."""
    added: dict[str, list[int]] = {"baseline": [], "server": []}
    rss: dict[str, list[tuple[int, int]]] = {"baseline": [], "server": []}
    lost = 0
    for _ in range(settings.rounds):
        for name, start in (("baseline", baseline), ("server", lambda: server("--work-time", "0"))):
            target = start()
            try:
                idle = target.rss_kib()
                holder = subprocess.Popen(
                    [
                        sys.executable,
                        str(LOAD),
                        target.endpoint,
                        "idle",
                        str(settings.idle_clients),
                        "60",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                ready = json.loads(holder.stdout.readline())
                lost += ready["lost"]
                busy = target.rss_kib()
                holder.stdin.close()
                holder.wait(timeout=60)
            finally:
                target.stop()
            added[name].append(busy - idle)
            rss[name].append((idle, busy))
            progress(f"memory {name}: idle {idle} KiB, {settings.idle_clients} clients {busy} KiB")
    per_client = {name: statistics.median(values) for name, values in added.items()}
    return {
        "clients": settings.idle_clients,
        "baseline_idle_kib": median([idle for idle, _ in rss["baseline"]]),
        "server_idle_kib": median([idle for idle, _ in rss["server"]]),
        "baseline_added_kib": per_client["baseline"],
        "server_added_kib": per_client["server"],
        "ratio": per_client["server"] / per_client["baseline"],
        "lost": lost,
    }


def lost(figures: dict) -> int:
    """Lost or timed-out replies in a phase's figures, however deeply they are nested."""
    rows = [value for value in figures.values() if isinstance(value, dict)]
    return figures.get("lost", 0) + sum(lost(row) for row in rows)


def verdict(value: float | None, target: str = "", limit: float | None = None) -> str:
    """A ratio against its target: floors for req/s targets, ceilings for the rest."""
    limit = TARGETS[target] if limit is None else limit
    if value is None:
        return "n/a"
    at_least = target.endswith("_rps")
    met = value >= limit if at_least else value <= limit
    sign = ">=" if at_least else "<="
    return f"{value:.3f}x (target {sign} {limit:.2f}: {'met' if met else 'NOT met'})"


def spread(row: dict) -> str:
    """A median req/s with its lowest and highest round: '41,200 [38,100-45,900]'."""
    return f"{row['rps']:,.0f} [{min(row['rounds']):,.0f}-{max(row['rounds']):,.0f}]"


def wall_spread(row: dict) -> str:
    """A median wall time with its lowest and highest round: '1.012 s [1.004-1.031]'."""
    return f"{row['seconds']:.3f} s [{min(row['rounds']):.3f}-{max(row['rounds']):.3f}]"


def overload_lines(settings: Settings, overloaded: dict) -> list[str]:
    seconds, rounds = overloaded["seconds"], settings.overload_rounds
    lines = [
        "",
        f"Overload: capacity {OVERLOAD_CAPACITY} requests/s (a 50 ms handler, 4 at a time); "
        f"{OVERLOAD_RATE} new callers/s for {seconds:g} s, each on its own connection, waiting "
        f"0.5 s a try, 3 tries; medians of {rounds} interleaved rounds [lowest - highest]. "
        "Answered: callers that got their reply, a second from the first caller to the last "
        "done. Wasted: handler calls whose reply nobody took. Left: requests still waiting "
        "at the end",
        f"{'mode':<15}{'server':<10}{'callers':>8}{'answered':>9}{'a second / capacity':>20}"
        f"{'handler calls':>14}{'wasted':>19}{'expired':>8}{'left':>6}{'p50 ms':>8}",
    ]
    for mode, sides in overloaded["rows"].items():
        for name, row in sides.items():
            goodput = row["goodput_rounds"]
            wasted = row["wasted_rounds"]
            lines.append(
                f"{mode:<15}{name:<10}{row['callers']:>8.0f}{row['answered']:>9.0f}"
                f"{row['goodput']:>8.2f} [{min(goodput):.2f}-{max(goodput):.2f}]"
                f"{row['handler_calls']:>14.0f}"
                f"{row['wasted']:>7.0%} [{min(wasted):.0%}-{max(wasted):.0%}]"
                f"{row['expired']:>8.0f}{row['left']:>6.0f}{row['p50_ms'] or 0:>8.0f}"
            )
    return lines


def sweep_lines(sweep: dict) -> list[str]:
    lines = [
        "",
        f"Overload sweep, {sweep['mode']} only: callers for {sweep['seconds']:g} s at each "
        "offered load, as above otherwise; one run each, the servers interleaved at each load "
        "(shorter runs than above: a server without deadlines answers in time until its "
        "queue outgrows the callers' budget, and those first seconds weigh more here)",
        f"{'offered':>9}{'callers/s':>10}  {'server':<10}{'callers':>8}{'answered':>9}"
        f"{'answered/s':>11}{'/ capacity':>11}{'handler calls':>14}{'wasted':>8}",
    ]
    for n in range(len(next(iter(sweep["points"].values())))):
        for name, points in sweep["points"].items():
            point = points[n]
            lines.append(
                f"{point['offered']:>8g}x{point['rate']:>10.0f}  {name:<10}{point['callers']:>8}"
                f"{point['answered']:>9}{point['answered_per_s']:>11.1f}{point['goodput']:>11.2f}"
                f"{point['handler_calls']:>14}{point['wasted']:>8.0%}"
            )
    return lines


def metrics_lines(settings: Settings, phase: dict) -> list[str]:
    lines = [
        "",
        f"Metrics: zero work, C=100, a server without --metrics (off) against one with "
        f"{' '.join(METRICS_FLAG)} (on) whose /metrics is fetched every {SCRAPE_INTERVAL:g} s "
        f"all along; medians of {settings.metrics_rounds} interleaved rounds (ABBA) of "
        f"{settings.processes_seconds:g} s [lowest - highest]; CPU: the server process's own",
        f"{'mode':<15}{'metrics':<9}{'req/s [range]':>24}{'ratio':>7}{'CPU us/req':>12}"
        f"{'ratio':>7}{'lost':>6}",
    ]
    for mode, row in phase["rows"].items():
        for name in ("off", "on"):
            side = row[name]
            ratios = f"{row['ratio']:>7.3f}" if name == "on" else " " * 7
            cpu_ratio = f"{row['cpu_ratio']:>7.3f}" if name == "on" else " " * 7
            lines.append(
                f"{mode:<15}{name:<9}{spread(side):>24}{ratios}"
                f"{side['cpu_us_per_request']:>12.2f}{cpu_ratio}{side['lost']:>6}"
            )
    for mode, row in phase["rows"].items():
        scrapes = row["scrapes"]
        failed = f"{scrapes['lost']} not HTTP 200: {scrapes['errors']}" if scrapes["lost"] else ""
        lines.append(
            f"  {mode}: {scrapes['count']} scrapes of /metrics, "
            f"{failed or 'every one HTTP 200'}; the last {scrapes['bytes']:,} bytes"
        )
    return lines


def report(settings: Settings, figures: dict) -> list[tuple[str, str]]:
    """The report as sections, (phase, text): each section ends with the table of the phase
    that has charts (charts.py), to go right after it; the last one's phase is ""."""
    lines: list[str] = []
    targets: list[str] = []
    cuts: list[tuple[str, int]] = []  # (phase, where its charted table ends in lines)
    if rows := figures.get("throughput"):
        lines += [
            f"Throughput: zero work, --quiet; medians of {settings.rounds} interleaved rounds of "
            f"{settings.seconds:g} s; ratios to the baseline's median at the same C",
            f"{'mode':<9}{'C':>5}{'req/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'CPU us/req':>12}{'ratio':>8}{'lost':>6}",
        ]
        for row in rows.values():
            cpu = f"{row['cpu_us_per_request']:.1f}" if row["cpu_us_per_request"] else "n/a"
            cpu_ratio = f"{row['cpu_ratio']:.2f}" if row["cpu_ratio"] else "n/a"
            lines.append(
                f"{row['mode']:<9}{row['clients']:>5}{row['rps']:>10.0f}{row['rps_ratio']:>8.2f}"
                f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{cpu:>12}{cpu_ratio:>8}{row['lost']:>6}"
            )
        cuts.append(("throughput", len(lines)))
        c = max(settings.concurrency)
        inline, workers, async_ = (rows[f"{mode} C={c}"] for mode in ("inline", "workers", "async"))
        targets += [
            f"inline C={c} req/s / baseline: {verdict(inline['rps_ratio'], 'inline_rps')}",
            f"inline C={c} CPU per req / baseline: {verdict(inline['cpu_ratio'], 'inline_cpu')}",
            f"workers C={c} req/s / baseline: {verdict(workers['rps_ratio'], 'workers_rps')}",
            f"async C={c} req/s / baseline: {verdict(async_['rps_ratio'], 'async_rps')}",
        ]
    if rows := figures.get("slow_work"):
        lines += [
            "",
            f"Slow work: {settings.slow_clients} clients x {settings.slow_work:g} s each",
            f"{'workers':>7}{'ideal s':>10}{'wall s':>10}{'ratio':>8}{'lost':>6}",
        ]
        for workers_count, row in rows.items():
            lines.append(
                f"{workers_count:>7}{row['ideal']:>10.3f}{row['seconds']:>10.3f}"
                f"{row['ratio']:>8.3f}{row['lost']:>6}"
            )
            limit = TARGETS["slow_work"].get(workers_count, 1.03)
            targets.append(
                f"slow work W={workers_count} wall / ideal: {verdict(row['ratio'], limit=limit)}"
            )
    if row := figures.get("burst"):
        lines += [
            "",
            f"Burst: {row['clients']} clients at once, connected beforehand; medians of "
            f"{settings.burst_rounds} rounds",
            f"  baseline, zero work:                      {row['baseline_s']:.3f} s",
            f"  async handler awaiting {row['work']:g} s, default flags: {row['async_s']:.3f} s "
            f"(ideal {row['work']:g} + {row['baseline_s']:.3f} = {row['ideal_s']:.3f} s); "
            f"server RSS with all in flight {row['async_peak_rss_kib']} KiB",
        ]
        if "threads_s" in row:
            lines.append(
                f"  the same on thread workers (16, default): {row['threads_s']:.3f} s; "
                f"server RSS {row['threads_peak_rss_kib']} KiB"
            )
        targets.append(f"async burst wall / ideal: {verdict(row['ratio'], 'burst')}")
    if rows := figures.get("processes"):
        zero, bound = rows["zero"], rows["cpu"]
        broker_us = bound["processes"]["cpu_us_per_request"]
        per_worker_ms = 2 * 1000 / bound["processes"]["rps"]
        lines += [
            "",
            f"Worker processes: medians of {settings.processes_rounds} interleaved rounds",
            f"{'what':<44}{'req/s':>9}{'ratio':>8}{'server CPU us/req':>19}{'lost':>6}",
        ]
        for label, row, base in (
            ("lbbroker, 2 REQ workers, zero work, C=100", zero["lbbroker"], zero["lbbroker"]),
            ("lbbroker, 2 worker.py (MDP), zero work", zero["lbbroker_mdp"], zero["lbbroker"]),
            ("--processes 2, zero work, C=100", zero["processes"], zero["lbbroker"]),
            ("16 threads, examples/cpu.py, C=20", bound["threads"], bound["threads"]),
            ("--processes 2, examples/cpu.py, C=20", bound["processes"], bound["threads"]),
        ):
            lines.append(
                f"{label:<44}{row['rps']:>9.0f}{row['rps'] / base['rps']:>8.2f}"
                f"{row['cpu_us_per_request']:>19.1f}{row['lost']:>6}"
            )
        lines += [
            f"  examples/cpu.py alone: {bound['handler_ms']:.2f} ms a request; through a "
            f"worker process: {per_worker_ms:.2f} ms of each worker's time a request",
            f"  on paper: the server spends {broker_us:.0f} us of CPU a request, so one server "
            f"keeps up to about {bound['handler_ms'] * 1000 / broker_us:.0f} cores (local or "
            f"remote) busy with this handler, {1e6 / broker_us:.0f} req/s, before it is the "
            "bottleneck; N cores give about N / "
            f"{per_worker_ms:.2f} ms = N x {1000 / per_worker_ms:.0f} req/s below that",
        ]
        cuts.append(("processes", len(lines)))
        zero_ratio = zero["processes"]["ratio"]
        targets.append(
            "--processes 2 zero work / lbbroker with the same worker.py processes: "
            f"{verdict(zero_ratio, 'processes_rps')}"
        )
        req_ratio = zero["processes"]["ratio_req"]
        targets.append(
            "--processes 2 zero work / lbbroker with the guide's REQ workers (not MDP, so "
            f"MDP's own cost is in the gap): {verdict(req_ratio, 'processes_rps')}"
        )
        targets.append(
            f"--processes 2 CPU-bound / threads: {verdict(bound['processes']['ratio'], 'cpu_rps')}"
        )
    if phase := figures.get("majordomo"):
        lines += [
            "",
            "Majordomo brokers, 2 worker processes each, against majortomo's broker (PyPI) with "
            "majortomo's workers (majortomo) and with worker.py (majortomo+w), logging warnings "
            f"only; medians of {settings.processes_rounds} interleaved rounds, [lowest-highest]; "
            "server.py --processes 2 with its plain clients (plain) and with majortomo's "
            "MDP/0.2 client framing (mdp)",
            f"{'work, C':<24}{'target':<13}{'req/s [range]':>24}{'x majortomo':>13}"
            f"{'x +w':>7}{'CPU us/req':>12}{'lost':>6}",
        ]
        for label, row in phase["rows"].items():
            if label == "services":
                continue
            cpu_bound = not label.startswith("zero")
            for name, figure in row.items():
                ratio = f"{figure['ratio']:.2f}" if "ratio" in figure else ""
                shared = f"{figure['ratio_shared']:.2f}" if "ratio_shared" in figure else ""
                cpu = figure["cpu_us_per_request"]
                lines.append(
                    f"{label:<24}{name:<13}{spread(figure):>24}{ratio:>13}{shared:>7}"
                    f"{cpu or 0:>12.1f}{figure['lost']:>6}"
                )
                if ratio:
                    goal = "majortomo_cpu_rps" if cpu_bound else "majortomo_rps"
                    targets.append(
                        f"majordomo {label} {name} / majortomo: {verdict(figure['ratio'], goal)}"
                    )
        cuts.append(("majordomo", len(lines)))
        services = phase["rows"]["services"]
        lines += ["", "Services, zero work, C=100, MDP/0.2 clients spread evenly over the services"]
        for name, figure in services.items():
            ratio = f"  x{figure['ratio']:.2f}" if "ratio" in figure else ""
            lines.append(f"  {name:<30}{spread(figure):>24} req/s{ratio}")
    if phase := figures.get("failover"):
        lines += [
            "",
            f"Kill run: {settings.failover_seconds:g} s, 20 clients (client.request, both "
            f"endpoints, --timeout {FAILOVER_TIMEOUT:g}, --retries 3), two servers, 2 worker.py "
            "on both; server 1 SIGKILLed at 1/4 of the run, restarted at 1/2",
        ]
        for work in ("zero work", "examples/cpu.py"):
            row = phase["rows"][work]
            lines.append(
                f"  {work:<18}{row['answered']:>8} answered{row['lost']:>5} lost"
                f"{row['retried']:>6} answered by a retry; worst wait {row['worst_s']:.2f} s"
            )
            targets += [
                f"kill run {work}: lost {row['lost']} (target 0)",
                f"kill run {work} worst wait: {row['worst_s']:.2f} s "
                f"(target <= {TARGETS['failover_wait']:g} s: "
                f"{'met' if row['worst_s'] <= TARGETS['failover_wait'] else 'NOT met'})",
            ]
        spread_row = phase["rows"]["spread"]
        lines.append("  zero work, C=100, the same 2 workers behind: req/s summed")
        for label, figure in spread_row.items():
            ratio = f"  x{figure['ratio']:.2f}" if "ratio" in figure else ""
            low, high = min(figure["rounds"]), max(figure["rounds"])
            lines.append(f"    {label:<14}{figure['rps']:>10,.0f} [{low:,.0f}-{high:,.0f}]{ratio}")
    if row := figures.get("kill"):
        lines += [
            "",
            f"Kill loop: {row['requests']} requests in {settings.kill_seconds:g} s on "
            "--processes 2 (examples/cpu.py, C=20), a worker killed with SIGKILL every second "
            f"({row['killed']} kills): {row['lost']} lost, {row['reruns']} requests re-run, "
            f"{row['worker_failed']} failed twice (ERROR: worker failed); server: "
            f"{row['answered']} answered, {row['error_replies']} error replies, "
            f"{row['dropped']} dropped",
        ]
    if client := figures.get("client"):
        lines += [
            "",
            f"client.py per invocation, median of {settings.client_runs}: "
            f"{client['client_ms']:.1f} ms; python -c 'import zmq': "
            f"{client['import_zmq_ms']:.1f} ms; failed runs: {client['lost']}",
        ]
        targets.append(f"client.py / import zmq: {verdict(client['ratio'], 'client')}")
    if phase := figures.get("clients"):
        lines += [
            "",
            "Client library (issue 22), a bench/clients.py process per measurement; inline "
            f"server, zero work; medians of {settings.clients_rounds} interleaved rounds of "
            f"{settings.clients_seconds:g} s [lowest-highest]; CPU: the client process's own",
            f"{'what':<42}{'req/s [range]':>24}{'ratio':>7}{'client CPU us/req':>19}"
            f"{'ratio':>7}{'lost':>6}",
        ]
        for figure, kind, label in (
            ("loop", "bare", "bare DEALER: send, poll, recv, token"),
            ("loop", "client", "Client.request, 1 thread"),
            ("loop", "legacy", "client.request() (legacy), 1 thread"),
            ("inflight", "bare", "bare zmq.asyncio DEALER, 100 in flight"),
            ("inflight", "client", "AsyncClient, 100 in flight"),
        ):
            row = phase[figure][kind]
            lines.append(
                f"{label:<42}{spread(row):>24}{row['ratio']:>7.2f}"
                f"{row['cpu_us_per_request']:>19.1f}{row['cpu_ratio']:>7.2f}{row['lost']:>6}"
            )
        threads, burst_row = phase["threads"], phase["burst"]
        lines += [
            f"  one Client, {threads['threads']} threads x {threads['requests']} requests one "
            f"after another, {threads['work']:g} s work on --workers {threads['threads']}: "
            f"{wall_spread(threads)} (ideal {threads['ideal']:.3f} s); "
            f"client CPU {threads['cpu_us_per_request']:.0f} us/req; lost {threads['lost']}",
            f"  {burst_row['clients']} requests at once on one AsyncClient, medians of "
            f"{settings.clients_wall_rounds} interleaved rounds: zero work "
            f"{wall_spread(burst_row['zero'])}; async handler awaiting {burst_row['work']:g} s "
            f"{wall_spread(burst_row['slow'])} (ideal {burst_row['work']:g} + "
            f"{burst_row['zero']['seconds']:.3f} = {burst_row['ideal']:.3f} s); lost "
            f"{burst_row['zero']['lost'] + burst_row['slow']['lost']}",
        ]
        targets += [
            "Client.request loop req/s / bare DEALER: "
            f"{verdict(phase['loop']['client']['ratio'], 'client_rps')}",
            "AsyncClient 100 in flight req/s / bare zmq.asyncio DEALER: "
            f"{verdict(phase['inflight']['client']['ratio'], 'async_client_rps')}",
            "Client shared by 16 threads wall / ideal: "
            f"{verdict(threads['ratio'], 'client_threads')}",
            f"AsyncClient burst wall / ideal: {verdict(burst_row['ratio'], 'client_burst')}",
        ]
    if mem := figures.get("memory"):
        lines += [
            "",
            f"Server RSS, idle -> with {mem['clients']} idle clients (medians): "
            f"baseline {mem['baseline_idle_kib']} KiB +{mem['baseline_added_kib']} KiB; "
            f"server.py {mem['server_idle_kib']} KiB +{mem['server_added_kib']} KiB",
        ]
        targets.append(f"memory added per client / baseline: {verdict(mem['ratio'], 'memory')}")
    if row := figures.get("deadline"):
        lines += [
            "",
            f"Deadlines: inline, zero work, C=100, client.py's framing with a deadline against "
            f"without; medians of {settings.deadline_rounds} interleaved rounds [lowest - highest]",
            f"{'framing':<40}{'req/s':>24}{'CPU us/req':>12}",
        ]
        for name in ("without", "with"):
            label = f"{name} a deadline"
            lines.append(
                f"{label:<40}{spread(row[name]):>24}{row[name]['cpu_us_per_request']:>12.2f}"
            )
        targets.append(
            f"deadline CPU per request, with / without: {verdict(row['cpu_ratio'], 'deadline_cpu')}"
        )
    if phase := figures.get("metrics"):
        lines += metrics_lines(settings, phase)
        for mode, row in phase["rows"].items():
            goal = METRICS_MODES[mode][1]
            targets.append(f"metrics {mode} req/s, on / off: {verdict(row['ratio'], goal)}")
    if overloaded := figures.get("overload"):
        lines += overload_lines(settings, overloaded)
        lines += sweep_lines(overloaded["sweep"])
        cuts.append(("overload", len(lines)))
        for mode, sides in overloaded["rows"].items():
            this = sides["this"]
            targets.append(
                f"overload {mode}, callers answered a second / capacity: "
                f"{verdict(this['goodput'], 'overload_rps')}"
            )
            wasted = verdict(this["wasted"], "overload_wasted")
            targets.append(f"overload {mode}, handler calls wasted: {wasted}")
    for side in figures.get("against", []):
        rev = side["rev"]
        lines += [
            "",
            f"Against {rev} (a git worktree), side by side: medians of {settings.rounds} "
            f"interleaved rounds ({settings.processes_rounds} for worker processes) "
            "[lowest - highest]",
            f"{'figure':<52}{'this req/s':>24}{rev + ' req/s':>24}{'ratio':>7}{'CPU ratio':>10}",
        ]
        for label, row in side["rows"].items():
            if label == "client":
                continue
            this, base = row["this"], row[rev]
            cpu = this["cpu_us_per_request"] / base["cpu_us_per_request"]
            lines.append(
                f"{label:<52}{spread(this):>24}{spread(base):>24}{row['ratio']:>7.2f}{cpu:>10.2f}"
            )
            goal = "against_processes_rps" if label.startswith("--processes") else "against_rps"
            targets.append(f"{label}, this / {rev}: {verdict(row['ratio'], goal)}")
        client = side["rows"]["client"]
        lines.append(
            f"{'client.py per invocation (ms, lower is better)':<52}"
            f"{client['this']['ms']:>24.1f}{client[rev]['ms']:>24.1f}{client['ratio']:>7.2f}"
        )
        targets.append(
            f"client.py speed, {rev} time / this time: {verdict(client['ratio'], 'against_rps')}"
        )
    targets.append(f"lost or timed-out replies: {figures['lost']} (target 0)")
    lines += ["", "Targets (ratios of this run's medians)"]
    if settings == QUICK:
        lines.append("  (--quick: loads too small and runs too few to judge the targets by)")
    lines += [f"  {line}" for line in targets]
    ends = [*cuts, ("", len(lines))]
    starts = [0] + [end for _, end in cuts]
    return [
        (name, "\n".join(lines[start:end])) for start, (name, end) in zip(starts, ends, strict=True)
    ]


def plain(sections: list[tuple[str, str]]) -> str:
    """The report's sections as one text, for stdout."""
    return "\n".join(text for _, text in sections).lstrip("\n")


BEGIN, END = "<!-- begin benchmark -->", "<!-- end benchmark -->"


def write_markdown(
    path: Path, sections: list[tuple[str, str]], command: str, charts: dict[str, list]
) -> None:
    """Put the report between path's markers, with the command and the commit; each
    phase's charts (phase -> [(title, file)]) linked right after its table."""
    git = ["git", "-C", str(HERE.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    where = commit.stdout.strip() + (" with uncommitted changes" if changed else "")
    block = [BEGIN, f"Commit {where}, {time.strftime('%Y-%m-%d')}: `{command}`", ""]
    texts: list[str] = []
    for phase, text in sections:
        texts.append(text)
        if phase in charts:
            block += ["```", "\n".join(texts).strip("\n"), "```", ""]
            for title, chart in charts[phase]:
                block += [f"![{title}]({os.path.relpath(chart, path.parent)})", ""]
            texts = []
    block += ["```", "\n".join(texts).strip("\n"), "```", END]
    head, begin, rest = path.read_text().partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"bench: {path} has no {BEGIN} ... {END} markers")
    path.write_text(head + "\n".join(block) + tail)
    progress(f"report written into {path}")


def draw_charts(figures: dict, folder: Path) -> dict[str, list[tuple[str, Path]]]:
    """charts.py's PNGs of this run's figures into folder, by phase; matplotlib is a
    development dependency (requirements-dev.txt), imported only here."""
    started = time.monotonic()
    try:
        from charts import write_charts  # bench/ is the script's directory: first on sys.path

        drawn = write_charts(figures, folder)
    except ModuleNotFoundError as error:
        raise SystemExit(
            f"bench: --markdown draws charts: {error} (requirements-dev.txt)"
        ) from error
    progress(f"charts written into {folder} in {time.monotonic() - started:.1f} s")
    return drawn


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark server.py against the tutorial's fixed loop."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds, small loads (for tests)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="also write the report into FILE (docs/performance.md), between its begin and "
        "end markers, with the command and the commit it ran on, and its charts (PNG, "
        "matplotlib) into the folder FILE's name ends in -charts (docs/performance-charts/), "
        "linked beside their tables",
    )
    parser.add_argument(
        "--only",
        choices=["throughput", "slow_work", "burst", "processes", "majordomo", "failover"]
        + ["kill", "client", "clients", "memory", "deadline", "metrics", "overload", "against"],
        help="run one phase",
    )
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REV",
        help="also measure the same figures on git revision REV, side by side (repeatable)",
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    # Each connected client holds a descriptor in the server; let the children have them.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = time.monotonic()
    figures: dict = {"settings": settings.__dict__}
    phases = {
        "throughput": throughput,
        "slow_work": slow_work,
        "burst": burst,
        "processes": processes,
        "majordomo": majordomo,
        "failover": failover,
        "kill": kill_loop,
        "client": client_startup,
        "clients": client_library,
        "memory": memory,
        "deadline": deadline_cost,
        "metrics": metrics_cost,
    }
    for name, phase in phases.items():
        if args.only in (None, name):
            phase_started = time.monotonic()
            figures[name] = phase(settings)
            progress(f"{name} took {time.monotonic() - phase_started:.0f} s")
    if args.only in (None, "overload"):
        phase_started = time.monotonic()
        figures["overload"] = overload(settings, args.against)
        progress(f"overload took {time.monotonic() - phase_started:.0f} s")
    if args.only in (None, "against"):
        figures["against"] = []
        for rev in args.against:
            phase_started = time.monotonic()
            figures["against"].append(against(settings, rev))
            progress(f"against {rev} took {time.monotonic() - phase_started:.0f} s")
    figures["lost"] = sum(lost(figures.get(name, {})) for name in phases)
    figures["lost"] += sum(side["lost"] for side in figures.get("against", []))
    figures["seconds"] = time.monotonic() - started
    sections = report(settings, figures)
    print(plain(sections))
    if args.markdown:
        markdown = Path(args.markdown)
        charts = draw_charts(figures, markdown.with_name(f"{markdown.stem}-charts"))
        figures["charts"] = {
            phase: [str(file) for _, file in drawn] for phase, drawn in charts.items()
        }
        # The command as someone would repeat it: where this run's own files went is not part of it.
        files = ("--markdown", args.markdown, "--json", args.json)
        shown = [arg for arg in sys.argv[1:] if arg not in files]
        write_markdown(markdown, sections, " ".join(["python bench/bench.py", *shown]), charts)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    progress(f"done in {figures['seconds']:.0f} s")
    return 1 if figures["lost"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
