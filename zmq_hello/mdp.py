"""Majordomo (MDP) framing, with no sockets: worker messages parsed and built, and client
requests recognised in each of the three dialects in use.

Workers. Two versions are spoken, and a worker is answered in the one it used:
- MDP/0.1 (ZeroMQ RFC 7, the guide's mdwrkapi in every language): header b"MDPW01";
  READY 1, REQUEST 2, REPLY 3, HEARTBEAT 4, DISCONNECT 5.
- MDP/0.2 (ZeroMQ RFC 18, majortomo): header b"MDPW02"; READY 1, REQUEST 2, PARTIAL 3,
  FINAL 4, HEARTBEAT 5, DISCONNECT 6.

Implementations differ on the leading empty frame (the guide's and majortomo's send it,
RFC 18's text shows none), so parse() accepts either and reports which, and build()
puts it back. Commands are named by the 0.2 names; 0.1's REPLY is FINAL. server.py's
own local workers (--processes) speak MDP/0.2 compact: without the empty frame and the
header, the command first ([2, client_address, b"", *body]); a header is never one byte
long, so parse() tells it apart.

    READY       [header, 1, service]
    REQUEST     [header, 2, client_address, b"", *body]      broker -> worker
    PARTIAL     [header, 3, client_address, b"", *body]      worker -> broker (0.2)
    FINAL       [header, 4, client_address, b"", *body]      worker -> broker
    HEARTBEAT   [header, 5]
    DISCONNECT  [header, 6]

Clients. What a ROUTER receives after the routing id, and the reply's first frames:
- MDP/0.1 (RFC 7; the guide's mdcliapi on REQ, mdcliapi2 on DEALER): [b"", b"MDPC01",
  service, *body]; replied [b"", b"MDPC01", service, *reply]. No PARTIAL.
- MDP/0.2 as RFC 18 writes it: [b"MDPC02", 1 REQUEST, service, *body]; replied
  [b"MDPC02", 2 PARTIAL or 3 FINAL, service, *reply].
- MDP/0.2 as majortomo 0.2.0 speaks it, with the worker codes: [b"", b"MDPC02",
  2 REQUEST, service, *body]; replied [b"", b"MDPC02", 3 PARTIAL or 4 FINAL, *reply],
  with no service frame.
The frames before the header (none, REQ's b"", client.py's [token, b""]) are an envelope,
returned as they came; the code after b"MDPC02" tells its two dialects apart.
"""

from __future__ import annotations

from typing import NamedTuple

from zmq_hello.deadlines import NO_DEADLINE, from_call_frame
from zmq_hello.envelope import (
    MDP_CLIENT_HEADERS,
    MDPC01,
    MDPC02,
    Dialect,
    Request,
    construct,
)

DEFAULT_SERVICE = "hello"  # the service worker.py registers for, and server.py's plain one
DEFAULT_HEARTBEAT = 2.5  # seconds between MDP heartbeats: the guide's and majortomo's
LIVENESS = 3  # heartbeat intervals of silence after which a peer counts as gone
MAX_SERVICE_BYTES = 255  # RFC 7 and 18: a service name is a short string
MMI_PREFIX = b"mmi."  # RFC 8: the broker's own services
MMI_SERVICE = b"mmi.service"

W01, W02 = b"MDPW01", b"MDPW02"
READY, REQUEST, PARTIAL, FINAL, HEARTBEAT, DISCONNECT = (
    "READY",
    "REQUEST",
    "PARTIAL",
    "FINAL",
    "HEARTBEAT",
    "DISCONNECT",
)
CODES = {
    W01: {
        READY: b"\x01",
        REQUEST: b"\x02",
        FINAL: b"\x03",
        HEARTBEAT: b"\x04",
        DISCONNECT: b"\x05",
    },
    W02: {
        READY: b"\x01",
        REQUEST: b"\x02",
        PARTIAL: b"\x03",
        FINAL: b"\x04",
        HEARTBEAT: b"\x05",
        DISCONNECT: b"\x06",
    },
}
COMMANDS = {header: {code: name for name, code in codes.items()} for header, codes in CODES.items()}
VERSIONS = {W01: "MDP/0.1", W02: "MDP/0.2"}
CARRY_BODY = {REQUEST, PARTIAL, FINAL}  # [client_address, b"", *body] follows the command


class Framing(NamedTuple):
    """How a peer speaks: its protocol header, and whether it sends the empty frame.
    compact: MDP/0.2 with neither, the command first, as server.py's own local workers
    speak it over their private socket (two frames fewer each way, for every request)."""

    header: bytes = W02
    empty_first: bool = True
    compact: bool = False

    def __str__(self) -> str:
        if self.compact:
            return "MDP/0.2, compact"
        return VERSIONS[self.header] + ("" if self.empty_first else " without the empty frame")


FRAMINGS = {(header, empty): Framing(header, empty) for header in CODES for empty in (True, False)}
COMPACT = Framing(W02, False, True)


class Message(NamedTuple):
    """One parsed worker message: how it was framed, its command, and its frames."""

    framing: Framing
    command: str
    address: bytes  # REQUEST, PARTIAL, FINAL: the client's address; READY: the service
    body: list[bytes]


