"""The Majordomo broker core on its own: no sockets, no clock, no sleeping.

Example tests pin single rules; a hypothesis state machine drives the core with random
sequences of client requests (every dialect), worker registrations, replies, heartbeats,
disconnections, deaths and clock steps, and checks its promises after every step.
"""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zmq_hello import majordomo, mdp
from zmq_hello.envelope import ERROR_PREFIX, MAX_FRAMES, Reply, Request, Unanswered, split_request
from zmq_hello.majordomo import HUNG, LEAVING, REGISTERED, SERVED, Handled, Majordomo, News
from zmq_hello.scheduler import Limits

HEARTBEAT = 1.0
NO_WORKER_TIMEOUT = 5.0
W02 = mdp.Framing(mdp.W02, True)
W01 = mdp.Framing(mdp.W01, True)
DIALECT_HEADS = {  # what an MDP client sends after its envelope, before the service
    "MDP/0.1": [b"MDPC01"],
    "RFC 18": [b"MDPC02", b"\x01"],
    "majortomo": [b"MDPC02", b"\x02"],
}


SMALL = Limits(per_queue=3, per_client=5, total=12)


def new_core(limits: Limits = SMALL) -> Majordomo:
    return Majordomo(b"hello", HEARTBEAT, NO_WORKER_TIMEOUT, limits, b"k.")


def frames_of(client: bytes, token: bytes, body: bytes, dialect: str | None, service: bytes):
    """What the frontend reads: the token in the envelope identifies the request."""
    if dialect is None:
        return [client, token, b"", body]
    return [client, token, b"", *DIALECT_HEADS[dialect], service, body]


def read(core: Majordomo, frames: list[bytes]) -> Request | Handled:
    """The front door, as the poll loop calls it."""
    return split_request(frames, 0.0) or majordomo.client_request(
        frames, len(frames), core.serves, MAX_FRAMES, 0.0
    )


def ready(core: Majordomo, now: float, address: bytes, service: bytes, framing=W02) -> None:
    """A worker registers; the HEARTBEAT the broker answers with at once is taken."""
    core.worker_message(now, [address, *mdp.build(framing, mdp.READY, service)], 4)
    core.to_workers.remove([address, *mdp.build(framing, mdp.HEARTBEAT)])


def sent(core: Majordomo, now: float = 0.0) -> list[list[bytes]]:
    core.flush(now)
    out, core.to_workers = core.to_workers, []
    return out


def test_the_core_imports_no_io_and_reads_no_clock():
    source = Path(majordomo.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"zmq", "time", "socket", "select", "selectors", "asyncio", "os"}
    assert "monotonic(" not in source and "time()" not in source
    # Nor does anything it imports bring in a socket library.
    code = "import sys, zmq_hello.majordomo; print('zmq' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], timeout=30) == b"False\n"


def test_a_request_goes_to_a_worker_and_its_final_to_the_client():
    core = new_core()
    ready(core, 0.0, b"w1", b"hello")
    request = read(core, frames_of(b"c1", b"t1", b"ping", None, b""))
    assert isinstance(request, Request)
    assert core.submit(0.0, request) is None
    [message] = sent(core)
    address, *rest = message
    parsed = mdp.parse(rest)
    assert (address, parsed.command, parsed.body) == (b"w1", mdp.REQUEST, [b"ping"])
    # Text, never a NUL: the guide's C++ worker reads this frame as a C string.
    assert b"\0" not in parsed.address and parsed.address.startswith(b"k.")
    core.worker_message(0.1, [b"w1", *mdp.build(W02, mdp.FINAL, parsed.address, b"pong")], 6)
    assert core.endings == [Reply([b"c1", b"t1", b""], b"pong", True, request)]
    assert core.news == [News(b"w1", REGISTERED), News(b"w1", SERVED)]


def test_the_addresses_given_to_workers_are_unique_text():
    core = new_core(Limits(per_queue=1000, per_client=1000, total=1000))
    ready(core, 0.0, b"w1", b"hello")
    keys = set()
    for n in range(300):
        request = read(core, frames_of(b"c1", b"t%d" % n, b"x", None, b""))
        core.submit(0.0, request)  # type: ignore[arg-type]
        [message] = sent(core)
        key = mdp.parse(message[1:]).address
        keys.add(key)
        assert key.isascii() and b"\0" not in key
        core.worker_message(0.0, [b"w1", *mdp.build(W02, mdp.FINAL, key, b"y")], 6)
    assert len(keys) == 300


