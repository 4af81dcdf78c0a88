"""What a request and its ending are, with no sockets: the frames a ROUTER receives split
into the route (routing id and envelope) and the body; a Reply, or, for an MDP client
that gets none, Unanswered; and bytes shown in a log line.

The route goes back unchanged in front of the reply, so every client kind is answered:
a DEALER's envelope is empty, REQ's is [b""], and client.py's is [token, b""]. An MDP
client's route also carries its reply's MDP frames (mdp.client_request builds it).
"""

from __future__ import annotations

from typing import NamedTuple

from zmq_hello.deadlines import (
    CALL_FRAME_BYTES,
    MARK,
    NO_DEADLINE,
    PASSED,
    unpack_call_frame,
)

MAX_FRAMES = 16  # routing id + envelope + body; real envelopes have 0 to 4 frames
LOG_BODY_BYTES = 60
ERROR_PREFIX = b"ERROR: "
# The protocol headers of MDP clients (RFC 7, RFC 18): a request with one after its
# envelope and before its body is MDP's (mdp.client_request), never a plain one.
MDPC01, MDPC02 = b"MDPC01", b"MDPC02"
MDP_CLIENT_HEADERS = frozenset((MDPC01, MDPC02))

# Builds a Request or a Reply from a tuple of all its fields without calling the
# NamedTuple's generated __new__, a Python function: on the hot path that frame cost
# more than everything else a reply is (callgrind: 2k instructions of 50k a request).
# Used where a Request is made on a hot path (split_request() below, for a plain client;
# mdp.client_request(), for an MDP one), each naming its fields in order beside it, and
# where a Reply (route, body, final, request) is.
construct = tuple.__new__


class Dialect(NamedTuple):
    """How one kind of MDP client frames its requests and expects its replies (the three
    in use are mdp.MDP01, mdp.RFC18 and mdp.MAJORTOMO)."""

    name: str
    header: bytes
    request: bytes  # the command code after the header; b"" where there is none (0.1)
    partial: bytes | None  # None: the dialect has no PARTIAL, only the final reply goes out
    final: bytes
    service_in_reply: bool

    def reply_head(self, service: bytes, final: bool = True) -> list[bytes]:
        """The frames of a reply between the envelope and the body."""
        head = [self.header]
        if self.request:
            head.append(self.final if final else self.partial or b"")
        if self.service_in_reply:
            head.append(service)
        return head

    def partial_route(self, request: Request) -> list[bytes] | None:
        """Where a PARTIAL reply to request goes (None: nowhere, 0.1 has none)."""
        if self.partial is None:
            return None
        final_head = len(self.reply_head(request.service))
        return request.route[:-final_head] + self.reply_head(request.service, final=False)


class Request(NamedTuple):
    """A client's request, as the poll loop hands it to a runner."""

    route: list[bytes]  # [routing_id, *envelope]: returned in front of the reply
    body: bytes
    service: bytes = b""  # an MDP client's; b"" for a plain client's: the server's own
    dialect: Dialect | None = None  # an MDP client's framing; None for a plain client
    body_head: tuple[bytes, ...] = ()  # an MDP request's body frames before the last
    # When its caller gives up (time.monotonic()); deadlines.NO_DEADLINE if it carries none.
    deadline: float = NO_DEADLINE
    received: float = 0.0  # when the server read it (time.monotonic()): where its time starts

    @property
    def client(self) -> bytes:
        """Whose request it is, for fair turns: the connection's routing id."""
        return self.route[0]


class Reply(NamedTuple):
    """A reply on its way back to the client whose route it carries."""

    route: list[bytes]
    body: bytes
    final: bool = True  # False for a worker's PARTIAL: more replies to the request follow
    request: Request | None = None  # the request it answers; None for the front door's own


def reply(
    route: list[bytes], body: bytes, final: bool = True, request: Request | None = None
) -> Reply:
    """Reply(route, body, final, request), at the cost of a tuple: every answer's hot path."""
    return construct(Reply, (route, body, final, request))


class Unanswered(NamedTuple):
    """A request that ends with nothing sent: an MDP client's that the server cannot
    answer, since MDP has no error reply (the client's own timeout ends its wait)."""

    request: Request
    why: str


class Expired(NamedTuple):
    """A request whose caller's deadline passed before a handler could start it (or so
    near that its answer would come too late: deadlines.Pace): not run, and nothing sent,
    since nobody waits for a reply."""

    request: Request
    service: bytes  # the service it asked for: the server's own for a plain client's


Ending = Reply | Unanswered | Expired  # what becomes of a request, as a runner hands it back


def split_request(frames: list[bytes], now: float) -> Request | None:
    """[routing_id, *envelope, body], read at now, as a plain client's Request; None if it
    is not one (malformed, or an MDP client's request: see mdp.client_request). A call
    frame's deadline (zmq_hello.deadlines) starts now.

    A non-empty envelope must end in the empty delimiter, as REQ and client.py send it,
    and hold no MDP client header: with one, the frames after it are MDP's.
    """
    if not 2 <= len(frames) <= MAX_FRAMES:
        return None
    *route, body = frames
    if len(route) > 1:
        if route[-1] or not MDP_CLIENT_HEADERS.isdisjoint(route):
            return None
        if len(route) == 3 and len(call := route[1]) == CALL_FRAME_BYTES:  # client.py's
            # deadlines.from_call_frame(), spelled out: a call costs 10 % of what this does.
            mark, ms = unpack_call_frame(call)
            if mark == MARK:
                deadline = now + ms * 0.001 if ms else PASSED
                return construct(Request, (route, body, b"", None, (), deadline, now))
    # Fields in order: route, body, service, dialect, body_head, deadline, received.
    return construct(Request, (route, body, b"", None, (), NO_DEADLINE, now))


def printable(data: bytes, limit: int = LOG_BODY_BYTES) -> str:
    """Bytes as one line of log text: escaped where not plain text, cut at limit."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    if len(data) > limit:
        text += f"... ({len(data)} bytes)"
    return text
