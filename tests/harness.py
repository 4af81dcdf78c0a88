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
SIGNALS = [signal.SIGINT, signal.SIGTERM]


class Process:
    """A running script whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, script: Path, *args: str, preexec_fn=None, cwd: Path = REPO) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(script), *args],
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
