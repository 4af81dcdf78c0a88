"""zmq-hello: a ZeroMQ request-reply server, its clients and a Majordomo worker.

For callers, the clients:

    from zmq_hello import Client, NoReply, ServerError      # threads
    from zmq_hello import AsyncClient                       # asyncio

For handlers, the time their caller will still wait (None if it sent no deadline):

    from zmq_hello import time_remaining

The programs are `zmq_hello.server`, `zmq_hello.worker` and `zmq_hello.client_cli`
(installed as zmq-hello-server, zmq-hello-worker and zmq-hello-client). The rest is
what they share, in one package so that none of its modules can shadow a user's:
handlers, scheduling, where handlers run (runners, the MDP broker, local worker
processes), MDP framing, and the wire and socket helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.10.0"

__all__ = ["AsyncClient", "Client", "NoReply", "ServerError", "__version__", "time_remaining"]

from zmq_hello.deadlines import time_remaining  # light: no socket library, no asyncio

if TYPE_CHECKING:
    from zmq_hello.aio import AsyncClient
    from zmq_hello.client import Client, NoReply, ServerError

# Imported when first named, so that a program that needs neither client (the server, a
# worker) does not pay for asyncio, and one that needs only Client does not either.
_EXPORTS = {
    "Client": "zmq_hello.client",
    "NoReply": "zmq_hello.client",
    "ServerError": "zmq_hello.client",
    "AsyncClient": "zmq_hello.aio",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zmq_hello' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
