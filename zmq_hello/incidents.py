"""Log lines for events that come in floods, so that no flood, of any size or variety,
costs more than a few lines a second.

Every incident has a kind: a fixed phrase of the program's ("dropped replies"), never
built from what a peer sent, so that the kinds are few whatever the peers do. The text
logged for one incident may name a peer, escaped (envelope.printable) by the caller.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zmq_hello.majordomo import Incident

# Lines a second logged one by one for a kind of event (workers registering, say):
# enough for a fleet starting together to name each of its workers, not for churn.
KIND_BURST = 8
# Lines a second logged one by one for all kinds together; past that, incidents are
# only counted, and each kind's count is logged once a second.
LINES_PER_SECOND = 10


@dataclass
class Seen:
    """One kind of incident in its current second."""

    since: float  # when its current second began
    level: int
    logged: int = 1  # lines logged one by one in it
    repeats: int = 0  # not logged, to count at the end of it
    latest: str = ""  # the text of the latest repeat


class Incidents:
    """Problems that may come in floods (dropped replies, malformed requests, bad worker
    messages): the first of a kind is logged at once, its repeats in the following second
    as one line with a count and the latest of them. Kinds given a burst (workers
    registering or leaving) are logged one by one up to that many a second, then counted
    the same way. At most LINES_PER_SECOND are logged one by one in all."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seen: dict[str, Seen] = {}  # by kind
        self.second = 0.0  # when the current second of the shared budget began
        self.budget = LINES_PER_SECOND  # lines that may still be logged one by one in it

    def add(self, kind: str, text: str = "", level: int = logging.WARNING, burst: int = 1) -> None:
        """One incident of kind; text (the kind itself if empty) is what is logged for it."""
        now = time.monotonic()
        if now - self.second >= 1:
            self.second, self.budget = now, LINES_PER_SECOND
        seen = self.seen.get(kind)
        if seen is None:
            seen = self.seen[kind] = Seen(now, level, logged=0)
        if seen.logged < burst and self.budget > 0:
            self.log.log(level, "%s", text or kind)
            seen.logged += 1
            self.budget -= 1
        else:
            seen.repeats += 1
            seen.latest = text

    def record(self, incident: Incident) -> None:
        """An incident as the broker core decided it."""
        burst = KIND_BURST if incident.churn else 1
        self.add(incident.kind, incident.text, incident.level, burst)

    def report_repeats(self, final: bool = False) -> None:
        """Log the repeats of each kind first seen a second ago or more (all, if final)."""
        now = time.monotonic()
        for kind, seen in list(self.seen.items()):
            if not (final or now - seen.since >= 1):
                continue
            if seen.repeats:
                latest = f" (latest: {seen.latest})" if seen.latest and seen.latest != kind else ""
                self.log.log(seen.level, "%s: %d more%s", kind, seen.repeats, latest)
                self.seen[kind] = Seen(now, seen.level)  # a flood goes on: its next is counted
            else:  # quiet for a second: the next is logged at once
                del self.seen[kind]