def test_mmi_service_agrees_with_the_registered_workers():
    core = new_core()
    ask = frames_of(b"c1", b"t", b"echo", "MDP/0.1", b"mmi.service")
    assert read(core, ask).reply.body == b"404"  # type: ignore[union-attr]
    ready(core, 0.0, b"w1", b"echo")
    assert read(core, ask).reply.body == b"200"  # type: ignore[union-attr]
    other = frames_of(b"c1", b"t", b"x", "majortomo", b"mmi.nothing")
    assert read(core, other).reply.body == b"501"  # type: ignore[union-attr]


def test_mdp_clients_get_no_error_reply_and_plain_ones_do():
    core = new_core(Limits(per_queue=1, per_client=1, total=10))
    plain = [read(core, frames_of(b"c1", b"t%d" % n, b"x", None, b"")) for n in range(2)]
    mdp_client = [read(core, frames_of(b"c2", b"u%d" % n, b"x", "RFC 18", b"s")) for n in range(2)]
    assert core.submit(0.0, plain[0]) is None  # type: ignore[arg-type]
    error = core.submit(0.0, plain[1])  # type: ignore[arg-type]
    too_many = ERROR_PREFIX + b"too many requests from this client"
    assert error == Reply([b"c1", b"t1", b""], too_many, True, plain[1])  # type: ignore[arg-type]
    assert core.submit(0.0, mdp_client[0]) is None  # type: ignore[arg-type]
    ending = core.submit(0.0, mdp_client[1])  # type: ignore[arg-type]
    assert isinstance(ending, Unanswered) and ending.request is mdp_client[1]


def test_malformed_requests_are_logged_and_plain_ones_answered():
    core = new_core()
    handled = read(core, [b"c1", b"a", b"b"])  # an envelope without its delimiter
    assert isinstance(handled, Handled)
    assert handled.reply == Reply([b"c1"], ERROR_PREFIX + b"malformed request", True)
    assert handled.incident and handled.incident.kind == "malformed requests"
    handled = read(core, [b"c1", b"", b"MDPC02", b"\x09", b"s", b"x"])
    assert isinstance(handled, Handled) and handled.reply is None
    assert handled.incident and handled.incident.kind == "malformed MDP requests"


def test_a_request_whose_worker_dies_runs_once_more_then_fails():
    core = new_core()
    ready(core, 0.0, b"w1", b"hello")
    request = read(core, frames_of(b"c1", b"t", b"boom", None, b""))
    core.submit(0.0, request)  # type: ignore[arg-type]
    assert sent(core)[0][0] == b"w1"
    core.exited(1.0, b"w1", "signal 9")
    assert News(b"w1", HUNG) in core.news
    ready(core, 1.0, b"w2", b"hello")
    assert sent(core)[0][0] == b"w2"
    core.unreachable(2.0, [b"w2", *mdp.build(W02, mdp.HEARTBEAT)])
    failed = ERROR_PREFIX + b"worker failed"
    assert core.endings == [Reply([b"c1", b"t", b""], failed, True, request)]  # type: ignore[arg-type]


def test_a_worker_that_leaves_before_its_request_gives_it_back_with_no_mark():
    core = new_core()
    ready(core, 0.0, b"w1", b"hello")
    core.submit(0.0, read(core, frames_of(b"c1", b"t", b"x", None, b"")))  # type: ignore[arg-type]
    sent(core)
    core.worker_message(0.5, [b"w1", *mdp.build(W02, mdp.DISCONNECT)], 3)
    assert core.news[-1] == News(b"w1", LEAVING)
    for worker in (b"w2", b"w3"):  # two deaths after it: the first one counts as the first
        ready(core, 1.0, worker, b"hello")
        assert sent(core)[0][0] == worker
        core.exited(1.0, worker, "code 1")
    assert core.endings[-1].body == ERROR_PREFIX + b"worker failed"  # type: ignore[union-attr]


def test_a_request_for_a_service_nobody_serves_expires_at_its_timeout():
    core = new_core()
    request = read(core, frames_of(b"c1", b"t", b"x", "majortomo", b"nobody"))
    core.submit(10.0, request)  # type: ignore[arg-type]
    core.tick(10.0)
    core.tick(10.0 + NO_WORKER_TIMEOUT - 0.01)
    assert core.endings == []
    assert core.next_tick <= 10.0 + NO_WORKER_TIMEOUT
    core.tick(10.0 + NO_WORKER_TIMEOUT)
    assert core.endings == [Unanswered(request, "no worker for this service")]  # type: ignore[arg-type]
    assert core.expired == 1 and b"nobody" not in core.services


