"""The pure code, in-process and without sockets: MDP framing, request splitting,
endpoint locality and handler loading."""

from __future__ import annotations

import sys

import pytest

from zmq_hello import mdp
from zmq_hello.envelope import MAX_FRAMES, Request, printable, split_request
from zmq_hello.handlers import BadHandlerSpec, call, load
from zmq_hello.sockets import is_local

# MDP framing ---------------------------------------------------------------------------

FRAMINGS = [mdp.Framing(header, empty) for header in (mdp.W01, mdp.W02) for empty in (True, False)]


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
@pytest.mark.parametrize(
    "command, address, body",
    [
        (mdp.READY, b"hello", []),
        (mdp.REQUEST, b"\x00\x00\x00\x07", [b"body"]),
        (mdp.FINAL, b"key", [b"envelope", b"reply"]),
        (mdp.HEARTBEAT, b"", []),
        (mdp.DISCONNECT, b"", []),
    ],
)
def test_build_then_parse_gives_the_message_back(framing, command, address, body):
    frames = mdp.build(framing, command, address, *body)
    assert (frames[0] == b"") == framing.empty_first
    assert mdp.parse(frames) == mdp.Message(framing, command, address, body)


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
@pytest.mark.parametrize("command", [mdp.REQUEST, mdp.FINAL])
@pytest.mark.parametrize("body", [[b"body"], [b"envelope", b"body"]])
def test_carried_agrees_with_parse_on_messages_with_a_body(framing, command, body):
    frames = mdp.build(framing, command, b"key", *body)
    assert mdp.carried(frames, mdp.head(framing, command)) == (b"key", body)
    message = mdp.parse(frames)
    assert (message.address, message.body) == (b"key", body)


@pytest.mark.parametrize(
    "frames",
    [
        [b"", b"MDPW02", b"\x02", b"key", b""],  # no body
        [b"", b"MDPW02", b"\x02", b"key", b"x", b"body"],  # no empty frame after the address
        [b"", b"MDPW02", b"\x04", b"key", b"", b"body"],  # another command
        [b"MDPW02", b"\x02", b"key", b"", b"body"],  # another framing
        [b"", b"MDPW02", b"\x05"],  # HEARTBEAT
    ],
)
def test_carried_leaves_anything_else_to_parse(frames):
    assert mdp.carried(frames, mdp.head(mdp.Framing(), mdp.REQUEST)) is None


@pytest.mark.parametrize(
    "frames, code",
    [
        ([b"", b"MDPW01", b"\x03", b"key", b"", b"reply"], mdp.FINAL),  # 0.1's REPLY
        ([b"", b"MDPW01", b"\x04"], mdp.HEARTBEAT),
        ([b"MDPW02", b"\x03", b"key", b"", b"part"], mdp.PARTIAL),
        ([b"MDPW02", b"\x05"], mdp.HEARTBEAT),
        ([b"", b"MDPW02", b"\x06"], mdp.DISCONNECT),
    ],
)
def test_each_version_has_its_own_command_codes(frames, code):
    assert mdp.parse(frames).command == code


def test_partial_exists_only_in_0_2():
    with pytest.raises(mdp.ProtocolError, match="unknown MDP/0.1 command"):
        mdp.parse([b"", b"MDPW01", b"\x06"])


@pytest.mark.parametrize(
    "frames, says",
    [
        ([], "too few"),
        ([b""], "too few"),
        ([b"", b"MDPW02"], "too few"),
        ([b"", b"MDPC02", b"\x01", b"svc"], "unknown protocol header"),
        ([b"", b"MDPW02", b"\x09"], "unknown MDP/0.2 command"),
        ([b"", b"MDPW02", b""], "unknown MDP/0.2 command"),
        ([b"", b"MDPW02", b"\x01"], "READY without a service name"),
        ([b"", b"MDPW02", b"\x01", b""], "READY without a service name"),
        ([b"", b"MDPW02", b"\x01", b"a", b"b"], "READY without a service name"),
        ([b"", b"MDPW02", b"\x04", b"key", b"reply"], "FINAL without"),
        ([b"", b"MDPW02", b"\x04", b"key", b"not empty", b"reply"], "FINAL without"),
        ([b"", b"MDPW02", b"\x05", b"extra"], "HEARTBEAT with 1 unexpected frames"),
        ([b"", b"MDPW01", b"\x05", b"a", b"b"], "DISCONNECT with 2 unexpected frames"),
    ],
)
def test_malformed_worker_messages_raise_protocol_error(frames, says):
    with pytest.raises(mdp.ProtocolError, match=says):
        mdp.parse(frames)


