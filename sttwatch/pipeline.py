"""The three stages of one daemon and what they share: a throttle per backend and the poll
schedule. Each stage is one loop over the store; the daemon runs each loop in a thread and
replaces a thread that died.

A store that stops answering (PostgreSQL restarting, a full disk under the state file) makes
every loop wait and say so once; nothing is lost, because each transition is one
transaction and claims expire into the hands of whoever is alive when it is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from .backends import Backend
from .backends.media import Probes
from .config import OutputConfig
from .errors import AuthError
from .finisher import Finisher
from .outcomes import Outcomes
from .pacing import Alarm
from .plan import Planner
from .poller import Poller
from .schedule import PollSchedule
from .settings import PipelineSettings
from .sharefile import Shares
from .store import Job, Plan, Store, StoreUnavailable
from .submitter import Submitter
from .throttle import Throttle

log = structlog.get_logger("sttwatch.pipeline")


class Pipeline:
    def __init__(self, store: Store, backends: Mapping[str, Backend],
                 settings: PipelineSettings, planner: Planner, output: OutputConfig,
                 limits: Mapping[str, int], clock: Callable[[], float],
                 is_online: Callable[[Path], bool] = lambda _p: True,
                 sink: Callable[[Job, Plan], None] | None = None,
                 shares: Shares | None = None, probes: Probes | None = None) -> None:
        # How the stages touch files under the watches (sharefile.py): the daemon's go
        # through each mount's worker with the deadline.
        shares = shares or Shares(is_online=is_online)
        is_online = shares.is_online
        self.store = store
        self.backends = backends
        self.settings = settings
        self.clock = clock
        self.throttles = {k: Throttle(k, limits[k], clock, settings.probe_interval)
                          for k in backends}
        self.schedule = PollSchedule(settings.first_poll, settings.poll_cap,
                                     store.recent_service_seconds())
        self.wake_poll = Alarm()
        # Set at shutdown (by ``close``): transitions waiting for the store give up.
        self.stopping = threading.Event()
        self.outcomes = Outcomes(store, planner, output, settings.max_attempts, clock,
                                 self._job_left, is_online, self.stopping, shares.call)
        # Each file version's container opened once: by the screen before its create, then
        # handed to the upload and to the finisher's json header (media.Probes). Room for
        # every job in flight twice over, so the finish of each still finds its probe.
        self.probes = Probes(max(1024, 2 * sum(limits.values()))) if probes is None \
            else probes
        self.finisher = Finisher(store, self.outcomes, output, settings.owner, settings.lease,
                                 clock, shares, sink=sink, probes=self.probes)
        self.submitter = Submitter(store, backends, self.throttles, self.outcomes,
                                   self.schedule, settings, clock, self.wake_poll, shares,
                                   probes=self.probes)
        self.poller = Poller(store, backends, self.throttles, self.outcomes, self.schedule,
                             settings, clock, self.wake_poll)
        self.wake_finish = self.outcomes.wake_finish
        self._store_error: str | None = None
        self._lock = threading.Lock()

    @property
    def wake_submit(self) -> threading.Event:
        return self.submitter.wake

    def _job_left(self, job: Job) -> None:
        throttle = self.throttles.get(job.backend or "")
        if throttle is not None:
            throttle.job_left()

    # --- what --once and status look at -------------------------------------------------------
    @property
    def failed_this_run(self) -> int:
        return self.outcomes.failed_this_run

    def activity(self) -> int:
        """Grows whenever this daemon sends or ends a job: when the counts may have moved."""
        return self.submitter.submitted + self.outcomes.ended

    def refused(self) -> AuthError | None:
        for t in self.throttles.values():
            if t.refused is not None:
                return t.refused
        return None

    def unreachable_for(self, now: float) -> float:
        """How long the service has failed every create, 0 when it answers."""
        since = [t.unreachable_since for t in self.throttles.values()
                 if t.unreachable_since is not None]
        return now - min(since) if since else 0.0

    @property
    def store_error(self) -> str | None:
        return self._store_error

    def waiting_on(self) -> dict[str, Any]:
        """Why work may be held back right now, for ``status`` and systemd's STATUS line."""
        now = self.clock()
        refused = self.refused()
        held = max((t.hold_until - now for t in self.throttles.values()), default=0.0)
        return {
            "auth_rejected": str(refused) if refused else None,
            "submits_held_seconds": round(max(0.0, held), 1),
            "store_unavailable": self._store_error,
            "backends": [t.describe(now) for t in self.throttles.values()],
            "expected_task_seconds": round(self.schedule.expected(), 2),
        }

    # --- the loops ------------------------------------------------------------------------------
    def store_trouble(self, exc: StoreUnavailable | None) -> None:
        """Say once when the store goes away and once when it is back. Only a write tells
        that it is back (the heartbeat's, in ``daemon``): a full disk still serves reads and
        small writes, and a loop whose step only read would announce it back too soon."""
        with self._lock:
            was, self._store_error = self._store_error, (str(exc) if exc else None)
        if exc is not None and was is None:
            log.error("store_unavailable", error=str(exc),
                      action="waiting; nothing is lost, work resumes when it answers")
        elif exc is None and was is not None:
            log.warning("store_back")

    def _loop(self, step: Callable[[], float | None], wake: Alarm,
              stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delay = step()
            except StoreUnavailable as exc:
                self.store_trouble(exc)
                delay = 2.0
            if delay is not None:
                wake.until = self.clock() + delay
                wake.wait(delay)
                wake.until = None
                wake.clear()

    def submit_loop(self, stop: threading.Event) -> None:
        self._loop(self.submitter.run_once, self.submitter.wake, stop)

    def poll_loop(self, stop: threading.Event) -> None:
        self._loop(self.poller.run_once, self.wake_poll, stop)

    def finish_loop(self, stop: threading.Event) -> None:
        self._loop(self.finisher.run_once, self.wake_finish, stop)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """The three loops in threads (the daemon supervises its own; ``transcribe`` uses
        this)."""
        threads = [threading.Thread(target=loop, args=(stop,), name=name, daemon=True)
                   for name, loop in (("submit", self.submit_loop), ("poll", self.poll_loop),
                                      ("finish", self.finish_loop))]
        for t in threads:
            t.start()
        return threads

    def wake_all(self) -> None:
        for event in (self.submitter.wake, self.wake_poll, self.wake_finish):
            event.set()

    def reconfigure(self, settings: PipelineSettings, planner: Planner, output: OutputConfig,
                    limits: Mapping[str, int]) -> None:
        """A reloaded config: new plans for new jobs; jobs on their way keep theirs."""
        self.settings = settings
        self.submitter.settings = settings
        self.poller.settings = settings
        self.outcomes.planner = planner
        self.outcomes.output = output
        self.outcomes.max_attempts = settings.max_attempts
        self.finisher.output = output
        for kind, throttle in self.throttles.items():
            throttle.reconfigure(limits[kind])
        self.wake_all()

    def close(self) -> None:
        self.stopping.set()
        self.poller.close()
        for backend in self.backends.values():
            backend.close()
