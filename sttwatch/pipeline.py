"""Submitter and poller: move jobs from ``seen`` to ``done`` against any backend.

Read top to bottom: ``submit_once`` claims one queued job and creates its task; ``poll_once``
fetches every job whose poll is due; ``finish`` writes the transcripts of a stored result.
Each loop runs in its own thread under the daemon's supervision, and every state change is
committed to the store before the next step, so a crash anywhere loses nothing.

Creates go one at a time on purpose: a crash can then orphan at most one task on the service
(the only duplicate we accept, see PITFALLS on requests). Fetches are idempotent and run on a
small pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from .backends import Backend, Request, TaskState
from .config import OutputConfig
from .errors import (
    AuthError,
    ExpiredError,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from .schedule import PollSchedule
from .settings import JobSettings, PipelineSettings
from .store import Job, State, Store
from .transcripts import Placement, header, tidy_source, write_error, write_transcripts

log = structlog.get_logger("sttwatch.pipeline")

__all__ = ["JobSettings", "Pipeline", "PipelineSettings"]


def backoff(failures: int, first: float, cap: float) -> float:
    """Seconds to wait after ``failures`` in a row: doubling from ``first`` up to ``cap``."""
    return min(cap, first * 2.0 ** min(max(failures - 1, 0), 30))


class Pipeline:
    """Drives jobs through their backends. Threads: ``submit_loop``, ``poll_loop``."""

    def __init__(self, store: Store, backends: Mapping[str, Backend],
                 settings: PipelineSettings, settings_for: Callable[[Path], JobSettings],
                 output: OutputConfig, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.backends = backends
        self.output = output
        self.settings = settings
        self.settings_for = settings_for
        self.clock = clock
        self.schedule = PollSchedule(settings.first_poll, settings.poll_cap,
                                     store.recent_service_seconds())
        self.wake_submit = threading.Event()
        self.wake_poll = threading.Event()
        self.auth_error: AuthError | None = None
        self.failed_this_run = 0
        self._limit = settings.max_in_flight
        self._hold_until = 0.0  # no creates before this (rate limit, outage, auth pause)
        self._outages = 0
        self._auth_pauses = 0
        self._last_miss: dict[int, float] = {}
        self._ready: set[str] = set()
        self._lock = threading.Lock()
        self._fetching: set[int] = set()
        self._finishing: set[int] = set()
        self._write_retry: dict[int, tuple[int, float]] = {}  # job id -> (tries, next try)
        self._pool = ThreadPoolExecutor(settings.poll_workers, thread_name_prefix="poll")
        for backend in backends.values():
            backend.set_listener(self._task_may_be_done)

    # --- submitting ------------------------------------------------------------------------

    def submit_once(self) -> float | None:
        """Create at most one task. Returns how long to sleep, or None to go on at once."""
        now = self.clock()
        if now < self._hold_until:
            return self._hold_until - now
        if self.store.in_flight() >= self._limit:
            return 1.0  # woken early when a job finishes
        jobs = self.store.claim_for_submit(now, 1)
        if not jobs:
            nxt = self.store.next_due(State.SEEN)
            return 1.0 if nxt is None else min(1.0, max(0.0, nxt - now))
        self._create(jobs[0])
        return None

    def _create(self, job: Job) -> None:
        path = Path(job.path)
        bound = log.bind(job_id=job.id, path=job.path, attempt=job.attempts)
        js = self.settings_for(path)
        try:
            if path.stat().st_size == 0:
                raise PermanentError("empty file (0 bytes): nothing to transcribe")
            created = self.backends[js.backend].create(
                Request(job.id, js.model, path=path, options=js.options))
        except RateLimited as exc:
            self._limit = max(1, self.store.in_flight() - 1)
            self._hold(min(300.0, exc.retry_after or 2.0))
            self.store.requeue(job.id, self.clock(), 0, str(exc), refund_attempt=True,
                               expect=job)
            bound.warning("rate_limited", limit=self._limit, retry_after=exc.retry_after)
        except AuthError as exc:
            self._auth_failed(exc)
            self.store.requeue(job.id, self.clock(), 0, str(exc), refund_attempt=True,
                               expect=job)
        except OutcomeUnknown as exc:
            # The task may exist and be billed: this attempt counts, so a service that is
            # always slower than our read timeout fails the file after max_attempts.
            bound.warning("create_outcome_unknown", error=str(exc))
            self._requeue_or_fail(job, str(exc), bound, not_before=self._outage())
        except TransientError as exc:
            delay = self._outage()
            self.store.requeue(job.id, self.clock(), 0, str(exc), refund_attempt=True,
                               expect=job)
            bound.warning("service_unavailable", error=str(exc),
                          retry_in=round(delay - self.clock(), 1))
        except FileNotFoundError:
            self.store.forget([job.path])
            bound.info("source_gone")
        except (PermanentError, OSError) as exc:
            self._fail(job, str(exc) if isinstance(exc, PermanentError)
                       else f"cannot read source: {exc.strerror}")
        except Exception as exc:  # a bug or an odd library error must not strand the job
            bound.exception("create_crashed", error=f"{type(exc).__name__}: {exc}")
            self._requeue_or_fail(job, f"unexpected error: {type(exc).__name__}", bound,
                                  not_before=self._outage())
        else:
            self._outages = 0
            self._auth_pauses = 0
            self.auth_error = None
            now = self.clock()
            if self.store.set_pending(job.id, js.backend, created.generation_id, now,
                                      now + self.schedule.first_delay(), created.cost):
                bound.info("submitted", generation_id=created.generation_id)
                self.wake_poll.set()
            else:  # the file changed during the call: its task is paid for but orphaned
                bound.warning("task_orphaned", generation_id=created.generation_id)

    def _outage(self) -> float:
        """Hold creates back, longer with each failure in a row; returns when to retry."""
        self._outages += 1
        self._hold(backoff(self._outages, 5.0, 300.0))
        return self._hold_until

    def _hold(self, seconds: float) -> float:
        self._hold_until = max(self._hold_until, self.clock() + seconds)
        return seconds

    def _auth_failed(self, exc: AuthError) -> None:
        self.auth_error = exc
        self._auth_pauses += 1
        delay = self._hold(backoff(self._auth_pauses, 30.0, 900.0))
        log.error("api_key_rejected", status=exc.status, error=str(exc),
                  action="submitting paused; jobs stay queued", retry_in=round(delay))

    # --- polling ---------------------------------------------------------------------------

    def _task_may_be_done(self, generation_id: str) -> None:
        with self._lock:
            self._ready.add(generation_id)
        self.wake_poll.set()

    def poll_once(self) -> float:
        """Dispatch every due fetch; returns how long the poll loop may sleep."""
        now = self.clock()
        with self._lock:
            ready, self._ready = self._ready, set()
        due = {j.id: j for j in self.store.due_for_poll(now, 256)}
        for gen_id in ready:
            job = self.store.by_generation_id(gen_id)
            if job is not None:
                due[job.id] = job
        dispatched = 0
        for job in due.values():
            with self._lock:
                if job.id in self._fetching:
                    continue
                self._fetching.add(job.id)
            self._pool.submit(self._fetch_guarded, job)
            dispatched += 1
        for job in self.store.fetched():
            if self._write_retry.get(job.id, (0, 0.0))[1] <= now:
                self.finish(job)
        nxt = self.store.next_due(State.PENDING)
        if nxt is None:
            return 1.0
        # Due jobs that are still being fetched must not make this loop spin.
        return min(1.0, max(0.25 if due and not dispatched else 0.01, nxt - self.clock()))

    def _fetch_guarded(self, job: Job) -> None:
        try:
            self._fetch(job)
        except Exception as exc:  # a pool thread must never die silently, nor spin
            log.exception("fetch_crashed", job_id=job.id, error=f"{type(exc).__name__}: {exc}")
            if job.generation_id is not None:
                self.store.schedule_poll(job.id, job.generation_id, self.clock() + 10.0,
                                         self.clock())
        finally:
            with self._lock:
                self._fetching.discard(job.id)

    def _fetch(self, job: Job) -> None:
        assert job.generation_id is not None
        gen = job.generation_id
        bound = log.bind(job_id=job.id, path=job.path, generation_id=gen, attempt=job.attempts)
        now = self.clock()
        age = now - (job.submitted_at or now)
        backend = self.backends.get(job.backend or "")
        if backend is None:  # its backend is no longer configured: start over
            self._requeue_or_fail(job, f"backend {job.backend} is gone", bound)
            return
        try:
            status = backend.fetch(gen)
        except ExpiredError as exc:
            self._requeue_or_fail(job, f"service forgot the task: {exc}", bound)
            return
        except AuthError as exc:
            self._auth_failed(exc)
            self.store.schedule_poll(job.id, gen, self._hold_until, self.clock())
            return
        except PermanentError as exc:
            self._fail(job, f"cannot read the task's answer: {exc}")
            return
        except TransientError as exc:
            if age > self.settings.job_timeout:
                self._requeue_or_fail(job, f"no answer after {age:.0f} s: {exc}", bound)
                return
            hinted = getattr(exc, "retry_after", None)
            delay = min(300.0, hinted) if hinted is not None else min(60.0, max(2.0, age / 4))
            bound.warning("fetch_failed", error=str(exc), retry_in=round(delay, 1))
            self.store.schedule_poll(job.id, gen, self.clock() + delay, self.clock())
            return
        now = self.clock()
        if status.state is TaskState.RUNNING:
            if not status.known_status:
                bound.warning("unknown_status", status=status.raw_status)
            if age > self.settings.job_timeout:
                self._requeue_or_fail(job, f"not finished after {age:.0f} s", bound)
                return
            self._last_miss[job.id] = age
            self.store.schedule_poll(job.id, gen, now + self.schedule.next_delay(age), now)
        elif status.state is TaskState.FAILED:
            self._fail(job, f"service failed the task: {status.error}")
        else:
            assert status.result is not None
            miss = self._last_miss.pop(job.id, None)
            # The task finished between the last miss and now; with no miss the estimate
            # may be too late, so learn slightly less to let the schedule move earlier.
            sample = (miss + age) / 2 if miss is not None else 0.9 * age
            self.schedule.learn(sample)
            if self.store.set_fetched(job.id, gen, status.result, now, sample):
                got = self.store.get(job.path)
                if got is not None and got.state is State.FETCHED:
                    self.finish(got)

    def _requeue_or_fail(self, job: Job, reason: str, bound: Any,
                         not_before: float = 0.0) -> None:
        self._last_miss.pop(job.id, None)
        if job.attempts >= self.settings.max_attempts:
            self._fail(job, f"{reason} (after {job.attempts} attempts)")
        elif self.store.requeue(job.id, self.clock(), not_before, reason, expect=job):
            bound.warning("resubmitting", reason=reason)
            self.wake_submit.set()

    # --- endings ---------------------------------------------------------------------------

    def finish(self, job: Job) -> None:
        """Write the transcripts of a stored result, mark the job done, then tidy up. One
        finisher per job at a time: the poll loop and a pool thread may both reach here."""
        with self._lock:
            if job.id in self._finishing:
                return
            self._finishing.add(job.id)
        try:
            current = self.store.get(job.path)
            if current is not None and current.id == job.id and current.state is State.FETCHED:
                self._finish(current)
        finally:
            with self._lock:
                self._finishing.discard(job.id)

    def _finish(self, job: Job) -> None:
        assert job.result is not None
        source = Path(job.path)
        js = self.settings_for(source)
        place = Placement(source, js.root, js.formats, self.output)
        keys = place.candidate_keys(job.output_key)
        key = self.store.claim_output(job.id, keys)
        if key != keys[0]:
            log.warning("output_name_taken", job_id=job.id, path=job.path, wanted=keys[0],
                        using=key)
        now = self.clock()
        paths = place.paths(key)
        try:
            write_transcripts(paths, js.formats, job.result,
                              header(job, job.backend or js.backend, js.model, now))
        except ValueError as exc:
            self._fail(job, f"cannot render transcript: {exc}")
            return
        except OSError as exc:
            # The service has delivered (and billed) this result: keep it and try the write
            # again later instead of failing the file and paying for it twice.
            tries = self._write_retry.get(job.id, (0, 0.0))[0] + 1
            delay = backoff(tries, 5.0, 300.0)
            self._write_retry[job.id] = (tries, now + delay)
            log.error("write_failed", job_id=job.id, path=job.path, error=str(exc),
                      retry_in=round(delay))
            return
        self._write_retry.pop(job.id, None)
        if not self.store.mark_done(job.id, self.clock(), expect=job):
            return
        self._job_left()
        log.info("done", job_id=job.id, path=job.path, generation_id=job.generation_id,
                 outputs=[str(p) for p in paths])
        try:
            outcome = tidy_source(place, job.size, job.mtime_ns)
        except OSError as exc:
            log.error("on_done_failed", job_id=job.id, path=job.path, error=str(exc))
            return
        if outcome is not None:
            log.info(outcome.pop("event"), job_id=job.id, path=job.path, **outcome)

    def _fail(self, job: Job, reason: str) -> None:
        if not self.store.mark_failed(job.id, reason, self.clock(), expect=job):
            return
        self.failed_this_run += 1
        self._job_left()
        log.error("failed", job_id=job.id, path=job.path, reason=reason)
        if self.output.error_files:
            try:
                write_error(Path(job.path), reason, job.attempts, self.clock())
            except OSError as exc:
                log.warning("error_file_failed", job_id=job.id, error=str(exc))

    def _job_left(self) -> None:
        if self._limit < self.settings.max_in_flight and self.clock() > self._hold_until + 30:
            self._limit += 1  # additive increase after a quiet spell since the last 429
        self.wake_submit.set()

    def reconfigure(self, settings: PipelineSettings,
                    settings_for: Callable[[Path], JobSettings], output: OutputConfig) -> None:
        """A reloaded config; each attribute swap is atomic, jobs in flight are untouched."""
        self.settings = settings
        self.settings_for = settings_for
        self.output = output
        self._limit = min(self._limit, settings.max_in_flight)
        self.wake_submit.set()

    def waiting_on(self) -> dict[str, Any]:
        """Why work may be held back right now, for ``status`` and systemd's STATUS line."""
        now = self.clock()
        return {
            "auth_rejected": str(self.auth_error) if self.auth_error else None,
            "submits_held_seconds": round(max(0.0, self._hold_until - now), 1),
            "in_flight_limit": self._limit,
            "max_in_flight": self.settings.max_in_flight,
            "expected_task_seconds": round(self.schedule.expected(), 2),
        }

    # --- loops -----------------------------------------------------------------------------

    def submit_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.submit_once()
            if delay is not None:
                self.wake_submit.wait(delay)
                self.wake_submit.clear()

    def poll_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.poll_once()
            self.wake_poll.wait(delay)
            self.wake_poll.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for backend in self.backends.values():
            backend.close()