def test_an_idle_silent_worker_is_dead_and_a_busy_one_is_not():
    core = new_core()
    ready(core, 0.0, b"idle", b"hello")
    ready(core, 0.0, b"busy", b"echo")
    core.submit(0.0, read(core, frames_of(b"c", b"t", b"x", "RFC 18", b"echo")))  # type: ignore[arg-type]
    sent(core)
    core.tick(mdp.LIVENESS * HEARTBEAT + 0.5)
    assert set(core.workers) == {b"busy"}
    heartbeats = sent(core)
    assert [message[0] for message in heartbeats] == [b"busy"]
    assert mdp.parse(heartbeats[0][1:]).command == mdp.HEARTBEAT


def test_a_registration_is_answered_with_a_heartbeat_at_once():
    # A READY that waited in a worker's queue while the broker was down may come just
    # before the worker gives up on it: it hears the broker at once, and stays.
    core = new_core()
    frames = [b"w", *mdp.build(W01, mdp.READY, b"hello")]
    core.worker_message(0.0, frames, len(frames))
    assert core.to_workers == [[b"w", *mdp.build(W01, mdp.HEARTBEAT)]]


def test_strangers_and_mmi_registrations_get_disconnect():
    core = new_core()
    core.worker_message(0.0, [b"ghost", *mdp.build(W01, mdp.HEARTBEAT)], 4)
    core.worker_message(0.0, [b"w", *mdp.build(W02, mdp.READY, b"mmi.service")], 4)
    commands = [mdp.parse(message[1:]) for message in sent(core)]
    assert [(c.framing, c.command) for c in commands] == [
        (W01, mdp.DISCONNECT),
        (W02, mdp.DISCONNECT),
    ]
    assert not core.workers


def test_at_shutdown_what_no_worker_will_run_ends():
    core = new_core()
    mine = read(core, frames_of(b"c", b"t", b"x", None, b""))
    theirs = read(core, frames_of(b"c", b"u", b"x", "MDP/0.1", b"other"))
    core.submit(0.0, mine)  # type: ignore[arg-type]
    core.submit(0.0, theirs)  # type: ignore[arg-type]
    core.shut(local_may_come=True)
    assert core.endings == [Unanswered(theirs, "no worker available")]  # type: ignore[arg-type]
    core.shut(local_may_come=False)
    assert core.endings[-1].body == ERROR_PREFIX + b"no worker available"  # type: ignore[union-attr]


# The state machine ----------------------------------------------------------------

CLIENTS = [b"c1", b"c2", b"c3"]
SERVICES = [b"hello", b"echo", b"nobody"]
WORKERS = [b"w1", b"w2", b"w3", b"w4"]
FRAMINGS = [*mdp.FRAMINGS.values(), mdp.COMPACT]


class Tracked:
    """What the test knows of one request."""

    def __init__(self, request: Request, service: bytes, now: float) -> None:
        self.request = request
        self.service = service
        self.submitted = now
        self.started = 0  # times sent to a worker
        self.deaths = 0  # workers that died holding it
        self.finals = 0  # final endings
        self.ended_why = ""


