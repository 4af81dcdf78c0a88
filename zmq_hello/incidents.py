"""Log lines for problems that come in floods, so that a flood costs one line a second."""

from __future__ import annotations

import logging
import time


class Incidents:
    """Problems that may come in floods (dropped replies, failed accepts, bad worker
    messages): the first of a kind is logged at once, its repeats in the following second
    as one line with a count."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.since: dict[str, float] = {}  # what -> when it was last logged
        self.repeats: dict[str, int] = {}  # what -> repeats since then

    def add(self, what: str) -> None:
        if what in self.since:
            self.repeats[what] += 1
        else:
            self.log.warning("%s", what)
            self.since[what] = time.monotonic()
            self.repeats[what] = 0

    def report_repeats(self, final: bool = False) -> None:
        """Log the repeats of each kind first seen a second ago or more (all, if final)."""
        now = time.monotonic()
        for what, since in list(self.since.items()):
            if final or now - since >= 1:
                if count := self.repeats[what]:
                    self.log.warning("%s (%d more times)", what, count)
                    self.since[what], self.repeats[what] = now, 0  # a flood goes on
                else:  # quiet for a second: the next is logged at once
                    del self.since[what], self.repeats[what]
