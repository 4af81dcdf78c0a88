"""Local worker processes (--processes): start them, reap them, restart them with a
growing pause after start-up crashes, and stop them at shutdown.

Each is a worker process (python -m zmq_hello.worker, of this same zmq_hello package)
that connects to the broker's private ipc:// endpoint with the routing id host/pid, so
the broker can tell the supervisor when one registered (a later crash is no start-up
crash) and when one went silent (it is hung: kill it, so that it is restarted); the
supervisor acts on its own workers only. It owns SIGCHLD: the handler only notes that a
child exited; the poll loop wakes (the signal writes to its wake-up fd), and tend()
reaps, restarts and kills, and tells the broker which workers exited.

The private directory (zmq-hello-PID-*, only this user can open it) is removed at exit.
A server killed with SIGKILL cannot do that: the next server the same user starts with
--processes removes every such directory whose socket nobody listens on any more.
Workers whose server is gone exit by themselves (the worker's --parent).
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from zmq_hello.incidents import KIND_BURST, Incidents
from zmq_hello.majordomo import HUNG, LEAVING, REGISTERED, SERVED, News
from zmq_hello.sockets import ipc_in_use

REAP_INTERVAL = 1.0  # seconds: children are reaped this often too, in case a SIGCHLD was lost
RESTART_PAUSE_MAX = 30.0  # seconds: the longest pause before restarting a local worker
STOP_TIMEOUT = 10.0  # seconds local workers get to exit at shutdown before being killed
# Seconds a local worker that said DISCONNECT (--max-requests) gets to exit on its own,
# running its atexit hooks and finally blocks, before it is killed as hung.
RETIRE_TIMEOUT = 10.0
# A worker that crashes before it has answered a request, and sooner than this after it
# registered, crashed starting up (it may register, then fail on its first line of
# output, say): it waits longer each time before it is restarted.
STARTUP_GRACE = 1.0
DIRECTORY_PREFIX = "zmq-hello-"
SOCKET_NAME = "workers"
SWEEP_AGE = 60.0  # seconds: a directory younger than this with no socket may be starting
# The directory that holds this zmq_hello package: a checkout, or site-packages.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The interpreter's path as this process started, before handlers.py puts the working
# directory first: its first entry is the script's directory (the working directory for
# -m), which a worker started with -m does not get; the rest a worker gets as well.
STARTUP_PATH = sys.path[0 if getattr(sys.flags, "safe_path", False) else 1 :]
# -P (3.11+): with -m, Python would put the working directory first on the worker's path,
# where a module of the user's (random.py, say) would shadow the worker's own imports;
# worker.py never had it there either, but handlers.py adds it before importing one.
PYTHON_FLAGS = ["-P"] if sys.version_info >= (3, 11) else []

log = logging.getLogger("server")


@dataclass
class Local:
    """One --processes slot: the worker process that fills it, restarted as needed."""

    popen: subprocess.Popen | None = None
    address: bytes = b""  # its routing id, as the worker sets it: host/pid
    ready: bool = False  # registered since it started
    registered_at: float = 0.0
    served: bool = False  # answered a request since it started
    failures: int = 0  # start-up crashes in a row, for the pause before the next start
    restart_at: float | None = None
    leave_by: float | None = None  # it said it is leaving: killed if still running then


class Supervisor:
    """count worker processes, kept running until stop()."""

    def __init__(
        self, count: int, worker_args: list[str], incidents: Incidents, max_requests: int = 0
    ) -> None:
        """worker_args: the worker's flags (endpoint, service, heartbeat, handler);
        max_requests: each worker leaves after about that many (0: never)."""
        self.incidents = incidents
        self.max_requests = max_requests
        self.command = [
            sys.executable,
            *PYTHON_FLAGS,
            "-m",
            "zmq_hello.worker",
            *worker_args,
            "--parent",
            str(os.getpid()),
        ]
        self.environment = worker_environment()
        self.count = count
        self.local: list[Local] = []
        self.child_exited = False
        self.next_due = 0.0  # when tend() has something to do, a SIGCHLD aside
        # Workers that exited other than as asked (crashed, killed, hung and ended here),
        # each started again: for metrics. One leaving (--max-requests) exits 0.
        self.restarts = 0

    def start(self) -> None:
        """Take SIGCHLD; the workers start at the first tend(), from the poll loop, so
        that the server's Listening on line comes before any worker's first line."""
        signal.signal(signal.SIGCHLD, self.on_sigchld)
        self.local = [Local(restart_at=0.0) for _ in range(self.count)]
        self.next_due = 0.0

    def on_sigchld(self, _signum: int, _frame: object) -> None:
        self.child_exited = True

    def spawn(self, local: Local) -> None:
        command = self.command
        if self.max_requests:
            # Jitter, so that workers started together do not all leave together.
            limit = self.max_requests + random.randint(0, max(1, self.max_requests // 10))
            command = [*command, "--max-requests", str(limit)]
        local.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=self.environment)
        local.address = f"{socket.gethostname()}/{local.popen.pid}".encode()
        local.ready, local.served, local.restart_at, local.leave_by = False, False, None, None

    def find(self, address: bytes) -> Local | None:
        """The local worker whose connection has address (host/pid, or host/pid/N for a
        later connection of the same process), if it is ours and running."""
        for local in self.local:
            if local.popen and (
                address == local.address or address.startswith(local.address + b"/")
            ):
                return local
        return None

    def hear(self, now: float, news: News) -> None:
        """What the broker learnt about a worker: acted on if the worker is one of ours.
        REGISTERED and SERVED tell a start-up crash from a later one; HUNG ends the
        process, to start anew; LEAVING: it exits by itself, or is killed later."""
        local = self.find(news.address)
        if local is None or local.popen is None:
            return
        if news.event == REGISTERED:
            local.ready, local.registered_at = True, now
        elif news.event == SERVED:
            local.served = True
        elif news.event == HUNG:
            if local.popen.poll() is None:
                local.popen.kill()
        elif news.event == LEAVING and local.leave_by is None:
            local.leave_by = now + RETIRE_TIMEOUT
            self.next_due = min(self.next_due, local.leave_by)

    def tend(self, now: float) -> list[tuple[bytes, str]]:
        """Reap the workers that exited, start those whose pause is over, kill those that
        said they were leaving and have not; the (address, how) of each that exited."""
        if not (self.child_exited or now >= self.next_due):
            return []
        exited = self.reap(now)
        self.next_due = min(now + REAP_INTERVAL, self.restart(now) or math.inf)
        return exited

    def may_serve(self) -> bool:
        """Whether a local worker may yet register (one that crashed at start is not
        counted on)."""
        return any(local.failures == 0 for local in self.local)

    def reap(self, now: float) -> list[tuple[bytes, str]]:
        """The local workers that exited, as (address, how), with their restarts planned."""
        self.child_exited = False
        exited = []
        for local in self.local:
            if local.popen is None or (code := local.popen.poll()) is None:
                continue
            how = f"signal {-code}" if code < 0 else f"code {code}"
            exited.append((local.address, how))
            self.restarts += code != 0
            up = local.ready and now - local.registered_at >= STARTUP_GRACE
            if code == 0 or local.served or up:
                pause, local.failures = 0.0, 0  # it left as asked, or served a while
            else:  # a start-up crash: wait longer each time
                pause = min(0.5 * 2**local.failures, RESTART_PAUSE_MAX)
                local.failures += 1
            self.incidents.add(
                "local workers exiting",
                f"local worker pid {local.popen.pid} exited ({how}): restarting in {pause:.1f} s",
                burst=KIND_BURST,
            )
            local.popen, local.restart_at = None, now + pause
        return exited

    def restart(self, now: float) -> float | None:
        """Start the local workers whose pause is over, kill those that said they were
        leaving and have not; when the next of these is due, if any."""
        due: list[float] = []
        for local in self.local:
            if local.popen is None and local.restart_at is not None:
                if now >= local.restart_at:
                    self.spawn(local)
                else:
                    due.append(local.restart_at)
            elif local.popen and local.leave_by is not None:
                if now < local.leave_by:
                    due.append(local.leave_by)
                elif local.popen.poll() is None:
                    log.warning(
                        "local worker pid %d did not exit %g s after it left: killed",
                        local.popen.pid,
                        RETIRE_TIMEOUT,
                    )
                    local.popen.kill()
                    local.leave_by = None  # reaped, and restarted, as any other exit
        return min(due, default=None)

    def kill(self) -> None:
        """SIGKILL to each, for a server that cannot wait for them."""
        running = [local.popen for local in self.local if local.popen]
        self.local = []
        for popen in running:
            popen.kill()
        for popen in running:
            popen.wait()

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


def worker_environment() -> dict[str, str] | None:
    """The environment for local workers: this process's, with PACKAGE_ROOT put first on
    PYTHONPATH if a worker would not find this zmq_hello package without it (None: as is).

    From a checkout (python server.py, from any working directory), only the script's
    directory holds the package, and a worker started with -m does not get that one.
    Installed, the package is in site-packages, on every interpreter's path already:
    putting it on PYTHONPATH would put it before the standard library."""
    on_path = {os.path.realpath(entry) for entry in STARTUP_PATH}
    if str(PACKAGE_ROOT) in on_path:
        return None
    inherited = os.environ.get("PYTHONPATH")
    path = f"{PACKAGE_ROOT}{os.pathsep}{inherited}" if inherited else str(PACKAGE_ROOT)
    return {**os.environ, "PYTHONPATH": path}


def private_directory() -> Path:
    """A new directory for the workers' socket, after sweeping those of servers gone."""
    for stale in Path(tempfile.gettempdir()).glob(DIRECTORY_PREFIX + "*"):
        try:
            info = stale.stat()
            if info.st_uid != os.getuid() or not stale.is_dir():
                continue
            if (stale / SOCKET_NAME).exists():
                if ipc_in_use(str(stale / SOCKET_NAME)):
                    continue
            elif time.time() - info.st_mtime < SWEEP_AGE:
                continue
            shutil.rmtree(stale)
        except OSError:
            continue
        log.info("removed %s, left by a server that is gone", stale)
    # mkdtemp makes a directory only this user can open: the socket in it is private.
    return Path(tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-"))
