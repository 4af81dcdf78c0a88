"""Request handlers: the built-in one, loading a user's from MODULE:FUNCTION, calling one.

A handler takes the request body (bytes) and returns the reply body (bytes, or a str,
sent as UTF-8). It may be a plain function or an `async def` one. server.py and
worker.py both run handlers through call() and call_async() below, so a handler that
raises, or returns something that is not bytes, gets the same error reply everywhere.

A user's module is imported by name from the current directory first. This package
takes no top-level name but its own, so a user's handlers.py (or scheduler.py, wire.py,
and so on) is the one served.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

from zmq_hello.deadlines import time_remaining
from zmq_hello.envelope import ERROR_PREFIX

Handler = Callable[[bytes], bytes | str | Awaitable[bytes | str]]

log = logging.getLogger("handler")

DEFAULT_WORK_TIME = 0.5  # seconds of simulated work in the built-in handler (--work-time)


def built_in(work_time: float = DEFAULT_WORK_TIME) -> Handler:
    """The built-in handler, as in the tutorial: work_time seconds of simulated work,
    then "World"."""

    def hello(request: bytes) -> bytes:
        if work_time:  # sleep(0) is no free no-op: it waits out the kernel's timer slack
            time.sleep(work_time)
        return b"World"

    return hello


class BadHandlerSpec(ValueError):
    """--handler names nothing that can be called; the message says why, in one line."""


def load(spec: str) -> Handler:
    """Import MODULE and return its FUNCTION, as `python -m` and uvicorn would find them.

    The current directory is importable, so `--handler app:handle` serves ./app.py.
    FUNCTION may be a dotted path (`module:obj.method`).
    """
    module_name, colon, function_path = spec.partition(":")
    if not colon or not module_name or not function_path:
        raise BadHandlerSpec("expected MODULE:FUNCTION (e.g. examples.echo:handle)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BadHandlerSpec(f"no module named {module_name!r}") from None
        raise BadHandlerSpec(f"importing {module_name!r} failed: {exc}") from None
    except (Exception, SystemExit) as exc:  # the module's own code raised while importing
        raise BadHandlerSpec(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    for name in function_path.split("."):
        if not hasattr(target, name):
            raise BadHandlerSpec(f"module {module_name!r} has no {function_path!r}")
        target = getattr(target, name)
    if not callable(target):
        raise BadHandlerSpec(f"{function_path!r} is {type(target).__name__}, not a function")
    return target


def is_async(handler: Handler) -> bool:
    """Whether handler is an `async def` function (or an object with an async __call__)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 (a method, not callable())
    )


def to_reply(result: object) -> bytes:
    if type(result) is bytes:  # the common case first: this runs for every request
        return result
    if isinstance(result, str):
        return result.encode()
    if not isinstance(result, (bytes, bytearray, memoryview)):
        raise TypeError(f"the handler returned {type(result).__name__}, not bytes")
    return bytes(result) if not isinstance(result, bytes) else result


def failure(exc: Exception) -> bytes:
    if isinstance(exc, TimeoutError) and time_remaining() == 0.0:
        # A call it made ran out of its caller's time (NoReply is a TimeoutError): an
        # expected end, and nobody reads the reply. One line, no traceback.
        log.warning("handler failed after its caller's deadline: %s: %s", type(exc).__name__, exc)
    else:
        log.exception("handler failed on a request")
    return ERROR_PREFIX + f"handler failed ({type(exc).__name__})".encode()


def call(handler: Handler, request: bytes) -> bytes:
    """Run a plain handler: the reply body, or an error reply instead of silence."""
    try:
        return to_reply(handler(request))
    except Exception as exc:
        return failure(exc)


async def call_async(handler: Handler, request: bytes) -> bytes:
    """Run an `async def` handler: the reply body, or an error reply instead of silence."""
    try:
        return to_reply(await handler(request))  # type: ignore[misc]  # is_async() checked
    except Exception as exc:
        return failure(exc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--handler and --work-time, as server.py and worker.py both take them."""
    parser.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="the function that answers each request, bytes in and bytes out, plain or "
        "async def, imported as 'python -m' would (e.g. examples.echo:handle); default: the "
        "built-in handler, which sleeps --work-time and answers World",
    )
    parser.add_argument(
        "--work-time",
        type=float,
        metavar="SECONDS",
        help="simulated work per request in the built-in handler only "
        f"(default {DEFAULT_WORK_TIME})",
    )


def from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Handler:
    """The handler that --handler and --work-time name; a bad one is a usage error."""
    if args.work_time is not None:
        if args.handler:
            parser.error("--work-time applies to the built-in handler only, not to --handler")
        if not args.work_time >= 0:
            parser.error("--work-time must be 0 or more")
    try:
        if not args.handler:
            return built_in(DEFAULT_WORK_TIME if args.work_time is None else args.work_time)
        return load(args.handler)
    except BadHandlerSpec as exc:
        parser.error(f"--handler {args.handler}: {exc}")
