"""Hostile peers that fill a server connection's pipe and then close it, as plain
functions: tests/test_abuse.py runs each once against a real server.py, bench/abuse.py
runs each many times.

libzmq 4.3.5 stops reading a connection whose pipe to the socket is full (RCVHWM). If the
peer then resets the connection (an RST: it closed with unread data, or data reached it
after it closed), the connection's engine notes an I/O error, and the next thing it has
to send (its own heartbeat PING, or the PONG to a PING the peer sent before closing)
trips `Assertion failed: !_io_error (src/stream_engine_base.cpp:310)`: SIGABRT, the
whole server gone. Each function here is one way to get there, bounded in messages and
seconds, on loopback; each returns once its peers are closed, and none raises because
the server died during the flood (the caller finds that out from the server).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zmq

LINGER_BEFORE_CLOSE = 1.0  # seconds the ZeroMQ peers wait after their last send, then close
CONNECT_TIMEOUT = 10.0  # for a connection (and its handshake) to come up


@dataclass(frozen=True)
class Curve:
    """A CURVE client's keys and the server's public key, as z85 bytes."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def from_files(cls, secret_file: str | Path, server_public_file: str | Path) -> Curve:
        """From make_keys.py's files: NAME.key_secret and the server's NAME.key."""
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(secret_file))
        server, _ = zmq.auth.load_certificate(str(server_public_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key")
        return cls(public, secret, server)

    def apply(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)


@contextmanager
def _peers(
    endpoint: str, count: int, curve: Curve | None = None, heartbeat_ms: int = 0
) -> Iterator[list[zmq.Socket]]:
    """count DEALERs connected to endpoint, each with its handshake done before they are
    yielded; a send never blocks (no send high-water mark); closed with linger 0."""
    context = zmq.Context()
    context.setsockopt(zmq.LINGER, 0)
    sockets: list[zmq.Socket] = []
    try:
        for _ in range(count):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # writable only once the connection is up
            if heartbeat_ms:  # PINGs, and no giving up on the PONGs: only the close ends it
                sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3_600_000)
            if curve is not None:
                curve.apply(sock)
            sock.connect(endpoint)
            sockets.append(sock)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        for sock in sockets:
            if not sock.poll(max(deadline - time.monotonic(), 0) * 1000, zmq.POLLOUT):
                raise TimeoutError(f"no connection to {endpoint} in {CONNECT_TIMEOUT} s")
        yield sockets
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


def made_up_services(requests: int, services: int) -> Iterator[list[bytes]]:
    """RFC 18 client requests, `[b"MDPC02", REQUEST, service, body]`, for `services`
    service names nobody serves, round robin."""
    for n in range(requests):
        yield [b"MDPC02", b"\x01", b"made-up-%d" % (n % services), b"x"]


def mdp_service_flood(
    endpoint: str,
    requests: int = 13_000,
    services: int = 2_000,
    curve: Curve | None = None,
    heartbeat_ms: int = 0,
    wait: float = LINGER_BEFORE_CLOSE,
) -> None:
    """One DEALER sends `requests` RFC 18 requests for `services` made-up service names,
    waits `wait` seconds, closes. A broker (server.py --backend) queues them all for a
    worker that never comes; the old one stopped reading at 10,000, and the connection's
    pipe filled. heartbeat_ms: libzmq heartbeats on the DEALER (its I/O thread's PINGs
    among the requests, each owed a PONG)."""
    with _peers(endpoint, 1, curve, heartbeat_ms) as (peer,):
        for frames in made_up_services(requests, services):
            peer.send_multipart(frames)
        time.sleep(wait)


def mdp_service_stream(
    endpoint: str, seconds: float, services: int = 2_000, curve: Curve | None = None
) -> int:
    """mdp_service_flood for `seconds` without a pause, as fast as the server takes them:
    sends block at the DEALER's high-water mark (1000), so a server that stops reading
    costs this peer no memory. Returns how many requests it sent; closes at once."""
    context = zmq.Context()
    sent = 0
    try:
        peer = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 0)
        peer.setsockopt(zmq.SNDTIMEO, 100)  # so that the deadline is kept while blocked
        if curve is not None:
            curve.apply(peer)
        peer.connect(endpoint)
        end = time.monotonic() + seconds
        requests = made_up_services(2**62, services)
        frames = next(requests)
        while time.monotonic() < end:
            try:
                peer.send_multipart(frames)
            except zmq.Again:
                continue
            sent += 1
            frames = next(requests)
    finally:
        context.destroy(linger=0)
    return sent


def unread_flood(
    endpoint: str,
    clients: int = 20,
    requests: int = 5_000,
    body: bytes = b"65536",
    curve: Curve | None = None,
    wait: float = LINGER_BEFORE_CLOSE,
) -> None:
    """`clients` DEALERs each send `requests` one-frame requests and never read a reply,
    wait `wait` seconds, close. body b"65536" asks tests/sample_handlers.py's big for a
    64 KiB reply: replies pile up unread, so each close is a reset."""
    with _peers(endpoint, clients, curve) as peers:
        for peer in peers:
            for _ in range(requests):
                peer.send(body)
        time.sleep(wait)


