"""When to fetch a job: learned from how long recent tasks took, never a fixed sleep.

The first fetch comes near the moment the job is likely done (the median of recent task
times, ``first_poll`` before there is any history). A miss close to that moment means the task
is about to finish: the next fetch comes a small fraction of the expected time later. A miss
well past it backs off with the job's age (15% of it; half of it while no task has finished
yet, when all a miss says is "longer") up to a cap.

A task found done at its first fetch finished some time before; it is learned as slightly
earlier than the moment that fetch was *planned* for, not the moment it went out. A fetch
goes out late by however long the daemon took to get to it (a busy machine, a claim, a
worker's turn): learning from when it went out would teach that lateness as task time, and the
estimate would creep later with every round. Learning from the plan, the estimate settles
just after the finish and an occasional miss corrects it from below. The aim is a transcript
within a few hundredths of a second of the service finishing it, close to one fetch per file,
and each service slot idle as little as possible between one task and the next.
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
    # A miss before this share of the expected time is a task about to finish: the next
    # fetch comes NEAR_GAP of the expected time later (never sooner than NEAR_MIN seconds).
    NEAR = 1.1
    NEAR_GAP = 0.03
    NEAR_MIN = 0.02
    # A task found done at its first fetch is learned as this much earlier than the fetch's
    # planned time, so the estimate creeps towards the finish until a fetch comes too soon.
    EARLY = 0.002
    # Planned fetch ages kept (job id -> age); a job that leaves without a last fetch (failed,
    # taken over) leaves its entry, so the oldest go first past this many.
    PLANS = 4096

    def __init__(self, first_poll: float, cap: float, history: Sequence[float]) -> None:
        self._first = first_poll
        self._cap = cap
        self._history = list(history)[-32:]
        self._planned: dict[int, float] = {}
        self._lock = threading.Lock()

    def expected(self) -> float:
        with self._lock:
            return self._expected()

    def _expected(self) -> float:
        return statistics.median(self._history) if self._history else self._first

    def learn(self, seconds: float) -> None:
        with self._lock:
            self._history = [*self._history[-31:], seconds]

    def sample(self, age: float, last_miss: float | None, job_id: int | None = None) -> float:
        """What a finished task teaches, as the age a first fetch should aim at: slightly
        before the fetch that found it done was planned (its own age, when the plan is not
        known: a job this daemon did not schedule), which is also the answer after a miss
        just before it; after a miss far before it (a blind one), the middle between."""
        with self._lock:
            planned = self._planned.pop(job_id, age) if job_id is not None else age
            near = 1.5 * self._near_gap(self._expected()) if self._history else 0.0
        upper = max(last_miss or 0.0, min(age, planned))
        if last_miss is not None and upper - last_miss > near:
            return (last_miss + upper) / 2  # a wide bracket (a blind one): its middle
        return (1 - self.EARLY) * upper

    def first_delay(self, job_id: int | None = None) -> float:
        delay = min(self._cap, max(self.MIN_GAP, self.expected()))
        self._plan(job_id, delay)
        return delay

    def next_delay(self, age: float, job_id: int | None = None) -> float:
        """Until the next fetch after a miss at ``age``. Backing off, the next age is a
        step on from the age this fetch was *planned* for, not the one it went out at: a
        fetch that went out late would otherwise push every later one later still (blind,
        1 s, 1.5 s, 2.25 s became 1.05, 1.6, 2.45 s with 50 ms of lateness a fetch)."""
        with self._lock:
            blind = not self._history
            expected = self._expected()
            planned = self._planned.get(job_id) if job_id is not None else None
        wait = expected - age
        if wait > self.MIN_GAP:
            delay = min(self._cap, wait)
        elif not blind and age < self.NEAR * expected:
            delay = min(self._cap, self._near_gap(expected))
        else:
            growth = self.BLIND_GROWTH if blind else self.GROWTH
            base = age if planned is None else min(age, planned)
            delay = min(self._cap, max(self.MIN_GAP, base * (1 + growth) - age))
        self._plan(job_id, age + delay)
        return delay

    def _near_gap(self, expected: float) -> float:
        """The step after a miss just before the expected time: a bracket this narrow
        (one step and a half) is a near miss's, not a blind one's."""
        return max(self.NEAR_MIN, self.NEAR_GAP * expected)

    def _plan(self, job_id: int | None, age: float) -> None:
        if job_id is None:
            return
        with self._lock:
            self._planned.pop(job_id, None)
            self._planned[job_id] = age
            while len(self._planned) > self.PLANS:
                del self._planned[next(iter(self._planned))]
