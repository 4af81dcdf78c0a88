"""What --metrics counts, with no I/O and no dependency: each request's outcome by
service, and the time from its read to its reply (a histogram). The thread that ends
requests (the server's poll loop, a worker's main thread) is the only one that writes a
tally; zmq_hello.metrics reads it from the scraping thread, at each scrape.

Reading while the loop writes takes no lock: each count is an int or a list that one
step copies whole under the GIL, and counts only grow, so a scrape never sees one go
down. A request answered is counted once, in its duration's bucket, so the count of
answered requests and the histogram's count come from the same numbers and always agree.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import NamedTuple

from zmq_hello.envelope import Request, printable

# How a request ends, as the metric's outcome label says it.
ANSWERED, ERROR, DROPPED, EXPIRED, UNANSWERED = OUTCOMES = (
    "answered",  # its reply sent
    "error",  # an error reply sent: the server's (ERROR: ...) or the handler's
    "dropped",  # a reply the client could not take (gone, or its queue full)
    "expired",  # not run: its deadline passed, or it waited out --no-worker-timeout
    "unanswered",  # an MDP client's, ended with nothing sent (MDP has no error reply)
)
# Upper bounds in seconds, from a 100 µs inline reply to a 30 s handler (and past it).
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Services with a label of their own; clients name services, so the rest share one.
MAX_SERVICE_LABELS = 100
OTHER = "other"
MAX_NAME_BYTES = 255  # a service name's longest (RFC 7, 18): a label is never cut short


def label_of(name: bytes) -> str:
    """A service's label: its name, escaped where it is not printable text."""
    return printable(name, MAX_NAME_BYTES)


monotonic = time.monotonic


class ServiceTally:
    """One service's requests by outcome, and how long those answered took: for answered
    and for error requests (those the histogram times), a list of counts by duration
    bucket (not cumulative; the last is over BUCKETS[-1]), which is also their count;
    the other outcomes, counted plainly."""

    __slots__ = ("answered", "errors", "untimed", "seconds")

    def __init__(self) -> None:
        self.answered = [0] * (len(BUCKETS) + 1)
        self.errors = [0] * (len(BUCKETS) + 1)
        self.untimed = dict.fromkeys((DROPPED, EXPIRED, UNANSWERED), 0)
        self.seconds = 0.0  # the sum of the answered and error requests' times

    def timed(self, buckets: list[int], seconds: float) -> None:
        """An answered or error request (buckets: answered or errors) took seconds."""
        buckets[bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds

    def read(self) -> Reading:
        """A copy, for the scraping thread (see the module): the lists before the sum, so
        that the sum is never ahead of the counts."""
        answered, errors = list(self.answered), list(self.errors)
        untimed, seconds = dict(self.untimed), self.seconds
        outcomes = {ANSWERED: sum(answered), ERROR: sum(errors), **untimed}
        buckets = [a + e for a, e in zip(answered, errors, strict=True)]
        return Reading(outcomes, buckets, seconds)


class Reading(NamedTuple):
    """A service's counts as one scrape reads them."""

    outcomes: dict[str, int]  # by each of OUTCOMES
    buckets: list[int]  # answered and error requests by duration bucket, not cumulative
    seconds: float  # their times' sum


class Tally:
    """The server's requests by service and outcome. A service gets a label of its own
    once a request of it ends while a worker serves it (up to MAX_SERVICE_LABELS, and
    unless another name has the same label: escaped bytes may look alike); the rest,
    names that clients made up among them, are counted as OTHER."""

    def __init__(self, default_service: bytes, serves: Callable[[bytes], bool]) -> None:
        """default_service: plain clients' (--service); serves(name): whether a worker
        serves name now (Runner.serves)."""
        self.default = default_service
        self.serves = serves
        default = ServiceTally()
        self.services: dict[bytes, ServiceTally] = {default_service: default}
        self.labels: dict[str, ServiceTally] = {label_of(default_service): default}
        # A server whose own service is named 'other' counts the rest with it.
        self.other = self.labels.setdefault(OTHER, ServiceTally())

    def ended(self, request: Request, outcome: str) -> None:
        """A request ended with outcome (one of OUTCOMES), now."""
        name = request.service or self.default
        tally = self.services.get(name) or self.labelled(name)
        # Every request's path: its count is its bucket's (ServiceTally), no more, and
        # ServiceTally.timed() spelled out, since a call costs a fifth of all this.
        if outcome == ANSWERED:
            buckets = tally.answered
        elif outcome == ERROR:
            buckets = tally.errors
        else:
            tally.untimed[outcome] += 1
            return
        seconds = monotonic() - request.received
        buckets[bisect_left(BUCKETS, seconds)] += 1
        tally.seconds += seconds

    def labelled(self, name: bytes) -> ServiceTally:
        """The tally a service not seen before counts in: its own, if a worker serves it."""
        text = label_of(name)
        if (
            len(self.services) < MAX_SERVICE_LABELS
            and text not in self.labels
            and self.serves(name)
        ):
            tally = self.services[name] = self.labels[text] = ServiceTally()
            return tally
        return self.other

    def snapshot(self) -> list[tuple[str, ServiceTally]]:
        """(label, tally) for every label, for the scraping thread: a copy of the list
        (dict.copy() is one step, even where iterating is not), of live tallies (read
        them with ServiceTally.read())."""
        return list(self.labels.copy().items())
