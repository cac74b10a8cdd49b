"""The first stage: one queued job at a time becomes a task on its backend.

One create at a time, so a crash can orphan at most one task. The job is committed as
``submitting`` (claimed, under this daemon's lease) before the call and its generation id the
moment the call returns. Each backend has its own throttle, so a paused API never holds back
the local engine and mixed backends don't share one limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from .backends import Backend, Request
from .errors import (
    AuthError,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from .finisher import Finisher
from .schedule import PollSchedule
from .settings import PipelineSettings
from .store import Job, State, Store, durably
from .throttle import Throttle

log = structlog.get_logger("sttwatch.submitter")


class Submitter:
    def __init__(self, store: Store, backends: Mapping[str, Backend],
                 throttles: Mapping[str, Throttle], finisher: Finisher,
                 schedule: PollSchedule, settings: PipelineSettings,
                 clock: Callable[[], float], wake_poll: threading.Event,
                 is_online: Callable[[Path], bool] = lambda _p: True) -> None:
        self.store = store
        self.backends = backends
        self.throttles = throttles
        self.finisher = finisher
        self.schedule = schedule
        self.settings = settings
        self.clock = clock
        self.wake = threading.Event()
        self._wake_poll = wake_poll
        self._is_online = is_online

    def run_once(self) -> float | None:
        """Create at most one task. Returns how long to sleep, or None to go on at once."""
        now = self.clock()
        counts = self.store.in_flight(self.settings.owner)
        ready, wait = [], 1.0
        for kind, throttle in self.throttles.items():
            if throttle.probe_due(now):  # the probe slot is taken only with a job to send
                ready.append(kind)
                continue
            w = throttle.wait(now, counts.get(kind, 0))
            if w is None:
                ready.append(kind)
            else:
                wait = min(wait, w)
        if not ready:
            return wait
        job = self.store.claim_submit(self.settings.owner, now, self.settings.lease, ready)
        if job is None:
            nxt = self.store.next_due(State.SEEN)
            return min(wait, 1.0 if nxt is None else max(0.0, nxt - now))
        self._create(job)
        return None

    def _requeue(self, job: Job, reason: str, not_before: float = 0.0, *,
                 refund: bool = True) -> None:
        durably(lambda: self.store.requeue(job, self.clock(), not_before, reason,
                                           refund_attempt=refund))

    def _create(self, job: Job) -> None:
        path = Path(job.path)
        bound = log.bind(job_id=job.id, path=job.path, attempt=job.attempts)
        plan = self.finisher.plan(job)
        backend = self.backends.get(plan.backend)
        throttle = self.throttles.get(plan.backend)
        if backend is None or throttle is None:
            self.finisher.fail(job, f"backend {plan.backend} is not configured any more "
                                    "(retry the file to use today's)")
            return
        if throttle.paused and throttle.wait(self.clock()) is not None:
            self._requeue(job, "waiting for the service to accept the key")  # lost the probe
            return
        sent = self.clock()
        try:
            if path.stat().st_size == 0:
                raise PermanentError("empty file (0 bytes): nothing to transcribe")
            created = backend.create(Request(job.id, plan.model, path=path,
                                             options=plan.options))
        except RateLimited as exc:
            in_flight = self.store.in_flight(self.settings.owner).get(plan.backend, 1)
            throttle.rate_limited(exc.retry_after, in_flight)
            self._requeue(job, str(exc))
            bound.warning("rate_limited", limit=throttle.limit, retry_after=exc.retry_after)
        except AuthError as exc:
            throttle.refuse(exc)
            self._requeue(job, str(exc))
        except OutcomeUnknown as exc:
            # The task may exist and be billed: this attempt counts, so a service that is
            # always slower than our read timeout fails the file after max_attempts.
            bound.warning("create_outcome_unknown", error=str(exc))
            self.requeue_or_fail(job, str(exc), not_before=throttle.outage())
        except TransientError as exc:
            retry_at = throttle.outage()
            self._requeue(job, str(exc), retry_at)
            bound.warning("service_unavailable", error=str(exc),
                          retry_in=round(retry_at - self.clock(), 1))
        except FileNotFoundError:
            if not self._is_online(path):  # its share is away: wait for it, lose nothing
                self._requeue(job, "its folder is offline", self.clock() + 30.0)
                bound.info("source_offline")
            else:
                self.store.forget([job.path])
                bound.info("source_gone")
        except (PermanentError, OSError) as exc:
            self.finisher.fail(job, str(exc) if isinstance(exc, PermanentError)
                               else f"cannot read source: {exc.strerror}")
        except Exception as exc:  # a bug or an odd library error must not strand the job
            bound.exception("create_crashed", error=f"{type(exc).__name__}: {exc}")
            self.requeue_or_fail(job, f"unexpected error: {type(exc).__name__}",
                                 not_before=throttle.outage())
        else:
            throttle.accepted(sent_at=sent)
            now = self.clock()
            pending = durably(lambda: self.store.set_pending(
                job, created.generation_id, now, now + self.schedule.first_delay(),
                created.cost))
            if pending is not None:
                bound.info("submitted", generation_id=created.generation_id,
                           backend=plan.backend)
                self._wake_poll.set()
            else:  # the file changed, or the lease was lost, during the call
                bound.warning("task_orphaned", generation_id=created.generation_id)

    def requeue_or_fail(self, job: Job, reason: str, not_before: float = 0.0) -> None:
        if job.attempts >= self.settings.max_attempts:
            self.finisher.fail(job, f"{reason} (after {job.attempts} attempts)")
        elif durably(lambda: self.store.requeue(job, self.clock(), not_before, reason)):
            log.warning("resubmitting", job_id=job.id, path=job.path, reason=reason,
                        attempt=job.attempts)
            self.wake.set()
