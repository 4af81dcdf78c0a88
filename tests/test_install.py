"""The package installed: a wheel built from the checkout holds zmq_hello alone, and,
installed in a fresh venv, its console scripts run the programs away from the checkout
(local workers of --processes included). Offline: the wheel is built without build
isolation, and the venv borrows pyzmq from the one running the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from harness import EPHEMERAL, REPO, WAIT

from zmq_hello import supervisor

# Answers with the file of the zmq_hello package the process that runs it imported: which
# package a local worker runs, installed or the checkout's.
WHERE_HANDLER = (
    "import sys\n\n\n"
    "def handle(request: bytes) -> bytes:\n"
    "    return sys.modules['zmq_hello'].__file__.encode()\n"
)
# What a build would leave in a copy of the checkout, or never needs (.git, .venv, caches).
NOT_COPIED = shutil.ignore_patterns(".*", "__pycache__", "build", "dist", "*.egg-info")


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """A command run to its end, bounded in time, output captured."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the checkout, built once. From a copy: a build writes build/ and
    *.egg-info into its source, and setuptools would pack stale files from a build/ left
    there; pip builds the copy as it would the checkout (pip install <checkout>)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "checkout"
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    result = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
        "--disable-pip-version-check", "--quiet", "-w", work / "dist", source,
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = (work / "dist").glob("zmq_hello-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (pip, no index, no dependencies); its bin/."""
    home = tmp_path_factory.mktemp("install") / "venv"
    made = run(sys.executable, "-m", "venv", home, cwd=home.parent)
    assert made.returncode == 0, made.stderr
    # pyzmq, the one dependency, from the venv running the tests, as no index is at hand.
    # (--system-site-packages would not do: made from a venv, the new one sees the base
    # interpreter's site-packages, not that venv's.)
    [site_packages] = home.glob("lib/python3*/site-packages")
    (site_packages / "borrowed-pyzmq.pth").write_text(f"{Path(zmq.__file__).parent.parent}\n")
    installed = run(
        home / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
        "--disable-pip-version-check", "--quiet", wheel,
        cwd=home.parent,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return home / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory away from the checkout, with where.py (WHERE_HANDLER) in it;
    no PYTHONPATH inherited, which could lead to the checkout by itself."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    (tmp_path / "where.py").write_text(WHERE_HANDLER)
    yield tmp_path


def test_the_wheel_holds_the_package_alone(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    dist_info = wheel.name.split("-py3")[0] + ".dist-info/"  # zmq_hello-VERSION.dist-info/
    strays = [name for name in names if not name.startswith(("zmq_hello/", dist_info))]
    assert not strays, strays
    assert {"zmq_hello/py.typed", "zmq_hello/server.py", "zmq_hello/worker.py"} <= set(names)
    assert {f"{dist_info}METADATA", f"{dist_info}entry_points.txt"} <= set(names)


def test_the_version_is_the_package_s_own(venv, elsewhere):
    result = run(
        venv / "python", "-c",
        "import importlib.metadata, zmq_hello; print(zmq_hello.__version__); "
        "print(importlib.metadata.version('zmq-hello')); print(zmq_hello.__file__)",
        cwd=elsewhere,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    version, metadata_version, file = result.stdout.splitlines()
    assert version == metadata_version
    import zmq_hello

    assert version == zmq_hello.__version__  # the checkout's
    assert Path(file).resolve().is_relative_to(venv.parent.resolve()), file  # not the checkout


@pytest.mark.parametrize("program", ["zmq-hello-server", "zmq-hello-worker", "zmq-hello-client"])
def test_each_console_script_has_help(venv, elsewhere, program):
    result = run(venv / program, "--help", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {program} "), result.stdout


def test_the_installed_server_answers(spawn, run_client, venv, elsewhere):
    server = spawn(venv / "zmq-hello-server", "--bind", EPHEMERAL, cwd=elsewhere, python=None)
    endpoint = server.wait_for(r"^Listening on (tcp://127\.0\.0\.1:\d+)$").group(1)
    result = run_client("1", "--connect", endpoint)
    assert result.returncode == 0, f"{result.stderr}\n{server}"
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: World"


def test_the_installed_programs_name_themselves(spawn, venv, elsewhere):
    server = spawn(venv / "zmq-hello-server", "--bind", "nonsense", cwd=elsewhere, python=None)
    assert server.finish() == 1
    assert len(server.err) == 1, server
    assert server.err[0].startswith("zmq-hello-server: cannot listen on nonsense: "), server
    worker = spawn(venv / "zmq-hello-worker", "--heartbeat", "0", cwd=elsewhere, python=None)
    assert worker.finish() == 2
    assert worker.err[-1].startswith("zmq-hello-worker: error: --heartbeat"), worker


def test_the_installed_server_s_local_workers_run_the_installed_package(
    spawn, run_client, venv, elsewhere
):
    server = spawn(
        venv / "zmq-hello-server", "--bind", EPHEMERAL, "--processes", "1",
        "--handler", "where:handle", cwd=elsewhere, python=None,
    )  # fmt: skip
    endpoint = server.wait_for(r"^Listening on (tcp://127\.0\.0\.1:\d+)$").group(1)
    server.wait_for(r"worker \S+/\d+ ready for 'hello'", "err")
    result = run_client("1", "hi", "--service", "hello", "--connect", endpoint)
    assert result.returncode == 0, f"{result.stderr}\n{server}"
    package = result.stdout.splitlines()[-1].removeprefix("Client 1 received reply: ")
    assert Path(package).resolve().is_relative_to(venv.parent.resolve()), package


def test_the_installed_client_asks(start_server, venv, elsewhere):
    server = start_server("--work-time", "0")
    result = run(venv / "zmq-hello-client", "1", "--connect", server.endpoint, cwd=elsewhere)
    assert result.returncode == 0, f"{result.stderr}\n{server.process}"
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: World"


def test_the_checkout_s_server_run_from_elsewhere_has_local_workers_of_its_package(
    spawn, run_client, elsewhere
):
    """python /path/to/checkout/server.py: the workers it starts (python -m) find the
    checkout's zmq_hello, through PYTHONPATH, from any working directory."""
    server = spawn(
        "server.py", "--bind", EPHEMERAL, "--processes", "1", "--handler", "where:handle",
        cwd=elsewhere,
    )  # fmt: skip
    endpoint = server.wait_for(r"^Listening on (tcp://127\.0\.0\.1:\d+)$").group(1)
    server.wait_for(r"worker \S+/\d+ ready for 'hello'", "err", timeout=WAIT)
    result = run_client("1", "hi", "--service", "hello", "--connect", endpoint)
    assert result.returncode == 0, f"{result.stderr}\n{server}"
    package = result.stdout.splitlines()[-1].removeprefix("Client 1 received reply: ")
    assert Path(package).resolve() == REPO / "zmq_hello" / "__init__.py"


def test_workers_get_the_package_s_directory_first_on_pythonpath_when_not_on_the_path(
    monkeypatch,
):
    root = str(supervisor.PACKAGE_ROOT)
    monkeypatch.setenv("PYTHONPATH", "/theirs")
    monkeypatch.setattr(supervisor, "STARTUP_PATH", ["/usr/lib/python3"])
    environment = supervisor.worker_environment()
    assert environment is not None
    assert environment["PYTHONPATH"] == f"{root}{os.pathsep}/theirs"
    monkeypatch.delenv("PYTHONPATH")
    assert supervisor.worker_environment()["PYTHONPATH"] == root
    # Installed (site-packages on the path already): the environment as it is.
    monkeypatch.setattr(supervisor, "STARTUP_PATH", ["/usr/lib/python3", root])
    assert supervisor.worker_environment() is None
