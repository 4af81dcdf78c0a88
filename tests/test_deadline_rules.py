"""The deadline rules, in-process with no sockets: the call frame and the worker's
address that carry a deadline (zmq_hello.deadlines), what a handler sees, the pace that
decides whether a waiting request is still worth a worker, and the broker core's use of
them (majordomo.py)."""

from __future__ import annotations

import pytest

from zmq_hello import deadlines, mdp
from zmq_hello.deadlines import NO_DEADLINE, Pace
from zmq_hello.envelope import Expired, Reply, split_request
from zmq_hello.majordomo import Majordomo
from zmq_hello.scheduler import Limits

TOKEN = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def test_a_call_frame_carries_milliseconds_from_when_it_is_read():
    frame = deadlines.call_frame(TOKEN, 0.25)
    assert deadlines.from_call_frame(frame, 100.0) == 100.25
    assert deadlines.token_of(frame) == TOKEN
    assert deadlines.token_of(TOKEN) == TOKEN


@pytest.mark.parametrize(
    "frame",
    [TOKEN, b"", b"x" * 16, TOKEN + b"zhDL" + b"\x00" * 3, TOKEN + b"zhdl" + b"\x00" * 4],
)
def test_other_frames_carry_no_deadline(frame):
    assert deadlines.from_call_frame(frame, 0.0) == NO_DEADLINE


def test_a_wait_too_long_for_four_bytes_travels_as_the_longest():
    assert deadlines.call_frame(TOKEN, 1e9)[-4:] == b"\xff\xff\xff\xff"
    assert deadlines.call_frame(TOKEN, -1.0)[-4:] == b"\x00\x00\x00\x00"


def test_split_request_reads_the_deadline_of_client_py_framing_only():
    frame = deadlines.call_frame(TOKEN, 1.0)
    assert split_request([b"id", frame, b"", b"body"], 0.0).deadline < NO_DEADLINE  # type: ignore[union-attr]
    assert split_request([b"id", TOKEN, b"", b"body"], 0.0).deadline == NO_DEADLINE  # type: ignore[union-attr]
    assert split_request([b"id", b"", b"body"], 0.0).deadline == NO_DEADLINE  # type: ignore[union-attr]
    assert split_request([b"id", frame, frame, b"", b"x"], 0.0).deadline == NO_DEADLINE  # type: ignore[union-attr]


def test_mdp_client_requests_behind_a_call_frame_carry_its_deadline():
    frame = deadlines.call_frame(TOKEN, 1.0)
    request = mdp.client_request([b"id", frame, b"", b"MDPC02", b"\x01", b"svc", b"x"], 0.0)
    assert request is not None and request.deadline < NO_DEADLINE
    request = mdp.client_request([b"id", b"MDPC02", b"\x01", b"svc", b"x"], 0.0)
    assert request is not None and request.deadline == NO_DEADLINE


@pytest.mark.parametrize(
    "address, carries",
    [
        (b"3f9a01c2.1b+480", True),
        (b"3f9a01c2.1b", False),
        (b"\x00\x12\x34\x56\x78", False),  # a client's routing id, from another broker
        (b"host/12+480", False),
        (b"3f9a01c2.1b+48x", False),
    ],
)
def test_a_worker_reads_a_deadline_only_from_server_py_addresses(address, carries):
    deadline = deadlines.from_address(address)
    assert (deadline is not None) == carries
    if carries:
        assert deadline == pytest.approx(deadlines.monotonic() + 0.48, abs=0.05)


def test_time_remaining_outside_a_handler_is_none_and_never_below_zero():
    assert deadlines.time_remaining() is None
    deadlines.this_slot().deadline = deadlines.monotonic() - 1
    try:
        assert deadlines.time_remaining() == 0.0
    finally:
        deadlines.this_slot().deadline = deadlines.NO_DEADLINE


