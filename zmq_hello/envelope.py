"""What a request and a reply are, with no sockets: the frames a ROUTER receives split
into the route (routing id and envelope) and the body, and bytes shown in a log line.

The route goes back unchanged in front of the reply, so every client kind is answered:
a DEALER's envelope is empty, REQ's is [b""], and client.py's is [token, b""].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from zmq_hello.mdp import Dialect

MAX_FRAMES = 16  # routing id + envelope + body; real envelopes have 0 to 4 frames
LOG_BODY_BYTES = 60
ERROR_PREFIX = b"ERROR: "
# An MDP client's request has one of these after its envelope (if any) and before its
# body: a request with one is MDP's (mdp.client_request), never a plain one.
MDP_CLIENT_HEADERS = frozenset((b"MDPC01", b"MDPC02"))

# Builds a Request or a Reply from a tuple of all its fields without calling the
# NamedTuple's generated __new__, a Python function: on the hot path that frame cost
# more than everything else a reply is (callgrind: 2k instructions of 50k a request).
construct = tuple.__new__


class Request(NamedTuple):
    """A client's request, as the poll loop hands it to a runner."""

    route: list[bytes]  # [routing_id, *envelope]: returned in front of the reply
    body: bytes
    worker_died: bool = False  # a worker process died holding it once already
    service: bytes = b""  # an MDP client's; b"" for a plain client's: the server's own
    dialect: Dialect | None = None  # an MDP client's framing; None for a plain client
    body_head: tuple[bytes, ...] = ()  # an MDP request's body frames before the last

    @property
    def client(self) -> bytes:
        """Whose request it is, for fair turns: the connection's routing id."""
        return self.route[0]


class Reply(NamedTuple):
    """A reply on its way back to the client whose route it carries."""

    route: list[bytes]
    body: bytes
    final: bool = True  # False for a worker's PARTIAL: more replies to the request follow


def split_request(frames: list[bytes]) -> Request | None:
    """[routing_id, *envelope, body] as a plain client's Request; None if it is not one
    (malformed, or an MDP client's request: see mdp.client_request).

    A non-empty envelope must end in the empty delimiter, as REQ and client.py send it,
    and hold no MDP client header: with one, the frames after it are MDP's.
    """
    if not 2 <= len(frames) <= MAX_FRAMES:
        return None
    *route, body = frames
    if len(route) > 1 and (route[-1] or not MDP_CLIENT_HEADERS.isdisjoint(route)):
        return None
    return construct(Request, (route, body, False, b"", None, ()))


# A request that ends with nothing sent: an MDP client's, since MDP has no error reply
# (the client's own timeout ends its wait). The loop counts it as answered no further.
UNANSWERED: list[bytes] = []


def error_reply(request: Request, why: str) -> Reply:
    """What ends a request the server cannot answer: ERROR: why, for a plain client; for
    an MDP client, a Reply with no route, which sends nothing."""
    route = UNANSWERED if request.dialect else request.route
    return Reply(route, ERROR_PREFIX + why.encode())


def printable(data: bytes, limit: int = LOG_BODY_BYTES) -> str:
    """Bytes as one line of log text: escaped where not plain text, cut at limit."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    if len(data) > limit:
        text += f"... ({len(data)} bytes)"
    return text