# A raw ZMTP 3.1 peer (ZeroMQ RFC 23 and RFC 37), so that PING commands go exactly where
# they do harm, among the messages that fill the pipe, and the close is a reset for sure.


def command(name: bytes, data: bytes = b"") -> bytes:
    """A ZMTP command frame (short: its body under 256 bytes)."""
    body = bytes([len(name)]) + name + data
    return bytes([0x04, len(body)]) + body


def message(*frames: bytes) -> bytes:
    """A ZMTP message: its frames, each flagged MORE but the last."""
    encoded = b""
    for n, frame in enumerate(frames):
        more = 0x01 if n < len(frames) - 1 else 0x00
        if len(frame) < 256:
            encoded += bytes([more, len(frame)]) + frame
        else:
            encoded += bytes([more | 0x02]) + struct.pack(">Q", len(frame)) + frame
    return encoded


ZMTP31_NULL_GREETING = (
    b"\xff" + bytes(8) + b"\x7f"  # signature
    + b"\x03\x01"  # version 3.1: the one with PING and PONG
    + b"NULL".ljust(20, b"\0")  # mechanism
    + b"\x00"  # as-server: no
    + bytes(31)  # filler
)  # fmt: skip
READY_DEALER = command(b"READY", b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER")
PING = command(b"PING", struct.pack(">H", 0))  # TTL 0, no context
MDP_WORKER_HEARTBEAT = message(b"MDPW02", b"\x05")


def mdp_worker_ready(service: bytes) -> bytes:
    return message(b"MDPW02", b"\x01", service)


def raw_ping_fill(
    port: int,
    rounds: int = 3,
    payload: bytes = message(b"x"),
    first: bytes = b"",
    messages: int = 200_000,
    ping_every: int = 50,
    wait: float = 0.0,
    seconds: float = 10.0,
    host: str = "127.0.0.1",
) -> int:
    """`rounds` times, one after the other: a raw TCP peer speaking ZMTP 3.1 (NULL
    mechanism, READY as a DEALER) sends `first`, then `messages` copies of `payload` (a
    one-byte message, by default) with a PING command after every `ping_every` (0: none),
    never reading past the greeting; it stops early once the server has taken nothing
    for a second (its pipe full, and its input stopped for good) or after `seconds` (a
    server that reads slowly paces it), waits `wait` seconds and resets the connection
    (SO_LINGER 0): by default at once, while the server's pipe is surely full (after
    0.2 s the old server had at times drained it: 15 to 19 aborts in 20, against 60 in
    60). No heartbeat option is needed on the server: the PONG it owes is what it then
    tries to send. Returns the rounds done."""
    per_ping = payload * ping_every + PING if ping_every else payload * 50
    per_chunk = (ping_every or 50) * 100
    chunk = per_ping * 100
    for done in range(rounds):
        try:
            conn = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except ConnectionRefusedError:
            return done  # the server is gone
        try:
            conn.sendall(ZMTP31_NULL_GREETING)
            greeting = _read_exactly(conn, 64)
            if greeting[:1] != b"\xff" or greeting[10] != 3:
                raise ConnectionError(f"not a ZMTP 3 greeting: {greeting!r}")
            conn.sendall(READY_DEALER + first)
            _send(conn, chunk, -(-messages // per_chunk), 1.0, time.monotonic() + seconds)
            time.sleep(wait)
        except (ConnectionResetError, BrokenPipeError):
            return done  # the server is gone, or dropped the connection
        finally:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
    return rounds


def raw_worker_flood(
    port: int, rounds: int = 3, service: bytes = b"flood", messages: int = 200_000
) -> int:
    """raw_ping_fill on a broker's backend, as an MDP worker: READY for service, then
    HEARTBEATs with PINGs among them, then a reset."""
    return raw_ping_fill(
        port,
        rounds,
        payload=MDP_WORKER_HEARTBEAT,
        first=mdp_worker_ready(service),
        messages=messages,
    )


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError(f"closed by the server after {len(data)} of {size} bytes")
        data += chunk
    return data


def _send(conn: socket.socket, chunk: bytes, chunks: int, stall: float, end: float) -> None:
    """Send chunk `chunks` times, or fewer if the peer takes nothing for `stall` seconds
    or the clock passes `end`."""
    conn.setblocking(False)
    for _ in range(chunks):
        pending = memoryview(chunk)
        while pending:
            if time.monotonic() > end:
                return
            _, writable, _ = select.select([], [conn], [], stall)
            if not writable:
                return
            try:
                pending = pending[conn.send(pending) :]
            except BlockingIOError:
                continue
