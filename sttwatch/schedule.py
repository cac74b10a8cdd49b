"""When to fetch a job: learned from how long recent tasks took, never a fixed sleep.

The first fetch comes near the moment the job is likely done (the median of recent task
times, ``first_poll`` before there is any history); after a miss, fetches come quickly and
back off with the job's age (15% of it; half of it while no task has finished yet, when all
a miss says is "longer") up to a cap. A task found done at its first fetch is learned as
only slightly earlier than that fetch, so the estimate settles just after the finish and
few jobs need a second fetch. The aim is both a transcript within a fraction of a second of
the service finishing it and close to one fetch per file.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Sequence


class PollSchedule:
    """When to fetch a job: first near the moment it is likely done (learned from recent
    tasks), then quickly around it, backing off with the job's age to a cap."""

    MIN_GAP = 0.1
    GROWTH = 0.15
    # Before any task finished, a miss says only "longer than this": wait half the age again
    # rather than 15% of it, so a first batch costs three fetches a job, not five or six.
    BLIND_GROWTH = 0.5
    # A task found done at its first fetch finished some time before; it is learned as this
    # much earlier, so the estimate creeps towards the finish until a fetch comes too soon.
    EARLY = 0.01

    def __init__(self, first_poll: float, cap: float, history: Sequence[float]) -> None:
        self._first = first_poll
        self._cap = cap
        self._history = list(history)[-32:]
        self._lock = threading.Lock()

    def expected(self) -> float:
        with self._lock:
            return statistics.median(self._history) if self._history else self._first

    def learn(self, seconds: float) -> None:
        with self._lock:
            self._history = [*self._history[-31:], seconds]

    def sample(self, age: float, last_miss: float | None) -> float:
        """What a finished task teaches: it ended between the last miss and now; with no
        miss, slightly before now."""
        return (last_miss + age) / 2 if last_miss is not None else (1 - self.EARLY) * age

    def first_delay(self) -> float:
        return min(self._cap, max(self.MIN_GAP, self.expected()))

    def next_delay(self, age: float) -> float:
        with self._lock:
            blind = not self._history
        wait = self.expected() - age
        if wait > self.MIN_GAP:
            return min(self._cap, wait)
        growth = self.BLIND_GROWTH if blind else self.GROWTH
        return min(self._cap, max(self.MIN_GAP, growth * age))
