"""How the scripts set up their sockets: the options every server ROUTER gets (with the
reason for each), CURVE with an authenticator, IPv6 endpoints, ipc:// paths already in
use, and which endpoints only this machine reaches."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:
    import logging

    from zmq.auth.thread import ThreadAuthenticator

# The cap on a frame from a worker (a reply): far above the clients' 1 MiB, since a reply
# is as large as the handler makes it, and only workers that are let in can send one.
DEFAULT_MAX_REPLY_SIZE = 64 * 1024 * 1024
# Replies queued to one client, at the least, before the next is dropped (and logged):
# what a client that never reads may cost. The server gives room for more when one
# client may have more requests accepted at once (server.py's reply_queue()).
MAX_QUEUED_REPLIES = 1000
CLOSE_LINGER_MS = 1000  # how long replies still queued at exit may take to leave, any socket
CLIENTS_ZAP_DOMAIN = "global"  # the authenticator's keys are looked up by the socket's domain
WORKERS_ZAP_DOMAIN = "workers"  # the backend's: worker keys are not client keys


def set_router_options(
    router: zmq.Socket,
    max_message_size: int,
    zap_domain: str,
    heartbeat: float,
    queued_replies: int = MAX_QUEUED_REPLIES,
) -> None:
    """Options for a server's ROUTER (the frontend, the backend), set before it binds;
    queued_replies: how many messages may wait to go to one peer."""
    # Turn silent drops (peer gone, queue full) into errors that the loop logs.
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # Cap each frame, or a peer announcing a huge frame makes libzmq reserve it.
    router.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    # Bounded, so that exit never hangs on a peer that stopped reading.
    router.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
    # Any ZAP domain makes libzmq refuse peers speaking the unversioned ZMTP 1.0, which
    # it would otherwise parse out of any TCP client's bytes (a port scanner's, say).
    router.setsockopt_string(zmq.ZAP_DOMAIN, zap_domain)
    # libzmq 4.3.5 aborts the whole process (Assertion failed: !_io_error) when it has
    # stopped reading a connection because its queue to this socket is full, the peer
    # resets the connection, and libzmq then has something to send on it: the PING of
    # the heartbeat below, or the PONG to a PING the peer sent just before it closed
    # (libzmq issues 4364, 3937, 4767). With no high-water mark libzmq never stops
    # reading a connection, so that state cannot arise; the poll loop reads every message
    # as it comes and refuses at once what it cannot take (docs/reliability.md).
    # ROUTER_HANDOVER would bring the state back (a connection whose id was taken over
    # is never read again): it is never set on these sockets.
    router.setsockopt(zmq.RCVHWM, 0)
    # Replies queued to one client before they are dropped: its cost if it never reads.
    router.setsockopt(zmq.SNDHWM, queued_replies)
    # Ping every peer; drop one that stays silent (frozen, or its network gone) for
    # three intervals, or that has not finished its handshake by then. libzmq's I/O
    # thread answers these pings, so a peer busy in Python code is not dropped.
    interval_ms = round(heartbeat * 1000)
    router.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
    router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * interval_ms)
    router.setsockopt(zmq.HANDSHAKE_IVL, 3 * interval_ms)


def start_authenticator(context: zmq.Context, log: logging.Logger) -> ThreadAuthenticator:
    """pyzmq's ZAP handler: without one, any peer that knows our public key gets in."""
    # Imported only here: zmq.auth brings asyncio and ssl, 9 MB a server need not carry.
    from zmq.auth.thread import ThreadAuthenticator

    authenticator = ThreadAuthenticator(context, log=log.getChild("auth"))
    authenticator.start()
    return authenticator


def enable_curve(
    authenticator: ThreadAuthenticator, router: zmq.Socket, secret_file: str, keys_dir: str
) -> None:
    """Ironhouse: encrypt every connection to router, and accept only the peers whose
    public keys are in keys_dir (as make_keys.py writes them). Others never get in."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None:  # parse_args() checked the file: this is a file changed since
        raise ValueError(f"{secret_file} holds no secret key")
    # Keys are looked up by the socket's ZAP domain: clients and workers have their own.
    authenticator.configure_curve(
        domain=router.getsockopt_string(zmq.ZAP_DOMAIN), location=keys_dir
    )
    router.setsockopt(zmq.CURVE_SECRETKEY, secret)
    router.setsockopt(zmq.CURVE_PUBLICKEY, public)
    router.setsockopt(zmq.CURVE_SERVER, 1)


def is_local(endpoint: str) -> bool:
    """Whether only this machine can reach endpoint (loopback TCP, ipc, inproc)."""
    transport, _, address = endpoint.partition("://")
    if transport != "tcp":
        return transport in ("ipc", "inproc")
    host = address.rpartition(":")[0].strip("[]")
    import ipaddress  # here: the clients import this module, and never ask this

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def allow_ipv6(sock: zmq.Socket, endpoint: str) -> None:
    """IPv6 for an endpoint written with an IPv6 literal (tcp://[::1]:5555): libzmq refuses
    those without it. Left off otherwise, so that a name like localhost keeps resolving
    to the IPv4 address that servers listen on by default."""
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)


def bind(sock: zmq.Socket, endpoint: str) -> None:
    """Bind, refusing an ipc:// path where someone is listening (libzmq would replace its
    socket file, and the server there would go on, unreachable), as a TCP port in use is."""
    ipc = endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@")  # @: abstract
    if ipc and ipc_in_use(endpoint[len("ipc://") :]):
        raise zmq.ZMQError(errno.EADDRINUSE)
    allow_ipv6(sock, endpoint)
    sock.bind(endpoint)


def ipc_in_use(path: str) -> bool:
    """Whether something listens on the Unix socket at path; a stale file, with nobody
    behind it, or no file at all, is not in use."""
    import socket  # here, as ipaddress above: only a server binding ipc:// asks this

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
