"""The first stage: one queued job at a time becomes a task on its backend.

One create at a time, so a crash can orphan at most one task. The job is committed as
``submitting`` (claimed, under this daemon's lease) before the call and its generation id the
moment the call returns. Each backend has its own throttle, so a paused API never holds back
the local engine and mixed backends don't share one limit.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from .backends import Backend, Request
from .backends.media import MediaProbe, Probes
from .budget import Budget, Estimate, Go, Hold
from .errors import (
    AuthError,
    CreditsExhausted,
    ExpiredError,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from .identity import sha256_of
from .offline import OFFLINE_RETRY, ShareUnreachable, unreachable
from .outcomes import Outcomes
from .pacing import Alarm, sleep_for
from .plan import is_url
from .schedule import PollSchedule
from .screen import Skipped
from .settings import PipelineSettings
from .sharefile import Shares
from .store import Job, JobStore, Plan, Spend, State
from .throttle import Throttle

log = structlog.get_logger("sttwatch.submitter")


class Submitter:
    def __init__(self, store: JobStore, backends: Mapping[str, Backend],
                 throttles: Mapping[str, Throttle], outcomes: Outcomes,
                 schedule: PollSchedule, settings: PipelineSettings,
                 clock: Callable[[], float], wake_poll: Alarm,
                 shares: Shares | None = None,
                 budget: Budget | None = None, probes: Probes | None = None) -> None:
        self.store = store
        self.backends = backends
        self.throttles = throttles
        self.outcomes = outcomes
        self.schedule = schedule
        self.settings = settings
        self.clock = clock
        self.wake = outcomes.wake_submit
        self._wake_poll = wake_poll
        # Every look at a source on a share goes through its mount's worker with the
        # deadline, the hash and the upload a block at a time (sharefile.py): a share that
        # hangs mid-read costs this thread one deadline, then the job waits and the next one
        # goes. On a local filesystem they are made here (watcher.py).
        self._shares = shares or Shares()
        self._is_online = self._shares.is_online
        self.submitted = 0
        self.budget = budget  # spend caps and the fallback to the local engine (budget.py)
        # Recordings not worth sending (already subtitled, no speech): screen.py; set by wiring.
        self.screen: Callable[[int, Path, Plan, MediaProbe | None], Skipped | None] | None \
            = None
        # Each job's container opened once, by the screen, for the upload and the finisher
        # too (media.Probes; the pipeline's, shared with its finisher).
        self.probes = Probes() if probes is None else probes

    def run_once(self) -> float | None:
        """Create at most one task. Returns how long to sleep, or None to go on at once.

        The sleep counts only the jobs this daemon can send now: those of a backend whose
        gate is open; a gated backend counts by when its gate opens (a full one by the next
        job that leaves, which wakes this loop)."""
        now = self.clock()
        counts = self.store.in_flight(self.settings.owner)
        ready: list[str] = []
        gated: list[float | None] = []
        diverting: set[str] = set()  # not the probe: the probe goes to the service
        for kind, throttle in self.throttles.items():
            if throttle.probe_due(now):  # the probe slot is taken only with a job to send
                ready.append(kind)
                continue
            w = throttle.wait(now, counts.get(kind, 0))
            if w is None:
                ready.append(kind)
            elif self.budget is not None and self.budget.diverts(throttle.refused):
                ready.append(kind)  # out of credits: its jobs go to the local engine
                diverting.add(kind)
            else:
                gated.append(now + w)
        if not ready:
            return sleep_for(now, gated)
        job = self.store.claim_submit(self.settings.owner, now, self.settings.lease, ready)
        if job is None:  # nothing due: sleep until the next is, or until woken
            return sleep_for(now, [self.store.next_due(State.SEEN, ready), *gated])
        self._create(job, job.backend in diverting)
        return None

    def _requeue(self, job: Job, reason: str, not_before: float = 0.0, *,
                 refund: bool = True) -> None:
        self.outcomes.requeue(job, reason, not_before, refund=refund)

    def _create(self, job: Job, diverting: bool = False) -> None:
        path = Path(job.path)
        bound = log.bind(job_id=job.id, path=job.path, attempt=job.attempts)
        plan = self.outcomes.plan(job)
        backend = self.backends.get(plan.backend)
        throttle = self.throttles.get(plan.backend)
        if backend is None or throttle is None:
            self.outcomes.fail(job, f"backend {plan.backend} is not configured any more "
                                    "(retry the file to use today's)")
            return
        conflict = self.outcomes.planner.conflict(plan)
        if conflict is not None:
            self.outcomes.fail(job, conflict)
            return
        # Diverting (out of credits, on_exhausted: local) does not take the probe slot: the
        # probe goes to the service, so a topped-up account is noticed.
        if throttle.paused and not diverting and throttle.wait(self.clock()) is not None:
            self._requeue(job, "waiting for the service to accept the key")  # lost the probe
            return
        sent = self.clock()
        digest: str | None = None
        decision: Go | Hold | None = None
        made = False  # a task was (or may have been) made: what was booked for it stays
        try:
            if is_url(job.path):
                decision = None if self.budget is None else self.budget.decide(
                    job, plan, None, throttle.refused if diverting else None)
                if isinstance(decision, Hold):
                    self._hold(job, decision)
                    return
                request = Request(job.id, plan.model, url=job.path, options=plan.options)
            else:
                if not self._is_online(path):  # issue 20: away or hung: no call that may hang
                    raise ShareUnreachable(errno.EHOSTDOWN, "its folder is offline", job.path)
                if self._shares.call(path, lambda: path.stat().st_size) == 0:
                    raise PermanentError("empty file (0 bytes): nothing to transcribe")
                digest = sha256_of(path, self._shares.open)
                if self._reuse(job, digest, plan, bound):
                    return
                media = self.probes.of(path, job.size, job.mtime_ns, self._shares.open)
                skipped = None if self.screen is None else self.screen(job.id, path, plan,
                                                                       media)
                if skipped is not None:
                    self._not_sent(job, skipped, digest)
                    return
                decision = None if self.budget is None else self.budget.decide(
                    job, plan, path, throttle.refused if diverting else None,
                    look=lambda f: self._shares.call(path, f))
                if isinstance(decision, Hold):
                    self._hold(job, decision)
                    return
                request = Request(job.id, plan.model, path=path, options=plan.options,
                                  opener=self._shares.open, media=media)
            created = backend.create(request)
        except RateLimited as exc:
            in_flight = self.store.in_flight(self.settings.owner).get(plan.backend, 1)
            throttle.rate_limited(exc.retry_after, in_flight)
            self._requeue(job, str(exc))
            bound.warning("rate_limited", limit=throttle.limit, retry_after=exc.retry_after)
        except AuthError as exc:
            throttle.refuse(exc)
            other = None if self.budget is None or not isinstance(exc, CreditsExhausted) \
                else self.budget.fallback(plan)
            if other is not None:
                self._hold(job, Hold("out of credits", self.clock(), other))
            else:
                self._requeue(job, str(exc))
        except ExpiredError as exc:
            # A 404 to a create: the address is wrong (api.base_url), not the file. Held back
            # like an outage, so run --once ends with the unreachable status; no traceback.
            retry_at = throttle.outage()
            self._requeue(job, f"the service has no such endpoint ({exc}): check api.base_url",
                          retry_at)
            bound.error("create_not_found", error=str(exc), retry_in=round(retry_at -
                                                                             self.clock(), 1))
        except OutcomeUnknown as exc:
            # The task may exist and be billed: this attempt counts, so a service that is
            # always slower than our read timeout fails the file after max_attempts.
            made = True
            bound.warning("create_outcome_unknown", error=str(exc))
            self.outcomes.retry_or_fail(job, str(exc), not_before=throttle.outage())
        except TransientError as exc:
            retry_at = throttle.outage()
            self._requeue(job, str(exc), retry_at)
            bound.warning("service_unavailable", error=str(exc),
                          retry_in=round(retry_at - self.clock(), 1))
        except FileNotFoundError:
            if not self._is_online(path):  # its share is away: wait for it, lose nothing
                self._requeue(job, "its folder is offline", self.clock() + 30.0)
                self.outcomes.stuck(f"{path.parent} is offline")
                bound.info("source_offline")
            else:
                self.store.forget([job.path])
                bound.info("source_gone")
        except OSError as exc:  # issue 20: a share that fails makes the job wait, not fail
            if unreachable(exc) or not self._is_online(path):
                self._requeue(job, f"its folder is offline ({exc.strerror})",
                              self.clock() + OFFLINE_RETRY)
                bound.warning("source_offline", error=exc.strerror)
            else:
                self.outcomes.fail(job, f"cannot read source: {exc.strerror}")
        except PermanentError as exc:
            self.outcomes.fail(job, str(exc))
        except Exception as exc:  # a bug or an odd library error must not strand the job
            made = True  # it may have come after the task was made: the booking stays
            bound.exception("create_crashed", error=f"{type(exc).__name__}: {exc}")
            self.outcomes.retry_or_fail(job, f"unexpected error: {type(exc).__name__}",
                                 not_before=throttle.outage())
        else:
            made = True
            throttle.accepted(sent_at=sent)
            now = self.clock()
            # Booked with the id, even for an orphaned task: it was paid for (in the same
            # transaction when the ledger is this store; ``transcribe`` keeps its jobs apart).
            spend = self.budget.spend_of(plan, decision.estimate, created.cost,
                                         decision.booked_on) \
                if isinstance(decision, Go) and self.budget is not None and \
                self.budget.books_into(self.store) else None
            first_fetch = now + self.schedule.first_delay(job.id)
            pending = self.outcomes.durably(lambda: self.store.set_pending(
                job, created.generation_id, now, first_fetch, created.cost, digest,
                created.timeline, spend))
            if isinstance(decision, Go):
                self.budget_charged(job, plan, decision.estimate, created.cost,
                                    decision.booked_on, spend)
            if pending is not None:
                self.submitted += 1
                bound.info("submitted", generation_id=created.generation_id,
                           backend=plan.backend)
                self._wake_poll.due(first_fetch)  # a turn only if it comes first
            else:  # the file changed, or the lease was lost, during the call
                bound.warning("task_orphaned", generation_id=created.generation_id)
        if isinstance(decision, Go) and not made and self.budget is not None:
            self.budget.release(decision)  # refused before a task was made: nothing spent

    def _reuse(self, job: Job, digest: str, plan: Plan, bound: Any) -> bool:
        """The same bytes were transcribed before (a rename, a move, a copy) by the same
        request (backend, model, options, engine settings): take that result instead of
        paying again. A copy under other options is sent."""
        donor = self.store.find_result_for(digest, plan.reuse_key(), job.id)
        if donor is None:
            return False
        adopted = self.outcomes.durably(lambda: self.store.adopt(job, donor, digest,
                                                                 self.clock()))
        if adopted is None:
            return True  # the file changed, or the lease was lost, meanwhile
        bound.info("reused", reused_from=donor.path, generation_id=donor.generation_id)
        self.outcomes.wake_finish.set()  # its row is fetched now: the finisher takes it
        return True

    def _not_sent(self, job: Job, skipped: Skipped, digest: str) -> None:
        """Stored as the job's result without a create, then finished like any other. A film
        skipped for its subtitles keeps no digest: a copy of it elsewhere, without them,
        must not take this result as its own."""
        now = self.clock()
        kept = digest if skipped.writes else None
        pending = self.outcomes.durably(lambda: self.store.set_pending(
            job, f"not-sent-{job.id}", now, now, None, kept))
        fetched = None if pending is None else self.outcomes.durably(
            lambda: self.store.set_fetched(pending, skipped.result, now, 0.0))
        if fetched is not None:
            self.outcomes.wake_finish.set()  # its row is fetched now: the finisher takes it

    def budget_charged(self, job: Job, plan: Plan, est: Estimate,
                       cost: Mapping[str, str] | None, booked_on: str | None = None,
                       booked: Spend | None = None) -> None:
        if self.budget is not None:
            self.budget.charged(job, plan, est, cost, booked_on, booked=booked)

    def _hold(self, job: Job, hold: Hold) -> None:
        """A create the budget (or an empty account) does not allow: wait, or go local."""
        self.outcomes.hold(job, hold.reason, hold.until, hold.plan)
