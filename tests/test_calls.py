"""The rules of a client's calls, in-process with no sockets (zmq_hello.calls): framing,
which reply is whose, partial replies, retries' order of servers, the exceptions."""

from __future__ import annotations

import pytest

from zmq_hello import deadlines
from zmq_hello.calls import (
    MDP_CLIENT,
    MDP_FINAL,
    MDP_PARTIAL,
    MDP_REQUEST,
    Calls,
    NoReply,
    ServerError,
    check_settings,
    endpoint_list,
)


def test_a_request_is_framed_behind_its_token():
    calls = Calls(["a"])
    plain = calls.open(b"Hello", None, 1.0)
    service = calls.open(b"photo", b"resize", 1.0)
    assert plain.frames == [plain.token, b"", b"Hello"]
    assert service.frames == [service.token, b"", MDP_CLIENT, MDP_REQUEST, b"resize", b"photo"]


def test_tokens_differ_between_calls_and_between_clients():
    first, second = Calls(["a"]), Calls(["a"])
    tokens = {first.open(b"", None, 1.0).token for _ in range(1000)}
    tokens |= {second.open(b"", None, 1.0).token for _ in range(1000)}
    assert len(tokens) == 2000


def test_a_reply_goes_to_the_call_with_its_token():
    calls = Calls(["a"])
    one, two = calls.open(b"1", None, 1.0), calls.open(b"2", None, 1.0)
    assert calls.route([two.token, b"", b"two"], 0.0) is two
    assert two.result() == b"two" and not one.done


@pytest.mark.parametrize(
    "frames",
    [
        [b"unknown!", b"", b"x"],  # nobody's token
        [b"TOKEN", b"x", b"x"],  # no empty delimiter
        [b"TOKEN", b""],  # no body
        [b"TOKEN", b"", b"x", b"y"],  # a frame too many for a plain reply
        [b"TOKEN"],
    ],
)
def test_a_reply_that_is_nobodys_or_malformed_is_dropped(frames):
    calls = Calls(["a"])
    call = calls.open(b"x", None, 1.0)
    frames = [call.token if frame == b"TOKEN" else frame for frame in frames]
    assert calls.route(frames, 0.0) is None
    assert not call.done


def test_a_reply_for_a_closed_call_is_dropped():
    calls = Calls(["a"])
    call = calls.open(b"x", None, 1.0)
    calls.close(call)
    assert calls.route([call.token, b"", b"late"], 0.0) is None
    assert calls.pending == {}


def test_partial_replies_queue_up_and_give_the_try_more_time():
    calls = Calls(["a"])
    call = calls.open(b"x", b"svc", 2.0)
    calls.begin_try(call, 10.0)
    head = [call.token, b"", MDP_CLIENT]
    assert calls.route([*head, MDP_PARTIAL, b"svc", b"one"], 11.0) is call
    assert call.partials == [b"one"] and call.deadline == 13.0 and not call.done
    assert calls.route([*head, MDP_FINAL, b"svc", b"done"], 12.0) is call
    assert call.result() == b"done"


@pytest.mark.parametrize(
    "frames",
    [
        [b"", MDP_CLIENT, MDP_FINAL, b"other", b"x"],  # another service
        [b"", b"MDPC01", MDP_FINAL, b"svc", b"x"],  # another protocol
        [b"", MDP_CLIENT, b"\x09", b"svc", b"x"],  # no such command
        [b"", b"plain"],  # a plain reply to a service call
    ],
)
def test_a_service_reply_must_name_its_service_and_command(frames):
    calls = Calls(["a"])
    call = calls.open(b"x", b"svc", 1.0)
    assert calls.route([call.token, *frames], 0.0) is None
    assert not call.done and call.partials == []


def test_an_error_reply_is_a_server_error_without_its_prefix():
    calls = Calls(["a"])
    call = calls.open(b"x", None, 1.0)
    calls.route([call.token, b"", b"ERROR: handler failed (KeyError)"], 0.0)
    with pytest.raises(ServerError) as raised:
        call.result()
    assert str(raised.value) == "handler failed (KeyError)"
    assert raised.value.reply == b"ERROR: handler failed (KeyError)"


