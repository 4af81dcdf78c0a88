"""The project takes no top-level module name but its package's and its scripts': a
user's module named like one of ours is the one served, in every mode."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from harness import EPHEMERAL

USER_HANDLER = "def handle(request: bytes) -> bytes:\n    return b'mine: ' + request\n"
USER_ASYNC_HANDLER = "async def handle(request: bytes) -> bytes:\n    return b'mine: ' + request\n"


@pytest.mark.parametrize(
    "name, mode",
    [
        ("handlers", []),  # threads
        ("scheduler", ["--workers", "0"]),  # inline
        ("wire", "async"),
        ("mdp", ["--processes", "1"]),
        ("pools", ["--workers", "0"]),
        ("fleet", ["--processes", "1"]),
        ("server", []),
        ("client", ["--processes", "1"]),
    ],
)
def test_a_user_module_named_like_ours_is_served(spawn, run_client, tmp_path, name, mode):
    source = USER_ASYNC_HANDLER if mode == "async" else USER_HANDLER
    (tmp_path / f"{name}.py").write_text(source)
    flags = [] if mode == "async" else mode
    server = spawn(
        "server.py", "--bind", EPHEMERAL, "--handler", f"{name}:handle", *flags, cwd=tmp_path
    )
    endpoint = server.wait_for(r"^Listening on (\S+)$").group(1)
    if "--processes" in flags:
        server.wait_for("^Worker ready")
    result = run_client("1", "hello", "--connect", endpoint)
    assert result.returncode == 0, f"{result.stderr}\n{server}"
    assert result.stdout.splitlines()[-1] == "Client 1 received reply: mine: hello"


def test_the_package_has_no_import_circle():
    """Each module imports only modules below it, type-checking imports included: a
    reader (and Python) can take them in one order."""
    package = Path(__file__).resolve().parent.parent / "zmq_hello"
    names = {path.stem for path in package.glob("*.py")}
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            if module == "zmq_hello":
                found |= {alias.name for alias in node.names}
            elif module.startswith("zmq_hello."):
                found.add(module.split(".")[1])
        imports[path.stem] = found & names - {path.stem}

    def below(name: str, path: tuple[str, ...]) -> None:
        for imported in imports[name]:
            assert imported not in path, f"import circle: {' -> '.join(path + (imported,))}"
            below(imported, path + (imported,))

    for name in names - {"__init__"}:  # __init__ names its exports lazily
        below(name, (name,))