def test_pace_learns_the_handlers_time_and_starts_only_what_can_finish():
    pace = Pace()
    assert pace.worth_starting(10.001, 10.0)  # nothing timed yet: any time left will do
    assert not pace.worth_starting(10.0, 10.0)
    for _ in range(40):
        pace.timed(0.1)
    assert pace.mean == pytest.approx(0.1, rel=0.01)
    assert pace.worth_starting(10.2, 10.0)
    assert not pace.worth_starting(10.12, 10.0)  # less than HEADROOM x 0.1 s left


# The broker core ------------------------------------------------------------------------


def core_with_worker(prefix: bytes = b"0123abcd.") -> Majordomo:
    core = Majordomo(b"hello", 1.0, 5.0, Limits(), prefix)
    core.worker_message(0.0, [b"w1", *mdp.build(mdp.Framing(), mdp.READY, b"hello")], 4)
    core.to_workers.remove([b"w1", *mdp.build(mdp.Framing(), mdp.HEARTBEAT)])  # at once
    return core


def request_until(deadline: float, client: bytes = b"c1"):
    request = split_request([client, TOKEN, b"", b"body"], 0.0)
    assert request is not None
    return request._replace(deadline=deadline)


def test_the_core_gives_a_worker_the_time_left_in_the_address():
    core = core_with_worker()
    assert core.submit(1.0, request_until(1.75)) is None
    core.flush(1.0)
    [[_address, *frames]] = core.to_workers
    address = mdp.parse(frames).address
    assert address.endswith(b"+750") and deadlines.from_address(address) is not None
    core.to_workers.clear()
    core.worker_message(1.2, [b"w1", *mdp.build(mdp.Framing(), mdp.FINAL, address, b"x")], 6)
    assert core.submit(1.2, request_until(NO_DEADLINE, b"c2")) is None
    [[_address, *frames]] = core.to_workers
    assert b"+" not in mdp.parse(frames).address  # no deadline to tell


def test_the_core_sends_no_worker_a_request_past_its_deadline():
    core = core_with_worker()
    late = request_until(1.0)
    assert core.submit(1.0, late) == Expired(late, b"hello")
    core.flush(1.0)
    assert core.to_workers == []


def test_a_waiting_request_that_can_no_longer_be_answered_in_time_is_not_started():
    core = core_with_worker()
    service = core.services[b"hello"]
    for _ in range(40):
        service.pace.timed(0.4)  # the handler takes 0.4 s lately
    core.submit(1.0, request_until(10.0))  # busy with it until its FINAL, 0.4 s on
    core.flush(1.0)
    key = mdp.parse(core.to_workers.pop()[1:]).address
    hopeless, hopeful = request_until(1.7, b"c2"), request_until(2.1, b"c3")
    core.submit(1.0, hopeless)
    core.submit(1.0, hopeful)
    core.worker_message(1.4, [b"w1", *mdp.build(mdp.Framing(), mdp.FINAL, key, b"done")], 6)
    core.flush(1.4)
    assert [type(ending) for ending in core.endings] == [Reply, Expired]
    assert core.endings[1] == Expired(hopeless, b"hello")  # 0.3 s left: too little
    [[_address, *frames]] = core.to_workers  # 0.7 s left: worth it
    assert mdp.parse(frames).body == [b"body"]


def test_with_no_worker_a_request_waits_no_longer_than_its_deadline_or_the_timeout():
    core = Majordomo(b"hello", 1.0, 5.0, Limits(), b"k.")
    brief, without = request_until(2.0), request_until(NO_DEADLINE, b"c2")
    patient = request_until(9.0, b"c3")
    for request in (brief, without, patient):
        assert core.submit(0.0, request) is None
    core.tick(0.0)
    assert core.next_tick <= 1.0  # the heartbeat; then the deadline
    core.tick(2.0)
    assert core.endings == [Expired(brief, b"hello")]  # its caller is gone: nothing sent
    core.tick(5.0)  # --no-worker-timeout: an answer for callers still waiting
    error = b"ERROR: no worker for this service"
    replies = [
        Reply(without.route, error, True, without),
        Reply(patient.route, error, True, patient),
    ]
    assert core.endings[1:] == replies
