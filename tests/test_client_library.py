"""zmq_hello.Client and AsyncClient against real servers on loopback: replies matched to
their calls under threads and asyncio, errors as exceptions, failover, fork, close and
cancellation. The rules of calls alone (framing, matching) are in test_calls.py."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import threading
import time
import warnings

import pytest
from harness import ECHO_ASYNC, WAIT, rss_kib, start_broker

from zmq_hello import AsyncClient, Client, NoReply, ServerError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nobody() -> str:
    """An endpoint no server listens on."""
    return f"tcp://127.0.0.1:{free_port()}"


def timed(function, *args, **kwargs):
    start = time.monotonic()
    result = function(*args, **kwargs)
    return result, time.monotonic() - start


# Client


def test_a_client_sends_many_requests_on_one_connection(echo_server):
    server = echo_server()
    with Client(server.endpoint) as client:
        assert [client.request(b"n%d" % n) for n in range(50)] == [b"n%d" % n for n in range(50)]
    # One connection for all 50: the server logged one routing id.
    ids = {
        line.split(": ")[0] for line in server.process.out if line.startswith("Received request")
    }
    assert len(ids) == 1, ids


def test_a_handler_that_raises_is_a_server_error(echo_server):
    with Client(echo_server().endpoint) as client:
        with pytest.raises(ServerError) as raised:
            client.request(b"boom")
        assert str(raised.value) == "handler failed (RuntimeError)"
        assert raised.value.reply == b"ERROR: handler failed (RuntimeError)"
        assert client.request(b"after") == b"after"


def test_no_server_is_no_reply_after_every_try():
    endpoint = nobody()
    client = Client(endpoint, timeout=0.3, retries=2)
    with pytest.raises(NoReply) as raised:
        client.request(b"Hello")
    client.close()
    assert isinstance(raised.value, TimeoutError)
    assert str(raised.value) == f"no reply from {endpoint} after 3 tries of 0.3 s"
    assert raised.value.endpoints == [endpoint]


def test_no_reply_takes_about_timeout_times_tries():
    with Client(nobody(), timeout=0.3, retries=2) as client:
        start = time.monotonic()
        with pytest.raises(NoReply):
            client.request(b"Hello")
        took = time.monotonic() - start
    assert 0.85 <= took < 1.5, took


def test_a_call_may_have_its_own_timeout(echo_server):
    with Client(echo_server().endpoint, timeout=5, retries=0) as client:
        start = time.monotonic()
        with pytest.raises(NoReply):
            client.request(b"1 slow", timeout=0.2)
        assert time.monotonic() - start < 0.9
        assert client.request(b"fast") == b"fast"  # not the slow one's late reply


def test_sixteen_threads_on_one_client_are_in_flight_at_once(echo_server):
    server = echo_server("--workers", "16", "--quiet")
    replies: dict[int, bytes] = {}
    with Client(server.endpoint) as client:
        client.request(b"warm up")

        def call(n: int) -> None:
            replies[n] = client.request(b"0.5 from %d" % n)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(16)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        took = time.monotonic() - start
    assert replies == {n: b"0.5 from %d" % n for n in range(16)}
    assert took < 1.5, f"16 requests of 0.5 s took {took:.2f} s: not in flight at once"


def test_each_thread_gets_its_own_replies_under_load(echo_server):
    server = echo_server("--workers", "8", "--quiet")
    wrong: list[tuple[bytes, bytes]] = []
    with Client(server.endpoint) as client:

        def loop(n: int) -> None:
            for k in range(150):
                body = b"0.00%d thread %d call %d" % (k % 3, n, k)
                reply = client.request(body)
                if reply != body:
                    wrong.append((body, reply))

        threads = [threading.Thread(target=loop, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert not client._calls.pending  # nothing left behind by 1,200 calls
    assert wrong == []


def test_a_late_reply_is_dropped_and_the_next_call_gets_its_own(echo_server):
    with Client(echo_server().endpoint, timeout=0.2, retries=0) as client:
        with pytest.raises(NoReply):
            client.request(b"0.4 late")
        time.sleep(0.4)  # the late reply arrives meanwhile, for a call that gave up
        assert client.request(b"mine") == b"mine"
        assert not client._calls.pending


def test_close_ends_the_calls_in_flight_and_leaves_no_thread(echo_server):
    server = echo_server()
    before = threading.active_count()
    client = Client(server.endpoint)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.request(b"3 slow")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    server.process.wait_for("^Received request")
    start = time.monotonic()
    client.close()
    caller.join(WAIT)
    assert time.monotonic() - start < 1.0
    assert [type(exc) for exc in outcome] == [ValueError]
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="closed"):
        client.request(b"Hello")


def test_a_service_request_goes_to_its_workers_with_partial_replies(start_server, spawn):
    server, backend = start_broker(start_server)
    worker = spawn("tests/majortomo_worker.py", backend, "0.2", "resize")
    server.process.wait_for(r"worker \S+ ready for 'resize'", "err")
    worker.wait_for("majortomo worker connected")
    parts: list[bytes] = []
    with Client(server.endpoint) as client:
        reply, took = timed(client.request, b"stream 3", service="resize", on_partial=parts.append)
    assert reply == b"majortomo: stream 3"
    assert parts == [b"part 1", b"part 2", b"part 3"]
    assert took < 1.0, f"took {took:.2f} s: a partial reply waited for a timeout"


def test_a_wait_cut_short_by_an_exception_leaves_the_client_whole(echo_server):
    server = echo_server("--workers", "4")

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    with Client(server.endpoint) as client:
        reader = threading.Thread(target=client.request, args=(b"0.6 reads",))
        reader.start()
        server.process.wait_for(": 0.6 reads$")
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(Interrupted):
                client.request(b"0.6 interrupted")  # waits as a follower of the reader
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        reader.join(WAIT)
        assert client._followers == [] and client._reader is None
        assert not client._calls.pending
        # The readers' hand-over works as before: concurrent calls answered at once.
        replies: list[bytes] = []
        threads = [
            threading.Thread(target=lambda n=n: replies.append(client.request(b"0.2 %d" % n)))
            for n in range(4)
        ]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert sorted(replies) == [b"0.2 %d" % n for n in range(4)]
        assert time.monotonic() - start < 1.0


def test_a_client_made_before_fork_works_in_the_child(echo_server):
    with Client(echo_server().endpoint) as client:
        assert client.request(b"parent") == b"parent"
        child = os.fork()
        if child == 0:  # the child: its own sockets, never the parent's
            try:
                code = 0 if client.request(b"child") == b"child" else 1
                client.close()
            except BaseException:  # noqa: BLE001 - any failure is the exit code
                code = 2
            os._exit(code)
        deadline = time.monotonic() + WAIT
        while (done := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            assert client.request(b"parent again") == b"parent again"
        if done == (0, 0):
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail("the child did not finish")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        assert client.request(b"parent after") == b"parent after"


def test_a_killed_server_costs_nothing_once_its_connection_is_gone(echo_server):
    first, second = echo_server(), echo_server()
    with Client([first.endpoint, second.endpoint], timeout=1.0) as client:
        # Once its connection is up, the first server gets every request.
        for _ in range(100):
            assert client.request(b"one") == b"one"
            if first.process.count(": one$"):
                break
        first.process.wait_for(": one$")
        first.process.kill()
        slow = 0
        for n in range(20):
            reply, took = timed(client.request, b"n%d" % n)
            assert reply == b"n%d" % n
            slow += took >= 1.0
    assert slow <= 1, f"{slow} requests waited a timeout"


def test_a_frozen_server_costs_at_most_one_timeout(echo_server):
    frozen, live = echo_server(), echo_server()
    with Client([frozen.endpoint, live.endpoint], timeout=0.5) as client:
        assert client.request(b"warm up") == b"warm up"
        frozen.process.signal(signal.SIGSTOP)
        try:
            slow = 0
            for n in range(20):
                reply, took = timed(client.request, b"n%d" % n)
                assert reply == b"n%d" % n
                slow += took >= 0.5
        finally:
            frozen.process.signal(signal.SIGCONT)
    assert slow <= 1, f"{slow} requests waited a timeout"


def test_too_many_waiting_from_one_client_is_a_server_error_for_the_excess(echo_server):
    server = echo_server("--workers", "1", "--quiet")
    outcomes: dict[int, bytes | str] = {}
    start = threading.Barrier(100)
    with Client(server.endpoint) as client:

        def call(n: int) -> None:
            start.wait(WAIT)
            try:  # 65 taken (1 running, 64 waiting) take 2 s, inside the 2.5 s timeout
                outcomes[n] = client.request(b"0.03 %d" % n)
            except ServerError as error:
                outcomes[n] = str(error)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    refused = [
        n for n, outcome in outcomes.items() if outcome == "too many requests from this client"
    ]
    assert len(outcomes) == 100
    assert 1 <= len(refused) <= 100 - 65, refused
    assert all(outcomes[n] == b"0.03 %d" % n for n in outcomes if n not in refused)


# AsyncClient


def test_an_async_client_has_a_thousand_requests_in_flight(echo_server):
    server = echo_server("--quiet", handler=ECHO_ASYNC)

    async def main() -> tuple[list[bytes], float]:
        async with AsyncClient(server.endpoint) as client:
            await client.request(b"warm up")
            start = time.monotonic()
            replies = await asyncio.gather(*(client.request(b"0.5 %d" % n) for n in range(1000)))
            return replies, time.monotonic() - start

    replies, took = asyncio.run(main())
    assert replies == [b"0.5 %d" % n for n in range(1000)]
    assert took < 2.5, f"1000 requests of 0.5 s took {took:.2f} s"


def test_a_cancelled_call_leaves_the_async_client_usable(echo_server):
    server = echo_server(handler=ECHO_ASYNC)

    async def main() -> None:
        async with AsyncClient(server.endpoint) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.request(b"0.3 cancelled"), 0.1)
            task = asyncio.create_task(client.request(b"0.3 cancelled too"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.4)  # both late replies arrive, for nobody
            assert await client.request(b"mine") == b"mine"
            assert not client._calls.pending

    gc.collect()  # what earlier tests left, so that only this one's warnings count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert [str(warning.message) for warning in caught] == []


def test_async_errors_are_the_same_as_the_clients(echo_server):
    server = echo_server(handler=ECHO_ASYNC)
    endpoint = nobody()

    async def main() -> None:
        async with AsyncClient(server.endpoint) as client:
            with pytest.raises(ServerError, match=r"^handler failed \(RuntimeError\)$"):
                await client.request(b"boom")
        async with AsyncClient(endpoint, timeout=0.2, retries=1) as client:
            with pytest.raises(NoReply, match=f"no reply from {endpoint} after 2 tries"):
                await client.request(b"Hello")
        with pytest.raises(ValueError, match="closed"):
            await client.request(b"Hello")

    asyncio.run(main())


def test_async_failover_skips_a_frozen_server(echo_server):
    frozen, live = echo_server(), echo_server()

    async def main() -> list[bytes]:
        async with AsyncClient([frozen.endpoint, live.endpoint], timeout=0.5) as client:
            await client.request(b"warm up")
            frozen.process.signal(signal.SIGSTOP)
            return await asyncio.gather(*(client.request(b"n%d" % n) for n in range(50)))

    try:
        start = time.monotonic()
        replies = asyncio.run(main())
        took = time.monotonic() - start
    finally:
        frozen.process.signal(signal.SIGCONT)
    assert replies == [b"n%d" % n for n in range(50)]
    assert took < 1.5, f"took {took:.2f} s: more than one timeout"


def test_async_partial_replies(start_server, spawn):
    server, backend = start_broker(start_server)
    spawn("tests/majortomo_worker.py", backend, "0.2", "resize")
    server.process.wait_for(r"worker \S+ ready for 'resize'", "err")
    parts: list[bytes] = []

    async def main() -> bytes:
        async with AsyncClient(server.endpoint) as client:
            return await client.request(b"stream 2", service="resize", on_partial=parts.append)

    reply, took = timed(asyncio.run, main())
    assert reply == b"majortomo: stream 2"
    assert parts == [b"part 1", b"part 2"]
    assert took < 1.0, f"took {took:.2f} s: a partial reply waited for a timeout"


def test_a_long_async_run_keeps_its_memory_flat(echo_server):
    server = echo_server("--workers", "0", "--quiet")

    async def burst(client: AsyncClient, rounds: int) -> None:
        for _ in range(rounds):
            await asyncio.gather(*(client.request(b"x") for _ in range(100)))
            # Cancelled and timed-out calls too: their late replies must not pile up.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.request(b"x"), 0.00001)

    async def main() -> tuple[int, int]:
        async with AsyncClient(server.endpoint) as client:
            await burst(client, 50)
            gc.collect()
            before = rss_kib(os.getpid())
            await burst(client, 200)
            gc.collect()
            assert not client._calls.pending
            return before, rss_kib(os.getpid())

    before, after = asyncio.run(main())
    assert after - before < 4096, f"grew {after - before} KiB over 20,000 requests"


def test_every_reply_reaches_a_client_with_thousands_in_flight(echo_server):
    # All 5,000 replies come back at once, to one connection: the server must hold them
    # all for it (libzmq counts them as sent only in batches, so twice over).
    server = echo_server("--workers", "5000", "--quiet", handler=ECHO_ASYNC)

    async def main() -> list[bytes | BaseException]:
        async with AsyncClient(server.endpoint, timeout=5, retries=0) as client:
            await client.request(b"warm up")
            requests = (client.request(b"0.5 %d" % n) for n in range(5000))
            return await asyncio.gather(*requests, return_exceptions=True)

    replies = asyncio.run(main())
    lost = [n for n, reply in enumerate(replies) if reply != b"0.5 %d" % n]
    assert lost == [], f"{len(lost)} of 5000 not answered: {replies[lost[0]]!r}"
    assert not any("dropped" in line for line in server.process.err)
