#!/usr/bin/env python3
"""Hostile peers against fresh servers: how often each aborts the server, and what one
flooding connection costs a real service's clients.

Each reproduction (the peers of tests/abusers.py) runs --tries times, each against a
fresh server.py; a try counts as an abort when the server dies with SIGABRT (exit
status -6, libzmq's `Assertion failed: !_io_error`) within --window seconds of the
peers' close. After the window a normal request must be answered, then SIGTERM must
end the server with 0. Then, in broker mode (--backend, one worker.py for the real
service), a client times requests to that service alone, and again while one
connection floods made-up services.

    python bench/abuse.py                      # 20 tries of each: 10 to 25 minutes
    python bench/abuse.py --tries 3 --only mdp-services --only raw-ping
    python bench/abuse.py --repo /tmp/head     # the server.py of another checkout

Progress goes to stderr, the markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS))

import abusers  # noqa: E402
from harness import Process  # noqa: E402

EPHEMERAL = "tcp://127.0.0.1:*"
BIG = "tests.sample_handlers:big"  # in the target checkout: replies int(request) bytes
ECHO = "tests.sample_handlers:echo"
START_TIMEOUT = 15.0


@dataclass
class Reproduction:
    name: str
    what: str
    server_args: list[str]
    abuse: Callable[[Target, Path | None], object]  # (the server, CURVE keys dir or None)
    probe: str = "plain"  # "plain": a plain request; "mmi": mmi.service (the broker's own)
    curve: bool = False
    quiet: bool = True  # server.py --quiet; without, a line per request slows its loop


@dataclass
class Target:
    """A started server: its process and endpoints."""

    process: Process
    endpoint: str
    backend: str = ""

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def backend_port(self) -> int:
        return int(self.backend.rsplit(":", 1)[1])


def alice(keys: Path | None) -> abusers.Curve | None:
    if keys is None:
        return None
    return abusers.Curve.from_files(keys / "alice.key_secret", keys / "server.key")


REPRODUCTIONS = [
    Reproduction(
        "mdp-services",
        "one RFC 18 client, 13,000 requests for 2,000 made-up services (--backend)",
        ["--backend", EPHEMERAL],
        lambda t, k: abusers.mdp_service_flood(t.endpoint),
        probe="mmi",
    ),
    Reproduction(
        "unread",
        "20 clients x 5,000 requests for 64 KiB replies, none read (threads, not --quiet)",
        ["--handler", BIG],
        lambda t, k: abusers.unread_flood(t.endpoint),
        quiet=False,
    ),
    Reproduction(
        "raw-ping",
        "raw ZMTP 3.1 peer, one-byte messages with PINGs, then RST (threads)",
        ["--work-time", "0"],
        lambda t, k: abusers.raw_ping_fill(t.port, rounds=1),
    ),
    Reproduction(
        "raw-ping-broker",
        "raw ZMTP 3.1 peer, one-byte messages with PINGs, then RST (--backend)",
        ["--backend", EPHEMERAL],
        lambda t, k: abusers.raw_ping_fill(t.port, rounds=1),
        probe="mmi",
    ),
    Reproduction(
        "raw-worker",
        "raw MDP worker, READY then HEARTBEATs with PINGs, then RST (backend)",
        ["--backend", EPHEMERAL],
        lambda t, k: abusers.raw_worker_flood(t.backend_port, rounds=1),
        probe="mmi",
    ),
    Reproduction(
        "raw-flood",
        "raw ZMTP 3.1 peer, 5,000,000 one-byte messages (15 MB; 5 s at most), no PING, "
        "then RST (threads)",
        ["--work-time", "0"],
        lambda t, k: abusers.raw_ping_fill(
            t.port, rounds=1, messages=5_000_000, ping_every=0, seconds=5
        ),
    ),
    Reproduction(
        "mdp-heartbeat",
        "mdp-services from a DEALER with HEARTBEAT_IVL 50 ms (--backend)",
        ["--backend", EPHEMERAL],
        lambda t, k: abusers.mdp_service_flood(t.endpoint, heartbeat_ms=50),
        probe="mmi",
    ),
    Reproduction(
        "curve-mdp",
        "mdp-services over CURVE (--backend)",
        ["--backend", EPHEMERAL],
        lambda t, k: abusers.mdp_service_flood(t.endpoint, curve=alice(k)),
        probe="mmi",
        curve=True,
    ),
]
BY_NAME = {reproduction.name: reproduction for reproduction in REPRODUCTIONS}


def progress(line: str) -> None:
    print(f"abuse: {line}", file=sys.stderr, flush=True)


def start_server(repo: Path, args: list[str]) -> Target:
    process = Process(
        repo / "server.py", "--bind", EPHEMERAL, "--graceful-timeout", "2", *args, cwd=repo
    )
    try:
        endpoint = process.wait_for(r"^Listening on (\S+)$", timeout=START_TIMEOUT).group(1)
    except AssertionError:
        process.kill()
        raise
    backend = ""
    if "--backend" in args:
        backend = process.wait_for(r"^Workers connect to (\S+)$").group(1)
    return Target(process, endpoint, backend)


def curve_args(keys: Path) -> list[str]:
    return [
        "--curve-secret", str(keys / "server.key_secret"),
        "--curve-clients", str(keys.parent / "clients"),
        "--curve-workers", str(keys.parent / "workers"),
    ]  # fmt: skip


def make_keys(directory: Path) -> Path:
    """make_keys.py's server, alice and w1 in directory/keys; alice allowed as a client,
    w1 as a worker. Returns directory/keys."""
    keys = directory / "keys"
    subprocess.run(
        [sys.executable, str(HERE.parent / "make_keys.py"), str(keys), "server", "alice", "w1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for folder, name in (("clients", "alice"), ("workers", "w1")):
        (directory / folder).mkdir()
        shutil.copy(keys / f"{name}.key", directory / folder)
    return keys


def ask(endpoint: str, probe: str, curve: abusers.Curve | None, timeout: float) -> bool:
    """Whether the server answers one request within timeout: a plain one, or for a
    broker with no worker, mmi.service (RFC 8, the broker's own)."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        if probe == "mmi":
            sock.send_multipart([b"MDPC02", b"\x01", b"mmi.service", b"hello"])
        else:
            sock.send_multipart([b"probe", b"", b"10"])
        return bool(sock.poll(timeout * 1000))


def peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@dataclass
class Tally:
    tries: int = 0
    aborts: int = 0
    other_exits: list[int] = field(default_factory=list)  # codes while it should run
    served: int = 0
    clean_exits: int = 0  # SIGTERM then 0
    peak_rss_kib: int = 0
    abort_after: list[float] = field(default_factory=list)


def run_try(repo: Path, reproduction: Reproduction, keys: Path | None, window: float, tally):
    args = list(reproduction.server_args) + (["--quiet"] if reproduction.quiet else [])
    if reproduction.curve and keys is not None:
        args += curve_args(keys)
    target = start_server(repo, args)
    popen = target.process.popen
    tally.tries += 1
    try:
        try:
            reproduction.abuse(target, keys)
        except (TimeoutError, OSError, zmq.ZMQError) as exc:  # the server died under it
            progress(f"  {reproduction.name}: the peer stopped: {exc!r}")
        closed = time.monotonic()
        tally.peak_rss_kib = max(tally.peak_rss_kib, peak_rss_kib(popen.pid))
        try:
            code = popen.wait(window)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            if code == -signal.SIGABRT:
                tally.aborts += 1
                tally.abort_after.append(time.monotonic() - closed)
            else:
                tally.other_exits.append(code)
            return
        curve = alice(keys) if reproduction.curve else None
        tally.served += ask(target.endpoint, reproduction.probe, curve, timeout=5.0)
        target.process.signal(signal.SIGTERM)
        try:
            code = target.process.finish(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
        if code == 0:
            tally.clean_exits += 1
        elif code == -signal.SIGABRT:
            tally.aborts += 1
        elif code is not None:
            tally.other_exits.append(code)
    finally:
        target.process.kill()


# Latency of a real service while one connection floods made-up ones.


def flood_child(endpoint: str, seconds: float, queue) -> None:
    queue.put(abusers.mdp_service_stream(endpoint, seconds))


def time_requests(endpoint: str, seconds: float, timeout: float) -> tuple[list[float], int]:
    """Sequential plain requests for seconds: the round trips (s) answered, and how many
    went unanswered within timeout each."""
    latencies: list[float] = []
    lost = 0
    end = time.monotonic() + seconds
    with zmq.Context() as context:
        context.setsockopt(zmq.LINGER, 0)
        sock = context.socket(zmq.DEALER)
        sock.connect(endpoint)
        n = 0
        while time.monotonic() < end:
            n += 1
            token = b"%d" % n
            start = time.perf_counter()
            sock.send_multipart([token, b"", b"ping"])
            deadline = start + timeout
            while True:
                left = deadline - time.perf_counter()
                if left <= 0 or not sock.poll(left * 1000):
                    lost += 1
                    break
                if sock.recv_multipart()[0] == token:
                    latencies.append(time.perf_counter() - start)
                    break
        sock.close(linger=0)
    return latencies, lost


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency(repo: Path, seconds: float, window: float) -> list[dict]:
    """server.py --backend, one worker.py for 'hello'; a client alone, then beside a flood."""
    target = start_server(repo, ["--quiet", "--backend", EPHEMERAL, "--worker-heartbeat", "1"])
    worker = Process(
        repo / "worker.py", "--connect", target.backend, "--handler", ECHO, "--heartbeat", "1",
        cwd=repo,
    )  # fmt: skip
    rows = []
    try:
        target.process.wait_for(r"ready for 'hello'", "err", timeout=START_TIMEOUT)
        for phase in ("alone", "during a flood of made-up services"):
            flood = None
            if phase != "alone":
                spawn = multiprocessing.get_context("spawn")
                queue = spawn.Queue()
                flood = spawn.Process(target=flood_child, args=(target.endpoint, seconds, queue))
                flood.start()
                time.sleep(0.3)  # its connection up and flooding
            latencies, lost = time_requests(target.endpoint, seconds, timeout=1.0)
            sent = 0
            if flood is not None:
                sent = queue.get(timeout=seconds + 30)
                flood.join(30)
            row = {"phase": phase, "answered": len(latencies), "lost": lost, "flood": sent}
            if latencies:
                row["p50_ms"] = percentile(latencies, 0.5) * 1000
                row["p99_ms"] = percentile(latencies, 0.99) * 1000
            try:
                row["exit"] = target.process.popen.wait(window if flood else 0)
            except subprocess.TimeoutExpired:
                row["exit"] = None
            rows.append(row)
            progress(f"latency {phase}: {row}")
            if row["exit"] is not None:
                break
    finally:
        worker.kill()
        target.process.kill()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tries", type=int, default=20, metavar="N", help="tries of each (default 20)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BY_NAME) + ["latency"],
        help="run this reproduction only, or only the latency phase (repeatable)",
    )
    parser.add_argument(
        "--window",
        type=float,
        metavar="SECONDS",
        default=3.0,
        help="seconds after the peers' close in which the server must not die (default 3)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="SECONDS",
        default=5.0,
        help="length of each latency measurement (default 5)",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=HERE.parent,
        metavar="DIR",
        help="the checkout whose server.py and worker.py to run (default: this one), "
        "e.g. a git worktree of an older commit",
    )
    parser.add_argument("--list", action="store_true", help="list the reproductions and exit")
    args = parser.parse_args(argv)
    if args.list:
        for reproduction in REPRODUCTIONS:
            print(f"{reproduction.name:16} {reproduction.what}")
        return 0
    repo = args.repo.resolve()
    if not (repo / "server.py").is_file():
        parser.error(f"no server.py in {repo}")
    chosen = args.only or list(BY_NAME) + ["latency"]
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"server.py of {repo} at {commit or '?'}{' (modified)' if dirty else ''}; "
          f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}\n")  # fmt: skip

    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        keys = make_keys(Path(scratch)) if "curve-mdp" in chosen else None
        rows = []
        for name in chosen:
            if name == "latency":
                continue
            reproduction = BY_NAME[name]
            tally = Tally()
            for n in range(args.tries):
                run_try(repo, reproduction, keys, args.window, tally)
                progress(
                    f"{name} {n + 1}/{args.tries}: {tally.aborts} aborts, "
                    f"{tally.served} served after"
                )
            rows.append((reproduction, tally))
            failed |= tally.aborts > 0
        if rows:
            print(
                f"Aborts: {args.tries} tries each, a fresh server each, window {args.window:g} s\n"
            )
            print("| reproduction | what | aborts (-6) | after close | served after | "
                  "SIGTERM -> 0 | other exits | peak RSS |")  # fmt: skip
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            for reproduction, tally in rows:
                after = (
                    f"{min(tally.abort_after):.1f}-{max(tally.abort_after):.1f} s"
                    if tally.abort_after
                    else "-"
                )
                others = ", ".join(str(code) for code in tally.other_exits) or "-"
                print(
                    f"| {reproduction.name} | {reproduction.what} | "
                    f"{tally.aborts}/{tally.tries} | {after} | {tally.served}/{tally.tries} | "
                    f"{tally.clean_exits}/{tally.tries} | {others} | "
                    f"{tally.peak_rss_kib / 1024:.0f} MiB |"
                )
            print()
    if "latency" in chosen:
        print(
            f"Latency of a real service (worker.py, echo), one client, sequential requests "
            f"for {args.seconds:g} s, 1 s timeout each; the flood: one RFC 18 connection, "
            "2,000 made-up services, as fast as the server takes them\n"
        )
        print("| phase | answered | lost (1 s timeout) | p50 | p99 | flood requests sent | "
              "server after |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for row in latency(repo, args.seconds, args.window):
            p50 = f"{row['p50_ms']:.2f} ms" if "p50_ms" in row else "-"
            p99 = f"{row['p99_ms']:.2f} ms" if "p99_ms" in row else "-"
            state = "up" if row["exit"] is None else f"exited {row['exit']}"
            failed |= row["exit"] is not None
            print(
                f"| {row['phase']} | {row['answered']} | {row['lost']} | {p50} | {p99} | "
                f"{row['flood'] or '-'} | {state} |"
            )
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
