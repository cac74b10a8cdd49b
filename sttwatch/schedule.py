"""When to fetch a job: learned from how long recent tasks took, never a fixed sleep.

The first fetch comes near the moment the job is likely done (the median of recent task
times, ``first_poll`` before there is any history); after a miss, fetches come quickly and
back off with the job's age (15% of it) up to a cap. The aim is both a transcript within a
fraction of a second of the service finishing it and only a few fetches per file.
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

    def first_delay(self) -> float:
        return min(self._cap, max(self.MIN_GAP, self.expected()))

    def next_delay(self, age: float) -> float:
        wait = self.expected() - age
        if wait > self.MIN_GAP:
            return min(self._cap, wait)
        return min(self._cap, max(self.MIN_GAP, self.GROWTH * age))
