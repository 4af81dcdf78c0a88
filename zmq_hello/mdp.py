"""Majordomo (MDP) worker framing, with no sockets: parse and build worker messages.

Two versions are spoken, and a worker is answered in the one it used:
- MDP/0.1 (ZeroMQ RFC 7, the guide's mdwrkapi in every language): header b"MDPW01";
  READY 1, REQUEST 2, REPLY 3, HEARTBEAT 4, DISCONNECT 5.
- MDP/0.2 (ZeroMQ RFC 18, majortomo): header b"MDPW02"; READY 1, REQUEST 2, PARTIAL 3,
  FINAL 4, HEARTBEAT 5, DISCONNECT 6.

Implementations differ on the leading empty frame (the guide's and majortomo's send it,
RFC 18's text shows none), so parse() accepts either and reports which, and build()
puts it back. Commands are named by the 0.2 names; 0.1's REPLY is FINAL.

    READY       [header, 1, service]
    REQUEST     [header, 2, client_address, b"", *body]      broker -> worker
    PARTIAL     [header, 3, client_address, b"", *body]      worker -> broker (0.2)
    FINAL       [header, 4, client_address, b"", *body]      worker -> broker
    HEARTBEAT   [header, 5]
    DISCONNECT  [header, 6]
"""

from __future__ import annotations

from typing import NamedTuple

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
    """How a peer speaks: its protocol header, and whether it sends the empty frame."""

    header: bytes = W02
    empty_first: bool = True

    def __str__(self) -> str:
        return VERSIONS[self.header] + ("" if self.empty_first else " without the empty frame")


FRAMINGS = {(header, empty): Framing(header, empty) for header in CODES for empty in (True, False)}


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
    empty_first = bool(frames) and frames[0] == b""
    rest = frames[1:] if empty_first else frames
    if len(rest) < 2:
        raise ProtocolError(f"{len(frames)} frames, too few for MDP")
    header, code, *args = rest
    if header not in CODES:
        raise ProtocolError(f"unknown protocol header {header[:16]!r}")
    command = COMMANDS[header].get(code)
    if command is None:
        raise ProtocolError(f"unknown {VERSIONS[header]} command {code[:8]!r}")
    framing = FRAMINGS[header, empty_first]
    if command in CARRY_BODY:
        if len(args) < 3 or args[1] != b"":
            raise ProtocolError(f"{command} without [address, empty frame, body]")
        return Message(framing, command, args[0], args[2:])
    if command == READY:
        if len(args) != 1 or not args[0]:
            raise ProtocolError("READY without a service name")
        return Message(framing, command, args[0], [])
    if args:
        raise ProtocolError(f"{command} with {len(args)} unexpected frames")
    return Message(framing, command, b"", [])


def build(framing: Framing, command: str, address: bytes = b"", *body: bytes) -> list[bytes]:
    """A message in framing's version; address and body as parse() returns them."""
    frames = [b""] if framing.empty_first else []
    frames += [framing.header, CODES[framing.header][command]]
    if command in CARRY_BODY:
        frames += [address, b"", *body]
    elif command == READY:
        frames.append(address)
    return frames
