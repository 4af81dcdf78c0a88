"""The tests' fixtures: processes started through them are killed when a test ends,
whatever its outcome. The harness they use is in harness.py; the reliability table is
the plugin in reliability.py (loaded from pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from harness import ECHO, EPHEMERAL, REPO, Process, Server


@pytest.fixture
def spawn() -> Iterator:
    """Start a script (path relative to the repository, or absolute) as a Process; kill
    all at the end. python=None runs the script itself (an installed console script)."""
    started: list[Process] = []

    def start(
        script: str,
        *args: str,
        preexec_fn=None,
        cwd: Path = REPO,
        python: str | None = sys.executable,
    ) -> Process:
        process = Process(REPO / script, *args, preexec_fn=preexec_fn, cwd=cwd, python=python)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def start_server(spawn) -> Iterator:
    """Start server.py and wait for its 'Listening on' line."""

    def start(*args: str) -> Server:
        if not any(arg.startswith("--bind") for arg in args):
            args = ("--bind", EPHEMERAL, *args)
        process = spawn("server.py", *args)
        endpoint = process.wait_for(r"^Listening on (tcp://127\.0\.0\.1:\d+)$").group(1)
        return Server(process, endpoint)

    yield start


@pytest.fixture
def echo_server(start_server) -> Iterator:
    """A server.py serving tests/sample_handlers.py's echo: b'<seconds> <text>' first sleeps,
    b'boom' raises. handler=ECHO_ASYNC serves the async one."""

    def start(*args: str, handler: str = ECHO) -> Server:
        return start_server("--handler", handler, *args)

    yield start


@pytest.fixture
def run_client() -> Iterator:
    """Run client.py to the end (bounded) and return the CompletedProcess."""

    def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "client.py"), *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    yield run


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    """A ZeroMQ context for raw test peers; their sockets never linger."""
    with zmq.Context() as ctx:
        ctx.setsockopt(zmq.LINGER, 0)
        yield ctx
        ctx.destroy(linger=0)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """CURVE keys from make_keys.py in tmp_path/keys: server, clients alice and mallory,
    workers w1 and w2; tmp_path/clients allows alice, tmp_path/workers allows w1."""
    result = subprocess.run(
        [sys.executable, str(REPO / "make_keys.py"), str(tmp_path / "keys"), "server"]
        + ["alice", "mallory", "w1", "w2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for folder, name in (("clients", "alice"), ("workers", "w1")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{name}.key").write_bytes(
            (tmp_path / "keys" / f"{name}.key").read_bytes()
        )
    return tmp_path
