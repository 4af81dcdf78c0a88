"""The process harness the tests import: start real server.py, worker.py and client.py
processes on loopback, read what they print as it comes, wait for lines (events) rather
than sleeping, and talk to a server with raw ZeroMQ peers."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
EPHEMERAL = "tcp://127.0.0.1:*"
WAIT = 10.0  # the longest any expected event may take; tests end much sooner
ECHO = "tests.sample_handlers:echo"
ECHO_ASYNC = "tests.sample_handlers:echo_async"
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]  # each drains, then exits 0


class Process:
    """A running script whose stdout and stderr lines are collected by reader threads;
    python=None runs script itself (an installed console script, say)."""

    def __init__(
        self,
        script: Path,
        *args: str,
        preexec_fn=None,
        cwd: Path = REPO,
        python: str | None = sys.executable,
    ) -> None:
        self.popen = subprocess.Popen(
            [*([python] if python else []), str(script), *args],
            preexec_fn=preexec_fn,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="backslashreplace",
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self.changed:
                lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, pattern: str, stream: str = "out", timeout: float = WAIT) -> re.Match:
        """Wait until a line of stdout ("out") or stderr ("err") matches; return the match."""
        lines = self.out if stream == "out" else self.err
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in lines:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reading()):
                    raise AssertionError(f"no line matching {pattern!r} in std{stream}\n{self}")
                self.changed.wait(min(left, 0.5))

    def wait_count(self, pattern: str, times: int, stream: str = "out", timeout: float = WAIT):
        """Wait until at least `times` lines of the stream match pattern."""
        lines = self.out if stream == "out" else self.err
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum(1 for line in lines if regex.search(line)) < times:
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reading()):
                    raise AssertionError(f"fewer than {times} lines matching {pattern!r}\n{self}")
                self.changed.wait(min(left, 0.5))

    def wait_until(self, check, stream: str = "out", timeout: float = WAIT) -> None:
        """Wait until check(lines of the stream) is true, as each new line arrives."""
        lines = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check(lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reading()):
                    raise AssertionError(f"{check.__doc__ or check} never held\n{self}")
                self.changed.wait(min(left, 0.5))

    def wait_incidents(self, kind: str, text: str, times: int, timeout: float = WAIT) -> None:
        """Wait until the server's stderr accounts for `times` incidents of a kind: lines
        logged one by one (matching text) plus the counts of 'kind: N more' lines."""

        def accounted(lines: list[str]) -> bool:
            return incident_total(lines, kind, text) >= times

        accounted.__doc__ = f"{times} incidents of {kind!r} ({text!r})"
        self.wait_until(accounted, "err", timeout)

    def _reading(self) -> bool:
        return any(reader.is_alive() for reader in self.readers)

    def count(self, pattern: str, stream: str = "out") -> int:
        lines = self.out if stream == "out" else self.err
        with self.changed:
            return sum(1 for line in lines if re.search(pattern, line))

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the process to exit and for its output to be read; return its code."""
        code = self.popen.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return code

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(WAIT)

    def __str__(self) -> str:
        with self.changed:
            out, err = "\n".join(self.out), "\n".join(self.err)
        return f"--- stdout\n{out}\n--- stderr\n{err}"


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB; 0 once it is gone (a zombie has none)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def incident_total(lines: list[str], kind: str, text: str) -> int:
    """Incidents of a kind in a server's log: those logged one by one (matching text) and
    those counted on 'kind: N more' lines (zmq_hello/incidents.py)."""
    counted = re.compile(rf"{re.escape(kind)}: (\d+) more\b")
    single = re.compile(text)
    total = 0
    for line in lines:
        if found := counted.search(line):
            total += int(found.group(1))
        elif single.search(line):
            total += 1
    return total


class Server:
    """A started server.py: its Process, and the endpoint and port it printed."""

    def __init__(self, process: Process, endpoint: str) -> None:
        self.process = process
        self.endpoint = endpoint
        self.port = int(endpoint.rsplit(":", 1)[1])


def receive(socket: zmq.Socket, timeout: float = WAIT) -> list[bytes]:
    """The next multipart message on socket, or an AssertionError after timeout seconds."""
    if not socket.poll(timeout * 1000):
        raise AssertionError(f"no reply within {timeout} s")
    return socket.recv_multipart()


def dealer(context: zmq.Context, endpoint: str, routing_id: bytes | None = None) -> zmq.Socket:
    socket = context.socket(zmq.DEALER)
    if routing_id is not None:
        socket.setsockopt(zmq.ROUTING_ID, routing_id)
    socket.connect(endpoint)
    return socket


def ask(
    context: zmq.Context, endpoint: str, body: bytes = b"Hello", timeout: float = WAIT
) -> bytes:
    """One correlated request from a fresh DEALER, as client.py sends it; the reply body."""
    with context.socket(zmq.DEALER) as socket:
        socket.connect(endpoint)
        socket.send_multipart([b"probe", b"", body])
        reply = receive(socket, timeout)
    assert reply[:2] == [b"probe", b""], reply
    return reply[2]


# Worker processes and MDP peers

HEARTBEAT = "0.2"  # seconds, for server and workers: failures show within a second
W01, W02 = b"MDPW01", b"MDPW02"


def start_broker(start_server, *args: str):
    """server.py --backend on an ephemeral port; returns (server, backend endpoint)."""
    server = start_server("--backend", "tcp://127.0.0.1:*", "--worker-heartbeat", HEARTBEAT, *args)
    backend = re.fullmatch(r"Workers connect to (\S+)", server.process.out[0]).group(1)
    return server, backend


def start_worker(spawn, server, backend: str, *args: str, handler: str = ECHO):
    """worker.py, returned once the server has it registered."""
    worker = spawn(
        "worker.py", "--connect", backend, "--heartbeat", HEARTBEAT, "--handler", handler, *args
    )
    worker.wait_for(f"^Worker ready for hello at {re.escape(backend)}$")
    server.process.wait_for(
        rf"worker \S+/{worker.popen.pid} ready for 'hello' \(MDP/0\.2\)$", "err"
    )
    return worker


def mdp_peer(context: zmq.Context, backend: str, routing_id: bytes = b"raw") -> zmq.Socket:
    return dealer(context, backend, routing_id)


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1] == "Z" for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling /proc: no event tells another process's end
    return True


def local_worker_pids(server) -> list[int]:
    return [
        int(match.group(1))
        for line in server.process.err
        if (match := re.search(r"worker \S+/(\d+) ready", line))
    ]
