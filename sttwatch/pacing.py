"""How long a stage loop may sleep, and the retry spacing every stage shares.

The rule (docs/architecture.md, "Pacing"): a stage sleeps until the earliest job *it can claim
now* is due: only the backends whose gate is open count, a held or paused backend counts by
when its gate opens. A time still ahead is slept to exactly (a fetch due in 20 ms goes in
20 ms, not at the floor: each late fetch holds a service slot idle); a time already past,
a job due that this turn could not take, sleeps ``FLOOR``. The events that change the
answer (a job admitted, a job leaving, a result stored, a throttle that opens) wake the loop
early, so the longest sleep, ``IDLE_WAIT``, only bounds how stale a missed wake-up can be.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable

# Seconds an idle stage sleeps when nothing is due.
IDLE_WAIT = 5.0
# The sleep when the earliest time is already past: a job that is due but that this daemon
# cannot claim (another host's row under its lease, a lost race) never makes a loop spin.
FLOOR = 0.1
# The shortest sleep until a time still ahead.
TICK = 0.001


def backoff(failures: int, base: float, cap: float) -> float:
    """Doubling with jitter: ``base`` after the first failure in a row, at most ``cap``."""
    raw = min(cap, base * 2 ** max(0, failures - 1))
    return float(min(cap, raw * random.uniform(0.8, 1.2)))


def sleep_for(now: float, due: Iterable[float | None], floor: float = FLOOR,
              idle: float = IDLE_WAIT) -> float:
    """The sleep until the earliest of ``due`` (absolute times; None: nothing), at most
    ``idle``; ``floor`` when that time is not ahead of ``now``."""
    times = [d for d in due if d is not None]
    if not times:
        return idle
    ahead = min(times) - now
    return min(idle, max(TICK, ahead) if ahead > 0 else floor)


class Alarm(threading.Event):
    """A stage loop's wake-up that knows when the loop means to wake anyway. ``set`` wakes it
    now; ``due(at)`` only when ``at`` comes before that (a create's first fetch, seconds
    away, need not cost the poll loop a turn and a claim). While the loop runs a turn it has
    no such time, and ``due`` wakes it: the turn may have read the store before the change."""

    def __init__(self) -> None:
        super().__init__()
        self.until: float | None = None  # when the sleeping loop wakes; None during a turn

    def due(self, at: float) -> None:
        until = self.until
        if until is None or at < until:
            self.set()