class ProtocolError(ValueError):
    """Not a valid MDP worker message; the text says why, for a log line."""


def parse(frames: list[bytes]) -> Message:
    """A worker message as it arrives (after any routing id), or ProtocolError."""
    if frames and len(frames[0]) == 1:  # compact: the command first (a header is longer)
        framing = COMPACT
        header, (code, *args) = W02, frames
    else:
        empty_first = bool(frames) and frames[0] == b""
        rest = frames[1:] if empty_first else frames
        if len(rest) < 2:
            raise ProtocolError(f"{len(frames)} frames, too few for MDP")
        header, code, *args = rest
        if header not in CODES:
            raise ProtocolError(f"unknown protocol header {header[:16]!r}")
        framing = FRAMINGS[header, empty_first]
    command = COMMANDS[header].get(code)
    if command is None:
        raise ProtocolError(f"unknown {VERSIONS[header]} command {code[:8]!r}")
    if command in CARRY_BODY:
        if len(args) < 3 or args[1] != b"":
            raise ProtocolError(f"{command} without [address, empty frame, body]")
        return construct(Message, (framing, command, args[0], args[2:]))  # the hot path
    if command == READY:
        if len(args) != 1 or not args[0]:
            raise ProtocolError("READY without a service name")
        return Message(framing, command, args[0], [])
    if args:
        raise ProtocolError(f"{command} with {len(args)} unexpected frames")
    return Message(framing, command, b"", [])


def head(framing: Framing, command: str) -> list[bytes]:
    """A command's first frames in framing's version: all that comes before its own."""
    if framing.compact:
        return [CODES[framing.header][command]]
    return [b""] * framing.empty_first + [framing.header, CODES[framing.header][command]]


def carried(frames: list[bytes], first: list[bytes]) -> tuple[bytes, list[bytes]] | None:
    """(address, body) of [*first, address, b"", *body] with a body, where first is a
    head() of REQUEST, PARTIAL or FINAL; None for anything else, which parse() tells
    apart: a worker's check of each REQUEST, without parse()'s Message (the broker has
    its own for FINAL, in majordomo.py)."""
    at = len(first)
    if frames[:at] == first and len(frames) > at + 2 and frames[at + 1] == b"":
        return frames[at], frames[at + 2 :]
    return None


def build(framing: Framing, command: str, address: bytes = b"", *body: bytes) -> list[bytes]:
    """A message in framing's version; address and body as parse() returns them."""
    frames = head(framing, command)
    if command in CARRY_BODY:
        frames += [address, b"", *body]
    elif command == READY:
        frames.append(address)
    return frames


# Clients ------------------------------------------------------------------------------


MDP01 = Dialect("MDP/0.1", MDPC01, b"", None, b"", True)
RFC18 = Dialect("MDP/0.2 (RFC 18)", MDPC02, b"\x01", b"\x02", b"\x03", True)
MAJORTOMO = Dialect("MDP/0.2 (majortomo)", MDPC02, b"\x02", b"\x03", b"\x04", False)
DIALECTS_02 = {RFC18.request: RFC18, MAJORTOMO.request: MAJORTOMO}


def client_request(frames: list[bytes], now: float) -> Request | None:
    """An MDP client's request from what the frontend received at now ([routing_id, ...]): a
    Request whose route carries the reply's MDP frames; None if the frames are not MDP
    at all; ProtocolError if they are MDP but malformed."""
    count = len(frames)
    if frames[1] in MDP_CLIENT_HEADERS:
        start = 1
    else:
        try:
            start = frames.index(b"", 1) + 1  # the envelope's delimiter
        except ValueError:
            return None
        # A header as the last frame is a plain request's body: "MDPC01" is a fine one.
        if start >= count - 1 or frames[start] not in MDP_CLIENT_HEADERS:
            return None
    at = start + 1  # the frame after the header
    if frames[start] == MDPC01:
        dialect = MDP01
        route = frames[:at]
    else:
        if at == count:
            raise ProtocolError("MDP/0.2 request without a command")
        found = DIALECTS_02.get(frames[at])
        if found is None:
            raise ProtocolError(f"unknown MDP/0.2 client command {frames[at][:8]!r}")
        dialect = found
        route = frames[:start]
        route += (MDPC02, dialect.final)  # the reply's head: as reply_head() makes it
        at += 1
    if at == count:
        raise ProtocolError(f"{dialect.name} request without a service frame")
    service = frames[at]
    if not 1 <= len(service) <= MAX_SERVICE_BYTES:
        raise ProtocolError(f"{dialect.name} request for a service of {len(service)} bytes")
    if at + 1 == count:
        raise ProtocolError(f"{dialect.name} request without a body")
    if dialect.service_in_reply:
        route.append(service)
    body_head = tuple(frames[at + 1 : -1]) if count > at + 2 else ()
    # client.py's call frame ([routing_id, call frame, b"", header, ...]) may carry a deadline.
    deadline = from_call_frame(frames[1], now) if start == 3 else NO_DEADLINE
    # Fields in order: route, body, service, dialect, body_head, deadline, received.
    return construct(Request, (route, frames[-1], service, dialect, body_head, deadline, now))
