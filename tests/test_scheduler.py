"""The scheduling rule on its own: no sockets, no threads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zmq_hello.scheduler import Scheduler


def test_a_lone_client_uses_every_free_slot():
    scheduler: Scheduler[int, str] = Scheduler(range(4))
    for i in range(6):
        assert scheduler.add("a", f"a{i}")
    assert scheduler.dispatch() == [(0, "a0"), (1, "a1"), (2, "a2"), (3, "a3")]
    assert scheduler.queued == 2


def test_the_order_of_turns():
    scheduler: Scheduler[int, str] = Scheduler(range(1))
    for job in ["a0", "a1", "a2", "b0", "c0", "b1"]:
        scheduler.add(job[0], job)
    order = []
    while True:
        started = scheduler.dispatch()
        if not started:
            break
        slot, job = started[0]
        order.append(job)
        scheduler.release(slot)
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_a_client_past_max_waiting_is_refused_but_a_rerun_is_not():
    scheduler: Scheduler[int, int] = Scheduler((), max_waiting=2)
    assert scheduler.add("a", 1) and scheduler.add("a", 2)
    assert not scheduler.add("a", 3)
    assert scheduler.add("b", 1)
    assert scheduler.add("a", 0, first=True)
    scheduler.release(7)
    assert scheduler.dispatch() == [(7, 0)]


def test_a_rerun_goes_ahead_of_every_client():
    scheduler: Scheduler[str, str] = Scheduler()
    scheduler.add("a", "a0")
    scheduler.add("b", "b0")
    scheduler.add("b", "b-rerun", first=True)
    scheduler.release("w1")
    scheduler.release("w2")
    assert scheduler.dispatch() == [("w1", "b-rerun"), ("w2", "a0")]


def test_slots_are_used_least_recently_used_first_and_removed_ones_never():
    scheduler: Scheduler[str, str] = Scheduler(["w1", "w2", "w3"])
    scheduler.remove("w2")
    scheduler.release("w1")  # w1 is now the most recently used
    for job in ["x", "y", "z"]:
        scheduler.add("c", job)
    assert scheduler.dispatch() == [("w3", "x"), ("w1", "y")]
    assert scheduler.queued == 1


# One step of a random run: a request arrives from a client, or a running one finishes.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(0, 4)),
        st.tuples(st.just("finish"), st.integers(0, 1000)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(slots=st.integers(1, 5), max_waiting=st.integers(1, 8), run=steps)
def test_properties_over_random_arrivals_and_completions(slots, max_waiting, run):
    scheduler: Scheduler[int, tuple[int, int]] = Scheduler(range(slots), max_waiting)
    running: list[tuple[int, tuple[int, int]]] = []
    arrived = {client: 0 for client in range(5)}
    started_in_order = {client: [] for client in range(5)}
    starts_while_waiting: dict[int, dict[int, int]] = {}  # waiter -> starts of each other
    refused = 0
    for kind, value in run:
        if kind == "arrive":
            client = value
            job = (client, arrived[client])
            if scheduler.add(client, job):
                arrived[client] += 1
            else:
                refused += 1
                assert len(scheduler.waiting[client]) == max_waiting
        elif running:
            slot, _ = running.pop(value % len(running))
            scheduler.release(slot)
        for slot, job in scheduler.dispatch():
            client = job[0]
            running.append((slot, job))
            started_in_order[client].append(job[1])
            # Fair under contention: while a client waits, no other gets two more starts.
            starts_while_waiting.pop(client, None)
            for waiter, counts in starts_while_waiting.items():
                counts[client] = counts.get(client, 0) + 1
                assert counts[client] <= 1, f"client {client} started twice while {waiter} waited"
        for waiter in scheduler.waiting:
            starts_while_waiting.setdefault(waiter, {})
        # Work-conserving: never a free slot while a request waits.
        assert not (scheduler.free and scheduler.waiting)
        assert len(running) + len(scheduler.free) == slots
        assert scheduler.queued == sum(len(jobs) for jobs in scheduler.waiting.values())
    # Each client's requests start in arrival order.
    for numbers in started_in_order.values():
        assert numbers == list(range(len(numbers)))


def test_a_withdrawn_job_leaves_the_others_their_turns():
    scheduler: Scheduler[int, list[str]] = Scheduler()
    jobs = {name: [name] for name in ["a0", "a1", "b0"]}  # lists: withdrawn by identity
    for name, job in jobs.items():
        scheduler.add(name[0], job)
    scheduler.withdraw("a", jobs["a0"])
    scheduler.withdraw("b", jobs["b0"])
    assert (scheduler.queued, list(scheduler.waiting)) == (1, ["a"])
    scheduler.release(0)
    assert scheduler.dispatch() == [(0, ["a1"])]
