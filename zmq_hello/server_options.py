"""server.py's flags for CURVE and for worker processes (MDP), with their checks: which
go together, which files must be readable, which endpoints may be open. Checked before
anything is bound, so a bad combination is one line and exit code 2."""

from __future__ import annotations

import argparse
import os

from zmq_hello import mdp
from zmq_hello.cli import MIN_INTERVAL, count
from zmq_hello.sockets import DEFAULT_MAX_REPLY_SIZE, is_local

DEFAULT_NO_WORKER_TIMEOUT = 30.0  # seconds a request waits for its service's first worker


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="encrypt with CURVE using this server secret key file (from make_keys.py); "
        "needs --curve-clients",
    )
    parser.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="accept only the clients whose public key files are in DIR",
    )


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "worker processes (MDP)",
        "Requests go to Majordomo workers (worker.py, or any MDP/0.1 or 0.2 worker) "
        "instead of threads: one request per worker at a time, for any number of services.",
    )
    group.add_argument(
        "--backend",
        metavar="ENDPOINT",
        help="accept MDP workers here (e.g. tcp://127.0.0.1:5556); beyond loopback only "
        "with CURVE (--curve-secret and --curve-workers)",
    )
    group.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="start N local worker.py processes running the same --handler, on a private "
        "ipc:// endpoint, and restart any that exits or hangs (hangs: silent for 3 "
        "--worker-heartbeat intervals while idle, or, while busy, its process frozen so "
        "that libzmq's connection heartbeats fail; a busy worker that is merely slow is "
        "never restarted)",
    )
    group.add_argument(
        "--service",
        default=mdp.DEFAULT_SERVICE,
        metavar="NAME",
        help=f"the service plain clients' requests go to, and --processes workers serve; "
        "without workers, the name MDP clients reach the handler by "
        f"(default {mdp.DEFAULT_SERVICE})",
    )
    group.add_argument(
        "--no-worker-timeout",
        type=float,
        default=DEFAULT_NO_WORKER_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a request for a service with no worker registered waits for one, "
        f"from its arrival; then a plain client gets ERROR: no worker for this service, an "
        f"MDP client nothing (default {DEFAULT_NO_WORKER_TIMEOUT:g})",
    )
    group.add_argument(
        "--worker-heartbeat",
        type=float,
        default=mdp.DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help=f"heartbeat interval with workers; an idle worker silent for 3 is dead "
        f"(default {mdp.DEFAULT_HEARTBEAT})",
    )
    group.add_argument(
        "--max-reply-size",
        type=int,
        default=DEFAULT_MAX_REPLY_SIZE,
        metavar="BYTES",
        help=f"largest frame a worker may send (a reply); local workers answer ERROR: reply "
        f"too large in place of a larger one (default {DEFAULT_MAX_REPLY_SIZE})",
    )
    group.add_argument(
        "--max-requests",
        type=count,
        default=0,
        metavar="N",
        help="replace each local worker process after it has answered about N requests "
        "(with a little jitter), to bound a handler that leaks (default 0: never)",
    )
    group.add_argument(
        "--curve-workers",
        metavar="DIR",
        help="with --curve-secret: accept only the workers whose public key files are in DIR",
    )


def check_security(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """CURVE flags that go together, key files that can be read, no open backend."""
    if bool(args.curve_secret) != bool(args.curve_clients):
        parser.error("--curve-secret and --curve-clients go together")
    if args.curve_secret:
        import zmq.auth

        if not os.path.isdir(args.curve_clients):
            parser.error(f"--curve-clients {args.curve_clients}: not a directory")
        try:
            if zmq.auth.load_certificate(args.curve_secret)[1] is None:
                parser.error(f"{args.curve_secret} holds no secret key (use NAME.key_secret)")
        except (OSError, ValueError) as exc:
            parser.error(f"{args.curve_secret}: {exc}")
    if args.curve_workers and not (args.curve_secret and args.backend):
        parser.error("--curve-workers goes with --curve-secret and --backend")
    if args.backend and args.curve_secret and not args.curve_workers:
        parser.error("--curve-secret with --backend needs --curve-workers")
    if args.curve_workers and not os.path.isdir(args.curve_workers):
        parser.error(f"--curve-workers {args.curve_workers}: not a directory")
    if args.backend and not args.curve_workers and not is_local(args.backend):
        parser.error(
            f"--backend {args.backend} is reachable beyond this machine: anyone "
            "could serve (and read) every request; use CURVE (--curve-secret, "
            "--curve-workers) or a loopback address"
        )
    if args.curve_workers and args.processes:
        parser.error(
            "--processes cannot share a CURVE backend (its workers have no keys); "
            "start local workers with worker.py --curve-secret instead"
        )


def check_workers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    service = args.service.encode()
    if not 1 <= len(service) <= mdp.MAX_SERVICE_BYTES or service.startswith(mdp.MMI_PREFIX):
        parser.error(
            f"--service must be 1 to {mdp.MAX_SERVICE_BYTES} bytes, outside the mmi. names (RFC 8)"
        )
    if args.processes < 0:
        parser.error("--processes must be 0 or more")
    if args.backend or args.processes:
        if args.workers is not None:
            parser.error(
                "--workers is for threads in this process; with --backend or "
                "--processes, requests go to worker processes"
            )
        if not args.worker_heartbeat >= MIN_INTERVAL:
            parser.error(f"--worker-heartbeat must be at least {MIN_INTERVAL} seconds")
        if not args.no_worker_timeout >= 0:
            parser.error("--no-worker-timeout must be 0 or more seconds")
        if args.max_reply_size < 1024:
            parser.error("--max-reply-size must be at least 1024")
    if args.max_requests and not args.processes:
        parser.error(
            "--max-requests is for local worker processes (--processes); give it to "
            "worker.py for remote ones"
        )