def test_a_server_that_timed_out_goes_last_for_every_call():
    calls = Calls(["a", "b", "c"])
    call = calls.open(b"x", None, 1.0)
    calls.begin_try(call, 0.0)
    call.endpoint = "a"
    calls.timed_out(call)
    assert calls.order == ["b", "c", "a"]
    calls.begin_try(call, 1.0)  # a try that found no server up was sent nowhere
    calls.timed_out(call)
    assert calls.order == ["b", "c", "a"]


def test_no_reply_names_every_endpoint_and_is_a_timeout():
    error = NoReply(["tcp://a:1", "tcp://b:2"], 4, 2.5)
    assert isinstance(error, TimeoutError)
    assert str(error) == "no reply from tcp://a:1, tcp://b:2 after 4 tries of 2.5 s"
    assert str(NoReply(["tcp://a:1"], 1, 0.5)).endswith("after 1 try of 0.5 s")


def test_settings_and_endpoints_are_checked():
    assert endpoint_list("tcp://a:1") == ["tcp://a:1"]
    assert endpoint_list(["tcp://a:1", "tcp://b:2", "tcp://a:1"]) == ["tcp://a:1", "tcp://b:2"]
    with pytest.raises(ValueError, match="no endpoint"):
        endpoint_list([])
    for timeout, retries in ((0, 1), (-1, 1), (float("nan"), 1), (1, -1), (1, 1.5)):
        with pytest.raises(ValueError):
            check_settings(timeout, retries)


# Deadlines: each try carries its own; a call inside a handler is held to the handler's.


def test_each_try_carries_its_deadline_and_a_reply_still_finds_its_call():
    calls = Calls(["a"])
    call = calls.open(b"x", None, 0.5)
    assert calls.begin_try(call, 100.0)
    assert call.deadline == 100.5
    assert call.frames[0] == deadlines.call_frame(call.token, 0.5)
    assert call.frames[0] == call.token + b"zhDL" + (500).to_bytes(4, "big")
    # The server echoes the call frame; an earlier try's, with another deadline, counts too.
    assert calls.route([call.frames[0], b"", b"late"], 100.1) is call
    earlier = deadlines.call_frame(call.token, 0.9)
    assert calls.route([earlier, b"", b"late"], 100.1) is call


def test_a_call_in_a_handler_waits_no_longer_than_the_handler():
    calls = Calls(["a"])
    now = deadlines.monotonic()
    deadlines.this_slot().deadline = now + 0.3  # as a runner sets it around a handler
    try:
        call = calls.open(b"x", None, 2.5)
    finally:
        deadlines.this_slot().deadline = deadlines.NO_DEADLINE
    assert calls.begin_try(call, now)
    assert call.deadline == pytest.approx(now + 0.3)
    # The milliseconds are cut down, never up: no callee is told of time its caller lacks.
    assert int.from_bytes(call.frames[0][-4:], "big") in (299, 300)
    assert not calls.begin_try(call, now + 0.3)  # no time left for another try
    assert calls.open(b"y", None, 2.5).limit is None  # outside a handler: its own timeout


def test_a_partial_reply_gives_no_more_time_than_the_handler_has():
    calls = Calls(["a"])
    deadlines.this_slot().deadline = 10.4
    try:
        call = calls.open(b"x", b"svc", 2.5)
    finally:
        deadlines.this_slot().deadline = deadlines.NO_DEADLINE
    assert calls.begin_try(call, 10.0)
    frames = [call.frames[0], b"", MDP_CLIENT, MDP_PARTIAL, b"svc", b"part"]
    assert calls.route(frames, 10.2) is call
    assert call.deadline == 10.4


def test_a_call_cut_short_by_the_handlers_deadline_says_so():
    calls = Calls(["a"])
    deadlines.this_slot().deadline = 10.3
    try:
        call = calls.open(b"x", None, 2.5)
    finally:
        deadlines.this_slot().deadline = deadlines.NO_DEADLINE
    assert calls.begin_try(call, 10.0)
    assert not calls.cut_short(call, 10.2) and calls.cut_short(call, 10.3)
    assert "before the handler's deadline" in str(NoReply(["a"], 1, 2.5, cut_short=True))
    assert not calls.cut_short(calls.open(b"y", None, 2.5), 99.0)  # outside a handler