def test_framing_names_its_version_for_the_log():
    assert str(mdp.Framing(mdp.W02, True)) == "MDP/0.2"
    assert str(mdp.Framing(mdp.W01, False)) == "MDP/0.1 without the empty frame"


# Request splitting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, route, body",
    [
        ([b"id", b"Hello"], [b"id"], b"Hello"),  # DEALER
        ([b"id", b"", b"Hello"], [b"id", b""], b"Hello"),  # REQ
        ([b"id", b"token", b"", b"Hello"], [b"id", b"token", b""], b"Hello"),  # client.py
        ([b"id", b"h1", b"h2", b"", b""], [b"id", b"h1", b"h2", b""], b""),  # proxy hops
        (
            [b"id", *[b"hop"] * (MAX_FRAMES - 3), b"", b""],
            [b"id", *[b"hop"] * (MAX_FRAMES - 3), b""],
            b"",
        ),
    ],
)
def test_split_request_keeps_the_route_for_the_reply(frames, route, body):
    assert split_request(frames, 0.0) == Request(route, body)
    assert split_request(frames, 0.0).client == b"id"


@pytest.mark.parametrize(
    "frames",
    [
        [b"id"],  # no body
        [b"id", b"1", b"Hello"],  # the tutorial client's id as a data frame
        [b"id", b"a", b"b", b"Hello"],  # an envelope without its empty delimiter
        [b"id", *[b""] * MAX_FRAMES],  # over MAX_FRAMES
    ],
)
def test_split_request_refuses_malformed_envelopes(frames):
    assert split_request(frames, 0.0) is None


@pytest.mark.parametrize(
    "data, shown",
    [
        (b"Hello", "Hello"),
        (b"\x00\x01bin", "\\x00\\x01bin"),
        (b"\xff\xfe", "\\xff\\xfe"),
        (b"line\nbreak", "line\\nbreak"),
        ("é".encode(), "é"),
        (b"x" * 70, "x" * 60 + "... (70 bytes)"),
    ],
)
def test_printable_is_one_escaped_line(data, shown):
    assert printable(data) == shown


# Endpoint locality ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, local",
    [
        ("tcp://127.0.0.1:5556", True),
        ("tcp://127.1.2.3:*", True),
        ("tcp://localhost:5556", True),
        ("tcp://[::1]:5556", True),
        ("ipc:///tmp/workers", True),
        ("inproc://workers", True),
        ("tcp://*:5556", False),
        ("tcp://0.0.0.0:5556", False),
        ("tcp://[::]:5556", False),
        ("tcp://192.0.2.7:5556", False),
        ("tcp://example.org:5556", False),
        ("tcp://eth0:5556", False),
        ("udp://127.0.0.1:5556", False),
    ],
)
def test_is_local(endpoint, local):
    assert is_local(endpoint) is local


# Handler loading -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, says",
    [
        ("examples.echo", "expected MODULE:FUNCTION"),
        (":handle", "expected MODULE:FUNCTION"),
        ("examples.echo:", "expected MODULE:FUNCTION"),
        ("", "expected MODULE:FUNCTION"),
        ("no_such_module_here:handle", "no module named 'no_such_module_here'"),
        ("examples.no_such_module:handle", "no module named 'examples.no_such_module'"),
        ("examples.echo:no_such_function", "module 'examples.echo' has no 'no_such_function'"),
        ("examples.echo:handle.nested", "module 'examples.echo' has no 'handle.nested'"),
        ("tests.sample_handlers:NOT_CALLABLE", "'NOT_CALLABLE' is int, not a function"),
        ("bad_imports:handle", "importing 'bad_imports' failed: No module named 'missing_lib'"),
        ("raises_on_import:handle", "importing 'raises_on_import' raised ImportError: no DB"),
        ("exits_on_import:handle", "importing 'exits_on_import' raised SystemExit: 3"),
    ],
)
def test_every_bad_handler_spec_says_why_in_one_line(tmp_path, monkeypatch, spec, says):
    (tmp_path / "bad_imports.py").write_text("import missing_lib\n")
    (tmp_path / "raises_on_import.py").write_text("raise ImportError('no DB')\n")
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(BadHandlerSpec) as raised:
        load(spec)
    assert str(raised.value).startswith(says)
    assert "\n" not in str(raised.value)


