"""The middle stage: asks each backend about its pending tasks and stores what finished.

Fetches run on a small pool; the poll schedule times them by how long recent tasks took.
A result is stored (``fetched``) before any transcript is written; the finisher takes it from
the store (woken at once). Claims take this daemon's due jobs and those of daemons whose
lease ran out; the local engine's ids are only asked about by the daemon that made them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog

from .backends import Backend, TaskState
from .errors import AuthError, ExpiredError, PermanentError, TransientError
from .offline import OFFLINE_RETRY
from .outcomes import Outcomes
from .pacing import Alarm, sleep_for
from .schedule import PollSchedule
from .settings import PipelineSettings
from .store import Job, JobStore, State, StoreUnavailable
from .throttle import Throttle

log = structlog.get_logger("sttwatch.poller")


class Poller:
    def __init__(self, store: JobStore, backends: Mapping[str, Backend],
                 throttles: Mapping[str, Throttle], outcomes: Outcomes,
                 schedule: PollSchedule, settings: PipelineSettings,
                 clock: Callable[[], float], wake: Alarm) -> None:
        self.store = store
        self.backends = backends
        self.throttles = throttles
        self.outcomes = outcomes
        self.schedule = schedule
        self.settings = settings
        self.clock = clock
        self.wake = wake
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        self._fetching: set[int] = set()
        self._last_miss: dict[int, float] = {}
        self._pool = ThreadPoolExecutor(settings.poll_workers, thread_name_prefix="poll")
        self.volatile = [k for k, b in backends.items() if not b.durable_ids]
        for backend in backends.values():
            backend.set_listener(self._task_may_be_done)

    def _task_may_be_done(self, generation_id: str) -> None:
        with self._lock:
            self._ready.add(generation_id)
        self.wake.set()

    def run_once(self) -> float:
        """Dispatch every due fetch; returns how long the poll loop may sleep."""
        now = self.clock()
        with self._lock:
            ready, self._ready = self._ready, set()
        try:
            return self._dispatch(now, ready)
        except StoreUnavailable:  # keep what was ready for when the store is back
            with self._lock:
                self._ready |= ready
            raise

    def _dispatch(self, now: float, ready: set[str]) -> float:
        due: dict[int, Job] = {}
        for gen_id in ready:
            job = self.store.by_generation_id(self.settings.owner, gen_id)
            if job is not None:
                due[job.id] = job
        with self._lock:
            room = max(0, 4 * self.settings.poll_workers - len(self._fetching))
        owner, lease = self.settings.owner, self.settings.lease
        open_kinds = [k for k, t in self.throttles.items() if not t.paused]
        claim = self.store.claim_poll_due(owner, now, lease, room, self.volatile, open_kinds)
        for job in claim.jobs:
            due[job.id] = job
        probes: set[int] = set()
        for kind, throttle in self.throttles.items():  # a paused backend's polls wait, but
            if throttle.probe_due(now):                # one of them may be the probe
                probe = self.store.claim_poll(owner, now, lease, 1, self.volatile, [kind])
                if probe and throttle.wait(now) is None:
                    due[probe[0].id] = probe[0]
                    probes.add(probe[0].id)
                elif probe:  # a create took the probe slot first: give the job back at once
                    self.store.schedule_poll(probe[0], now, now)
        for job in due.values():
            with self._lock:
                if job.id in self._fetching:
                    continue
                self._fetching.add(job.id)
            self._pool.submit(self._fetch_guarded, job, job.id in probes)
        return self._sleep_hint(claim.next_due)

    def _sleep_hint(self, open_due: float | None) -> float:
        """Until the next poll this daemon may make: one of an open backend that is due
        (``open_due``, read with the claim; another daemon's counts from when its lease runs
        out), or a paused backend's next probe if it has a task waiting."""
        now, owner = self.clock(), self.settings.owner
        due = [open_due]
        for kind, throttle in self.throttles.items():
            if throttle.paused:
                nxt = self.store.next_due(State.PENDING, [kind], owner)
                due.append(None if nxt is None else max(nxt, throttle.opens_at(now)))
        return sleep_for(now, due)

    def _fetch_guarded(self, job: Job, probe: bool = False) -> None:
        settled = False
        try:
            settled = self._fetch(job, probe)
        except StoreUnavailable as exc:
            # The answer could not be stored: fetch it again once the store takes writes
            # (the stage loops say when it is away and when it is back).
            log.debug("fetch_not_stored", job_id=job.id, error=str(exc))
            if job.generation_id is not None:
                with self._lock:
                    self._ready.add(job.generation_id)
        except Exception as exc:  # a pool thread must never die silently, nor spin
            log.exception("fetch_crashed", job_id=job.id, error=f"{type(exc).__name__}: {exc}")
            try:
                self.store.schedule_poll(job, self.clock() + 10.0, self.clock())
            except Exception:  # the store itself is away: the lease brings the job back
                log.warning("fetch_not_rescheduled", job_id=job.id)
        finally:
            with self._lock:
                self._fetching.discard(job.id)
            # The loop went to sleep while this fetch ran (the claim had moved the job a
            # lease ahead): it must look again at when the job is due now, unless the job
            # is no longer pending (its result stored: a poll-loop turn per file saved) or
            # its next fetch was handed to the loop's alarm.
            if not settled:
                self.wake.set()

    def _fetch(self, job: Job, probe: bool = False) -> bool:
        """Fetch one task; True when the poll loop need not look at it again: its result is
        stored (the job left this stage), or its next fetch is planned and the loop told."""
        assert job.generation_id is not None
        gen = job.generation_id
        bound = log.bind(job_id=job.id, path=job.path, generation_id=gen, attempt=job.attempts)
        now = self.clock()
        age = now - (job.submitted_at or now)
        backend = self.backends.get(job.backend or "")
        throttle = self.throttles.get(job.backend or "")
        if backend is None or throttle is None:  # its backend is no longer configured
            self.outcomes.retry_or_fail(job, f"backend {job.backend} is gone")
            return False
        if throttle.paused and not probe:  # queued before the pause: it waits with the rest
            self.store.schedule_poll(job, now, now)
            return False
        try:
            status = backend.fetch(gen)
        except ExpiredError as exc:
            self._last_miss.pop(job.id, None)
            self.outcomes.retry_or_fail(job, f"service forgot the task: {exc}")
            return False
        except AuthError as exc:
            throttle.refuse(exc)
            self.store.schedule_poll(job, self.clock() + 5.0, self.clock())
            return False
        except PermanentError as exc:
            self.outcomes.fail(job, f"cannot read the task's answer: {exc}")
            return False
        except TransientError as exc:
            if age > self.settings.job_timeout:
                self.outcomes.retry_or_fail(job, f"no answer after {age:.0f} s: {exc}")
                return False
            hinted = exc.retry_after
            delay = min(300.0, hinted) if hinted is not None else min(60.0, max(2.0, age / 4))
            bound.warning("fetch_failed", error=str(exc), retry_in=round(delay, 1))
            self.store.schedule_poll(job, self.clock() + delay, self.clock())
            return False
        throttle.accepted(sent_at=now, create=False)
        now = self.clock()
        if status.state is TaskState.RUNNING:
            if not status.known_status:
                bound.warning("unknown_status", status=status.raw_status)
            if age > self.settings.job_timeout:
                self._last_miss.pop(job.id, None)
                self.outcomes.retry_or_fail(job, f"not finished after {age:.0f} s")
                return False
            self._last_miss[job.id] = age
            due = now + self.schedule.next_delay(age, job.id)
            if self.store.schedule_poll(job, due, now):
                self.wake.due(due)  # a turn only if it comes before the loop's own wake
                return True
        elif status.state is TaskState.FAILED and status.away:
            # The recording's share went away or hung under the local engine: nothing was
            # billed and the file is not at fault; it waits for its folder (issue 20).
            self._last_miss.pop(job.id, None)
            self.outcomes.requeue(job, f"its folder is offline ({status.error})",
                                  now + OFFLINE_RETRY)
            bound.warning("source_offline", error=status.error)
        elif status.state is TaskState.FAILED:
            self._last_miss.pop(job.id, None)
            self.outcomes.fail(job, f"service failed the task: {status.error}"
                               if backend.durable_ids else f"cannot transcribe: {status.error}")
        else:
            assert status.result is not None
            miss = self._last_miss.pop(job.id, None)
            sample = self.schedule.sample(age, miss, job.id)
            self.schedule.learn(sample)
            # Held in memory only (the local engine forgets a task once it is fetched): stored
            # whatever it takes, or a store blip costs a second transcription.
            result = status.result
            fetched = self.outcomes.durably(
                lambda: self.store.set_fetched(job, result, now, sample))
            if fetched is not None:
                self.outcomes.wake_finish.set()
                # Its slot is free now (a fetched job is not in flight): the next create
                # need not wait for the transcript to be written.
                self.outcomes.wake_submit.set()
                return True
            bound.warning("lease_lost", stage="poll")
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
