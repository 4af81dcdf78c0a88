"""Local worker processes (--processes): start them, reap them, restart them with a
growing pause after start-up crashes, and stop them at shutdown.

Each is a worker.py process that connects to the broker's private ipc:// endpoint with
the routing id host/pid, so the broker can tell the supervisor when one registered (a
later crash is no start-up crash) and when one went silent (it is hung: kill it, so that
it is restarted). The supervisor owns SIGCHLD: its handler only notes that a child
exited; the poll loop wakes (the signal writes to its wake-up fd) and the broker calls
reap().
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RESTART_PAUSE_MAX = 30.0  # seconds: the longest pause before restarting a local worker
STOP_TIMEOUT = 10.0  # seconds local workers get to exit at shutdown before being killed
WORKER_SCRIPT = Path(__file__).resolve().parent.parent / "worker.py"

log = logging.getLogger("server")


@dataclass
class Local:
    """One --processes slot: the worker.py process that fills it, restarted as needed."""

    popen: subprocess.Popen | None = None
    address: bytes = b""  # its routing id, as worker.py sets it: host/pid
    ready: bool = False  # registered since it started: a crash after that is no start-up crash
    failures: int = 0  # start-up crashes in a row, for the pause before the next start
    restart_at: float | None = None


class Supervisor:
    """count worker.py processes, kept running until stop()."""

    def __init__(self, count: int, worker_args: list[str]) -> None:
        """worker_args: worker.py's flags (endpoint, service, heartbeat, handler)."""
        self.command = [
            sys.executable,
            str(WORKER_SCRIPT),
            *worker_args,
            "--parent",
            str(os.getpid()),
        ]
        self.count = count
        self.local: list[Local] = []
        self.child_exited = False

    def start(self) -> None:
        signal.signal(signal.SIGCHLD, self.on_sigchld)
        self.local = [Local() for _ in range(self.count)]
        for local in self.local:
            self.spawn(local)

    def on_sigchld(self, _signum: int, _frame: object) -> None:
        self.child_exited = True

    def spawn(self, local: Local) -> None:
        local.popen = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        local.address = f"{socket.gethostname()}/{local.popen.pid}".encode()
        local.ready, local.restart_at = False, None

    def registered(self, address: bytes) -> None:
        """The broker heard READY from address: if it is ours, it started well."""
        for local in self.local:
            if local.address == address:
                local.ready, local.failures = True, 0

    def hung(self, address: bytes) -> None:
        """The broker found address silent: if it is ours, end it, to start anew."""
        for local in self.local:
            if local.address == address and local.popen and local.popen.poll() is None:
                local.popen.kill()

    def may_serve(self) -> bool:
        """Whether a local worker may yet register (one that crashed at start is not
        counted on)."""
        return any(local.failures == 0 for local in self.local)

    def reap(self) -> list[tuple[bytes, str]]:
        """The local workers that exited, as (address, how), with their restarts planned."""
        self.child_exited = False
        exited = []
        now = time.monotonic()
        for local in self.local:
            if local.popen is None or (code := local.popen.poll()) is None:
                continue
            how = f"signal {-code}" if code < 0 else f"code {code}"
            exited.append((local.address, how))
            if local.ready:
                pause = 0.0
            else:  # it never registered: a start-up crash, so wait longer each time
                pause = min(0.5 * 2**local.failures, RESTART_PAUSE_MAX)
                local.failures += 1
            log.warning(
                "local worker pid %d exited (%s): restarting in %.1f s", local.popen.pid, how, pause
            )
            local.popen, local.restart_at = None, now + pause
        return exited

    def restart(self) -> float | None:
        """Start the local workers whose pause is over; when the next one is due, if any."""
        now = time.monotonic()
        for local in self.local:
            if local.popen is None and local.restart_at is not None and now >= local.restart_at:
                self.spawn(local)
        pending = [local.restart_at for local in self.local if local.popen is None]
        return min(pending, default=None)  # type: ignore[type-var]

    def stop(self) -> None:
        """SIGTERM to each (they finish their request and leave); SIGKILL past the bound."""
        running = [local.popen for local in self.local if local.popen]
        self.local = []  # nothing is restarted from here on
        for popen in running:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for popen in running:
            try:
                popen.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("local worker pid %d did not exit: killed", popen.pid)
                popen.kill()
                popen.wait()
