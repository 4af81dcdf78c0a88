"""Log lines for events that come in floods, so that a flood costs a line a second."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

# Lines a second logged one by one for a kind of event (workers registering, say):
# enough for a fleet starting together to name each of its workers, not for churn.
KIND_BURST = 8


@dataclass
class Seen:
    """One kind of incident in its current second."""

    since: float  # when its current second began
    logged: int = 1  # lines logged one by one in it
    repeats: int = 0  # not logged, to count at the end of it
    level: int = logging.WARNING


class Incidents:
    """Problems that may come in floods (dropped replies, failed accepts, bad worker
    messages): the first of a kind is logged at once, its repeats in the following second
    as one line with a count. Events of a named kind (workers registering or leaving)
    are logged one by one up to KIND_BURST a second, then counted the same way."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seen: dict[str, Seen] = {}  # by kind, or by the text itself

    def add(self, what: str, kind: str = "", level: int = logging.WARNING) -> None:
        seen = self.seen.get(kind or what)
        if seen is None:
            self.log.log(level, "%s", what)
            self.seen[kind or what] = Seen(time.monotonic(), level=level)
        elif kind and seen.logged < KIND_BURST:
            self.log.log(level, "%s", what)
            seen.logged += 1
        else:
            seen.repeats += 1

    def report_repeats(self, final: bool = False) -> None:
        """Log the repeats of each kind first seen a second ago or more (all, if final)."""
        now = time.monotonic()
        for key, seen in list(self.seen.items()):
            if not (final or now - seen.since >= 1):
                continue
            if seen.repeats:
                self.log.log(seen.level, "%s (%d more times)", key, seen.repeats)
                self.seen[key] = Seen(now, level=seen.level)  # a flood goes on
            else:  # quiet for a second: the next is logged at once
                del self.seen[key]
