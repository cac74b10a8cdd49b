"""Where a job's fate is decided: failed, queued again, retried or failed, held, sent to
another plan. Every stage ends or sends back its jobs through here and meets the others only
at the store: a stage never imports another, and a result reaches the finisher through the
store (its row becomes ``fetched``; ``wake_finish`` only shortens the finisher's sleep).

One home for the policy means one place for ``max_attempts``, the error sidecar, the hook
event, the counters ``--once`` reads and the ``on_left`` callback that frees a throttle slot.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import structlog

from .config import OutputConfig
from .hooks import Completions
from .outputs import language_of
from .pacing import Alarm
from .plan import Planner
from .sharefile import PathCall, direct
from .store import Job, JobStore, Plan, State, durably
from .transcripts import Placement, header, write_error

log = structlog.get_logger("sttwatch.outcomes")


class Outcomes:
    def __init__(self, store: JobStore, planner: Planner, output: OutputConfig,
                 max_attempts: int, clock: Callable[[], float],
                 on_left: Callable[[Job], None],
                 is_online: Callable[[Path], bool] = lambda _p: True,
                 stop: threading.Event | None = None, call: PathCall = direct) -> None:
        self.store = store
        self.planner = planner
        self.output = output
        self.max_attempts = max_attempts
        self.clock = clock
        self._on_left = on_left
        self.is_online = is_online
        # Calls about a source (its error sidecar, a retired donor's files) on its mount's
        # worker with the deadline (sharefile.py): a share that hangs costs one deadline.
        self.call = call
        # Set at shutdown: a transition that waits for the store gives up then, so a stop
        # while the store is away stays within systemd's TimeoutStopSec.
        self.stop = stop
        self.wake_submit = Alarm()
        self.wake_finish = Alarm()
        self.completions: Completions | None = None  # the hooks' events (hooks.py)
        self.failed_this_run = 0
        self.ended = 0  # jobs this daemon marked done or failed
        # What run --once needs to end when nothing more can happen without time or an
        # operator: since when no job has ended while one was stuck (a write that fails, a
        # folder offline), and why; when the first budget cap that holds jobs resets.
        self.stuck_since: float | None = None
        self.stuck_reason = ""
        self.budget_resets_at: float | None = None
        self._lock = threading.Lock()

    def durably(self, call: Callable[[], Any]) -> Any:
        return durably(call, self.stop)

    def plan(self, job: Job) -> Plan:
        """A job admitted before plans were stored (an upgraded state file) gets today's."""
        return job.plan or self.planner.plan_for(Path(job.path))

    def event(self, job: Job, plan: Plan, state: str, reason: str | None,
              paths: Sequence[Path]) -> dict[str, Any] | None:
        return None if self.completions is None else self.completions.event(
            job, plan, state, reason, paths)

    # --- endings -------------------------------------------------------------------------------
    def left(self, job: Job, *, failed: bool = False) -> None:
        """A job this daemon ended: count it and free its backend's slot."""
        with self._lock:
            self.ended += 1
            self.stuck_since = None
            if failed:
                self.failed_this_run += 1
        self._on_left(job)
        if job.state is not State.FETCHED:  # a stored result freed its slot, and woke the
            self.wake_submit.set()           # submitter, when it was stored (poller.py)

    def fail(self, job: Job, reason: str) -> None:
        event = self.event(job, self.plan(job), "failed", reason, [])
        if not self.durably(lambda: self.store.mark_failed(job, reason, self.clock(),
                                                           event=event)):
            return
        self.left(job, failed=True)
        log.error("failed", job_id=job.id, path=job.path, reason=reason)
        if self.output.error_files and self.is_online(Path(job.path)):
            now = self.clock()
            try:
                self.call(Path(job.path), lambda: write_error(Path(job.path), reason,
                                                              job.attempts, now))
            except OSError as exc:
                log.warning("error_file_failed", job_id=job.id, error=str(exc))

    def stuck(self, reason: str) -> None:
        """A job that cannot move on without the world changing (its output folder refuses
        writes, its share is away): kept as it is, and noted for run --once."""
        with self._lock:
            if self.stuck_since is None:
                self.stuck_since = self.clock()
            self.stuck_reason = reason

    def defer(self, job: Job, until: float, reason: str) -> bool:
        """A stored result whose transcript cannot be written now: written again later."""
        self.stuck(reason)
        return bool(self.store.defer(job, until, reason, self.clock()))

    # --- sending back --------------------------------------------------------------------------
    def requeue(self, job: Job, reason: str, not_before: float = 0.0, *,
                refund: bool = True) -> bool:
        """Back to the queue without counting the attempt (nothing was sent, or the service
        turned it away before doing anything)."""
        done = bool(self.durably(lambda: self.store.requeue(
            job, self.clock(), not_before, reason, refund_attempt=refund)))
        if done:
            self.wake_submit.set()
        return done

    def retry_or_fail(self, job: Job, reason: str, not_before: float = 0.0) -> None:
        """The attempt counts: queue it again, or fail it after ``max_attempts``."""
        if job.attempts >= self.max_attempts:
            self.fail(job, f"{reason} (after {job.attempts} attempts)")
        elif self.durably(lambda: self.store.requeue(job, self.clock(), not_before, reason)):
            log.warning("resubmitting", job_id=job.id, path=job.path, reason=reason,
                        attempt=job.attempts)
            self.wake_submit.set()

    def hold(self, job: Job, reason: str, until: float, plan: Plan | None = None) -> None:
        """Not sent now: wait until ``until`` with the job's plan, or go at once with ``plan``
        (the local engine when the budget or the account says no)."""
        if plan is None:
            if until > self.clock():  # a budget cap: the jobs wait for its reset
                with self._lock:
                    self.budget_resets_at = until if self.budget_resets_at is None else \
                        min(self.budget_resets_at, until)
            self.requeue(job, reason, until)
        else:
            self.switch_plan(job, plan, reason)

    def switch_plan(self, job: Job, plan: Plan, reason: str) -> bool:
        if not self.durably(lambda: self.store.switch_backend(job, plan, self.clock())):
            return False
        log.warning("sent_to_local" if plan.backend == "local" else "replanned",
                    job_id=job.id, path=job.path, reason=reason, backend=plan.backend)
        self.wake_submit.set()
        return True

    def replan_stranded(self, peers_build: Collection[str] = ()) -> int:
        """Queued jobs this run cannot send as planned get today's plan for their folder: a
        backend this config does not build any more (a watch's override removed, a key set
        or taken away), or no plan at all (``retry``). A job whose backend a live peer builds
        is left to that peer (hosts without a key beside hosts with one)."""
        moved = 0
        for job in self.store.stranded(self.planner.kinds, 1000):
            if job.plan is not None and job.backend in peers_build:
                continue
            plan = self.planner.plan_for(Path(job.path))
            if self._replan(job, plan):
                moved += 1
                if job.backend is not None:
                    log.warning("replanned", job_id=job.id, path=job.path, was=job.backend,
                                backend=plan.backend)
        if moved:
            self.wake_submit.set()
        return moved

    def _replan(self, job: Job, plan: Plan) -> bool:
        return bool(self.durably(lambda: self.store.replan(job, plan, self.clock())))

    # --- a result taken from another job -------------------------------------------------------
    def retire(self, donor: Job) -> None:
        """After its result went to a recording with the same bytes: a donor whose source is
        gone was renamed or moved, so its row and its transcripts go too (with on_done:
        keep only, where a missing source was not our doing)."""
        # Online first: a stat on a hung share would hold this thread.
        if self.output.on_done != "keep" or not self.is_online(Path(donor.path)) or \
                donor.result is None:
            return
        try:
            if self.call(Path(donor.path), Path(donor.path).exists):
                return
        except OSError:
            return  # its share is away: the donor stays as it is
        plan = self.plan(donor)
        place = Placement(Path(donor.path), Path(plan.root), plan.formats, self.output)
        hdr = header(donor, plan.backend, plan.model, self.clock())
        old = place.paths(donor.output_key,
                          language_of(donor.result, hdr, plan.options.get("language")))
        self.store.forget([donor.path])
        for path in old:
            with contextlib.suppress(OSError):
                self.call(path, path.unlink)
        log.info("renamed", path=donor.path, removed=[str(p) for p in old])