def test_a_dotted_function_path_is_followed():
    handler = load("tests.sample_handlers:echo.__call__")
    assert call(handler, b"x") == b"x"


def test_call_turns_failures_into_error_replies():
    assert call(lambda body: body.decode() + "!", b"hi") == b"hi!"
    assert call(lambda body: 1 / 0, b"") == b"ERROR: handler failed (ZeroDivisionError)"
    assert call(lambda body: 42, b"") == b"ERROR: handler failed (TypeError)"


# MDP clients ---------------------------------------------------------------------------

RID = b"\x00k\x8bEg"  # a routing id as ROUTER makes them


@pytest.mark.parametrize(
    "frames, dialect, final, partial",
    [
        (  # MDP/0.1 on REQ, or mdcliapi2's DEALER with the empty frame
            [RID, b"", b"MDPC01", b"echo", b"body"],
            mdp.MDP01,
            [RID, b"", b"MDPC01", b"echo"],
            None,
        ),
        (  # RFC 18 as written: no empty frame, REQUEST 1, replies PARTIAL 2 and FINAL 3
            [RID, b"MDPC02", b"\x01", b"echo", b"body"],
            mdp.RFC18,
            [RID, b"MDPC02", b"\x03", b"echo"],
            [RID, b"MDPC02", b"\x02", b"echo"],
        ),
        (  # majortomo: empty frame, the worker codes, no service frame in replies
            [RID, b"", b"MDPC02", b"\x02", b"echo", b"body"],
            mdp.MAJORTOMO,
            [RID, b"", b"MDPC02", b"\x04"],
            [RID, b"", b"MDPC02", b"\x03"],
        ),
        (  # client.py --service: RFC 18 behind its token envelope
            [RID, b"token", b"", b"MDPC02", b"\x01", b"echo", b"body"],
            mdp.RFC18,
            [RID, b"token", b"", b"MDPC02", b"\x03", b"echo"],
            [RID, b"token", b"", b"MDPC02", b"\x02", b"echo"],
        ),
    ],
)
def test_each_client_dialect_is_recognised_and_answered_in_kind(frames, dialect, final, partial):
    assert split_request(frames, 0.0) is None  # never taken for a plain request
    request = mdp.client_request(frames, 0.0)
    assert (request.dialect, request.service, request.body) == (dialect, b"echo", b"body")
    assert request.route == final
    assert dialect.partial_route(request) == partial


def test_an_mdp_request_keeps_every_body_frame():
    request = mdp.client_request([RID, b"", b"MDPC01", b"echo", b"a", b"b", b"c"], 0.0)
    assert (request.body_head, request.body) == ((b"a", b"b"), b"c")


@pytest.mark.parametrize(
    "frames, says",
    [
        ([RID, b"", b"MDPC01"], None),  # a plain REQ request whose body is "MDPC01"
        ([RID, b"token", b"", b"MDPC02"], None),  # client.py sending "MDPC02"
        ([RID, b"a", b"b"], None),  # no delimiter: not MDP, a malformed plain request
        ([RID, b"", b"MDPC01", b"echo"], "without a body"),
        ([RID, b"MDPC02", b"\x01"], "without a service"),
        ([RID, b"", b"MDPC02"] + [b"x"] * 2, "unknown MDP/0.2 client command"),
        ([RID, b"MDPC02", b"\x03", b"echo", b"body"], "unknown MDP/0.2 client command"),
        ([RID, b"", b"MDPC01", b"", b"body"], "service of 0 bytes"),
        ([RID, b"MDPC02", b"\x01", b"s" * 256, b"body"], "service of 256 bytes"),
    ],
)
def test_what_is_not_an_mdp_request(frames, says):
    if says is None:
        assert mdp.client_request(frames, 0.0) is None
    else:
        assert split_request(frames, 0.0) is None  # malformed MDP is never a plain request
        with pytest.raises(mdp.ProtocolError, match=says):
            mdp.client_request(frames, 0.0)


def test_mdp_0_1_has_no_partial_replies():
    request = mdp.client_request([RID, b"", b"MDPC01", b"echo", b"body"], 0.0)
    assert mdp.MDP01.partial_route(request) is None