class CoreMachine(RuleBasedStateMachine):
    """Random traffic into one core, checked against what the test saw it send."""

    def __init__(self) -> None:
        super().__init__()
        self.core = Majordomo(b"hello", HEARTBEAT, NO_WORKER_TIMEOUT, Limits(3, 6, 14), b"k.")
        self.now = 0.0
        self.tokens = 0
        self.tracked: dict[bytes, Tracked] = {}  # by token
        self.registered: dict[bytes, tuple[bytes, mdp.Framing]] = {}  # address: service
        self.held: dict[bytes, tuple[bytes, bytes]] = {}  # address: (key, token)
        self.orphaned_since: dict[bytes, float] = {}  # service: when it last had no worker
        # Fairness: for each (service, client), starts of other clients' new requests since
        # that client's oldest waiting request became its oldest.
        self.head: dict[tuple[bytes, bytes], bytes] = {}
        self.overtaken: dict[tuple[bytes, bytes], collections.Counter] = {}

    # Carrying out what the core decided, as the adapter does.

    def settle(self) -> None:
        core = self.core
        core.flush(self.now)
        for message in core.to_workers:
            address, *frames = message
            parsed = mdp.parse(frames)
            if parsed.command == mdp.REQUEST:
                assert address in self.registered, "a request sent to no registered worker"
                assert address not in self.held, "a worker given a second request at once"
                token = self.token_of_body(parsed.body[-1])
                self.held[address] = (parsed.address, token)
                self.started(token)
            elif parsed.command == mdp.DISCONNECT:
                self.registered.pop(address, None)
        core.to_workers.clear()
        for news in core.news:
            if news.event in (HUNG, LEAVING):
                self.lost_worker(news.address, died=news.event == HUNG)
        core.news.clear()
        for ending in core.endings:
            if isinstance(ending, Reply):
                token = ending.route[1]
                tracked = self.tracked[token]
                if ending.body.startswith(ERROR_PREFIX):
                    tracked.ended_why = ending.body[len(ERROR_PREFIX) :].decode()
            else:
                token = ending.request.route[1]
                tracked = self.tracked[token]
                tracked.ended_why = ending.why
            if isinstance(ending, Unanswered) or ending.final:
                tracked.finals += 1
                assert tracked.finals == 1, "a request answered twice"
                self.check_ending_rule(tracked)
        core.endings.clear()
        for tracked in self.tracked.values():
            # A second worker death ends the request: it never runs a third time.
            assert tracked.deaths < 2 or tracked.finals == 1, "a request re-run past two deaths"
        core.incidents.clear()
        for service in SERVICES:
            if not self.core.serves(service):
                self.orphaned_since.setdefault(service, self.now)
            else:
                self.orphaned_since.pop(service, None)
        self.update_heads()

    def token_of_body(self, body: bytes) -> bytes:
        return body.split(b":")[0]

    def started(self, token: bytes) -> None:
        tracked = self.tracked[token]
        tracked.started += 1
        if tracked.started > 1:
            return  # a re-run goes first by rule: not a turn taken from anyone
        client = tracked.request.client
        for (service, waiting_client), counts in self.overtaken.items():
            if service == tracked.service and waiting_client != client:
                counts[client] += 1
                assert counts[client] <= 1, "a client took two turns while another waited"

    def lost_worker(self, address: bytes, died: bool) -> None:
        self.registered.pop(address, None)
        if address in self.held:
            _, token = self.held.pop(address)
            if died:
                self.tracked[token].deaths += 1

    def check_ending_rule(self, tracked: Tracked) -> None:
        why = tracked.ended_why
        if why == "worker failed":
            assert tracked.deaths >= 2
        elif why == "no worker for this service":
            waited_from = max(tracked.submitted, self.orphaned_since.get(tracked.service, 0.0))
            assert self.now >= waited_from + NO_WORKER_TIMEOUT - 1e-9, "expired early"
        else:
            assert why in (
                "",
                "too many requests from this client",
                "server busy: too many requests waiting",
                "no worker available",
            ), why

    def waiting_tokens(self) -> dict[tuple[bytes, bytes], list[bytes]]:
        by_queue: dict[tuple[bytes, bytes], list[bytes]] = {}
        for service in self.core.services.values():
            for client, requests in service.scheduler.waiting.items():
                by_queue[service.name, client] = [r.route[1] for r in requests]
        return by_queue

    def update_heads(self) -> None:
        waiting = self.waiting_tokens()
        for key in list(self.head):
            if key not in waiting:
                del self.head[key], self.overtaken[key]
        for key, tokens in waiting.items():
            if self.head.get(key) != tokens[0]:
                self.head[key] = tokens[0]
                self.overtaken[key] = collections.Counter()

    # Clients.

    @rule(
        client=st.sampled_from(CLIENTS),
        dialect=st.sampled_from([None, "MDP/0.1", "RFC 18", "majortomo"]),
        service=st.sampled_from(SERVICES),
    )
    def request(self, client: bytes, dialect: str | None, service: bytes) -> None:
        self.tokens += 1
        token = b"t%d" % self.tokens
        request = read(self.core, frames_of(client, token, token + b":body", dialect, service))
        assert isinstance(request, Request)
        self.tracked[token] = Tracked(request, service if dialect else b"hello", self.now)
        ending = self.core.submit(self.now, request)
        if ending is not None:
            self.core.endings.append(ending)
        self.settle()

    @rule(service=st.sampled_from(SERVICES), dialect=st.sampled_from(["MDP/0.1", "majortomo"]))
    def ask_mmi(self, service: bytes, dialect: str) -> None:
        handled = read(self.core, frames_of(b"c9", b"m", service, dialect, b"mmi.service"))
        assert isinstance(handled, Handled) and handled.reply
        registered = any(s == service for s, _ in self.registered.values())
        assert handled.reply.body == (b"200" if registered else b"404")

    # Workers.

    @rule(
        address=st.sampled_from(WORKERS),
        service=st.sampled_from(SERVICES[:2]),
        framing=st.sampled_from(FRAMINGS),
    )
    def register(self, address: bytes, service: bytes, framing: mdp.Framing) -> None:
        was_registered = address in self.registered
        frames = [address, *mdp.build(framing, mdp.READY, service)]
        self.core.worker_message(self.now, frames, len(frames))
        if not was_registered:
            self.registered[address] = (service, framing)
        self.settle()  # READY again is unexpected: DISCONNECT, the worker forgotten

    @precondition(lambda self: self.held)
    @rule(data=st.data(), parts=st.integers(1, 3), partials=st.integers(0, 2))
    def reply(self, data: st.DataObject, parts: int, partials: int) -> None:
        address = data.draw(st.sampled_from(sorted(self.held)))
        key, token = self.held[address]
        _, framing = self.registered[address]
        body = [b"part"] * (parts - 1) + [token + b":reply"]
        if framing.header == mdp.W02:
            for _ in range(partials):
                frames = [address, *mdp.build(framing, mdp.PARTIAL, key, *body)]
                self.core.worker_message(self.now, frames, len(frames))
        frames = [address, *mdp.build(framing, mdp.FINAL, key, *body)]
        del self.held[address]
        self.core.worker_message(self.now, frames, len(frames))
        self.settle()
        assert self.tracked[token].finals == 1

    @precondition(lambda self: self.registered)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        address = data.draw(st.sampled_from(sorted(self.registered)))
        frames = [address, *mdp.build(self.registered[address][1], mdp.HEARTBEAT)]
        self.core.worker_message(self.now, frames, len(frames))
        self.settle()

    @precondition(lambda self: self.registered)
    @rule(data=st.data(), how=st.sampled_from(["disconnect", "exited", "unreachable", "forged"]))
    def leave(self, data: st.DataObject, how: str) -> None:
        address = data.draw(st.sampled_from(sorted(self.registered)))
        framing = self.registered[address][1]
        if how == "disconnect":
            frames = [address, *mdp.build(framing, mdp.DISCONNECT)]
            self.core.worker_message(self.now, frames, len(frames))
        elif how == "exited":
            self.core.exited(self.now, address, "signal 9")
        elif how == "unreachable":
            self.core.unreachable(self.now, [address, *mdp.build(framing, mdp.HEARTBEAT)])
        else:  # a reply for a request it does not hold
            frames = [address, *mdp.build(framing, mdp.FINAL, b"k.forged", b"", b"x")]
            self.core.worker_message(self.now, frames, len(frames))
        self.settle()
        assert address not in self.core.workers

    @rule(step=st.sampled_from([0.1, 0.5, 1.0, 2.5, 6.0]))
    def time_passes(self, step: float) -> None:
        self.now += step
        self.core.tick(self.now)
        self.settle()
        # An idle worker silent past its liveness is gone; the test's workers are silent.
        for worker in self.core.workers.values():
            assert worker.request is not None or self.now <= worker.expires + HEARTBEAT

    @rule()
    def shutdown_check(self) -> None:
        self.core.shut(local_may_come=False)
        self.settle()
        for service in self.core.services.values():
            assert service.workers or not service.scheduler.queued

    # What holds after every step.

    @invariant()
    def nothing_is_lost(self) -> None:
        waiting = {token for tokens in self.waiting_tokens().values() for token in tokens}
        held = {token for _, token in self.held.values()}
        assert not waiting & held
        for token, tracked in self.tracked.items():
            places = (token in waiting) + (token in held) + tracked.finals
            assert places == 1, (token, token in waiting, token in held, tracked.finals)

    @invariant()
    def a_busy_service_never_delays_another(self) -> None:
        for service in self.core.services.values():
            assert not (service.scheduler.free and service.scheduler.queued)

    @invariant()
    def the_core_agrees_with_the_workers_seen(self) -> None:
        assert set(self.core.workers) == set(self.registered)
        for address, (key, _) in self.held.items():
            assert self.core.workers[address].key == key
        assert self.core.backlog.total == sum(len(t) for t in self.waiting_tokens().values())


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
