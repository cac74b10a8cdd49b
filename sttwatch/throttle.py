"""One backend's pace, shared by the stages of one daemon: how many jobs may be out, when
creates are held back after an outage or a 429, and the pause while the service refuses the
key or the account.

A refusal pauses everything of that backend once per outage, not once per request: while
paused, one request (a create or a fetch, whichever stage comes first) goes out every
``probe_interval`` seconds as a probe, and the first one accepted opens the gate again, so
a key that comes back is noticed within one interval. Polls wait with the creates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .errors import AuthError, CreditsExhausted
from .pacing import backoff

log = structlog.get_logger("sttwatch.throttle")


class Throttle:
    def __init__(self, kind: str, max_in_flight: int, clock: Callable[[], float],
                 probe_interval: float = 30.0) -> None:
        self.kind = kind
        self.max_in_flight = max_in_flight
        self.limit = max_in_flight
        self._clock = clock
        self._probe_interval = probe_interval
        self._lock = threading.Lock()
        self.hold_until = 0.0
        self._outages = 0
        self.unreachable_since: float | None = None
        self.refused: AuthError | None = None
        self._next_probe = 0.0
        self._refused_at = 0.0

    # --- the gate ------------------------------------------------------------------------------
    def wait(self, now: float, in_flight: int | None = None) -> float | None:
        """None when a request may go now (taking the probe slot while paused), else how
        long to wait. ``in_flight`` is given by the submitter, which alone respects the limit."""
        with self._lock:
            if self.refused is not None:
                if now < self._next_probe:
                    return self._next_probe - now
                self._next_probe = now + self._probe_interval  # this caller is the probe
                return None
            if in_flight is None:
                return None
            if now < self.hold_until:
                return self.hold_until - now
            if in_flight >= self.limit:
                return 1.0  # woken early when a job finishes
            return None

    def probe_due(self, now: float) -> bool:
        """Paused, and the next probe may go (without taking the slot)."""
        with self._lock:
            return self.refused is not None and now >= self._next_probe

    def opens_at(self, now: float) -> float:
        """When this gate lets a request through at the earliest (the next probe while
        paused, the end of a hold), ignoring the in-flight limit: ``now`` when open."""
        with self._lock:
            if self.refused is not None:
                return max(now, self._next_probe)
            return max(now, self.hold_until)

    @property
    def paused(self) -> bool:
        return self.refused is not None

    # --- what the service said -----------------------------------------------------------------
    def accepted(self, sent_at: float | None = None, *, create: bool = True) -> None:
        """An answer that is not a refusal. One sent before the pause began (``sent_at``)
        says nothing about the key now, so it does not end the pause; nor does an answer to
        a fetch (``create=False``) end an out-of-credits pause: an empty account may still
        answer about tasks it already has, and only a create shows it can pay again."""
        with self._lock:
            self._outages = 0
            self.unreachable_since = None
            if self.refused is not None and sent_at is not None and sent_at < self._refused_at:
                return
            if not create and isinstance(self.refused, CreditsExhausted):
                return
            was, self.refused = self.refused, None
        if was is not None:
            log.warning("api_key_accepted", backend=self.kind, action="resuming")

    def refuse(self, exc: AuthError) -> None:
        with self._lock:
            first = self.refused is None
            if first:
                self._refused_at = self._clock()
            self.refused = exc
            self._next_probe = max(self._next_probe, self._clock() + self._probe_interval)
        if first:
            credits = isinstance(exc, CreditsExhausted)
            log.error("out_of_credits" if credits else "api_key_rejected", backend=self.kind,
                      status=exc.status, error=str(exc),
                      action=f"paused; jobs stay queued; one probe every "
                             f"{self._probe_interval:.0f} s")

    def outage(self) -> float:
        """Hold creates back, longer with each failure in a row; returns when to retry."""
        with self._lock:
            now = self._clock()
            self._outages += 1
            if self.unreachable_since is None:
                self.unreachable_since = now
            self.hold_until = max(self.hold_until, now + backoff(self._outages, 5.0, 300.0))
            return self.hold_until

    def rate_limited(self, retry_after: float | None, in_flight: int) -> None:
        with self._lock:
            self.limit = max(1, in_flight - 1)
            self.hold_until = max(self.hold_until,
                                  self._clock() + min(300.0, retry_after or 2.0))

    def job_left(self) -> None:
        """Additive increase after a quiet spell since the last 429."""
        with self._lock:
            if self.limit < self.max_in_flight and self._clock() > self.hold_until + 30:
                self.limit += 1

    def reconfigure(self, max_in_flight: int) -> None:
        with self._lock:
            self.max_in_flight = max_in_flight
            self.limit = min(self.limit, max_in_flight)

    def describe(self, now: float) -> dict[str, object]:
        return {"backend": self.kind,
                "refused": str(self.refused) if self.refused else None,
                "out_of_credits": isinstance(self.refused, CreditsExhausted),
                "held_seconds": round(max(0.0, self.hold_until - now), 1),
                "in_flight_limit": self.limit, "max_in_flight": self.max_in_flight,
                "unreachable_seconds": (round(now - self.unreachable_since, 1)
                                        if self.unreachable_since is not None else None)}
