"""The last stage: a stored result becomes transcript files, then the job is done.

Runs for a result the poller has just stored (in the poller's thread, at once), and as its own
loop for results left by a crash, by a daemon whose lease ran out, or by a write that failed
and waits in the row's ``next_at``. Also the one place a job ends as failed, with its sidecar.
"""

from __future__ import annotations

import contextlib
import glob
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from .config import OutputConfig
from .errors import RenderError
from .hooks import Completions
from .outputs import language_of
from .plan import Planner
from .search.indexer import index_result
from .store import Job, Plan, State, Store, durably
from .throttle import backoff
from .transcripts import (
    LEFTOVER,
    Placement,
    header,
    tidy_source,
    write_error,
    write_error_is_permanent,
    write_transcripts,
)

log = structlog.get_logger("sttwatch.finisher")

OFFLINE_RETRY = 10.0  # seconds between looks at a job whose watched folder is offline


def clear_leftovers(paths: Sequence[Path]) -> None:
    """Half-written temp files of these very transcripts, left by a daemon killed while
    writing them: whoever holds the job's lease is the only writer, so they can go."""
    for path in paths:
        with contextlib.suppress(OSError):
            for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                if LEFTOVER.match(old.name):
                    old.unlink(missing_ok=True)



class Finisher:
    def __init__(self, store: Store, planner: Planner, output: OutputConfig, owner: str,
                 lease: float, clock: Callable[[], float],
                 on_left: Callable[[Job], None],
                 is_online: Callable[[Path], bool] = lambda _p: True,
                 completions: Completions | None = None,
                 sink: Callable[[Job, Plan], None] | None = None) -> None:
        self.store = store
        self.planner = planner
        self.output = output
        self.owner = owner
        self.lease = lease
        self.clock = clock
        self._on_left = on_left
        self.is_online = is_online
        # Where results go instead of files beside the sources (``sttwatch transcribe``
        # prints them); None: the transcript files of the job's plan.
        self.sink = sink
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self.failed_this_run = 0
        self.ended = 0  # jobs this daemon marked done or failed
        self.completions = completions  # the hooks' events, written with the end (hooks.py)

    def plan(self, job: Job) -> Plan:
        """A job admitted before plans were stored (an upgraded state file) gets today's."""
        return job.plan or self.planner.plan_for(Path(job.path))

    def run_once(self) -> float:
        now = self.clock()
        for job in self.store.claim_finish(self.owner, now, self.lease, 16):
            self.finish(job, after_trouble=True)
        nxt = self.store.next_due(State.FETCHED)
        return 5.0 if nxt is None else min(5.0, max(0.05, nxt - self.clock()))

    def finish(self, job: Job, *, after_trouble: bool = False) -> None:
        """One finisher per job at a time within this daemon; the lease keeps others off.
        ``after_trouble``: the result was stored before a crash, a takeover or a failed write,
        so a half-written temp file of it may lie beside the target."""
        with self._lock:
            if job.id in self._busy:
                return
            self._busy.add(job.id)
        try:
            self._finish(job, after_trouble)
        finally:
            with self._lock:
                self._busy.discard(job.id)

    def _finish(self, job: Job, after_trouble: bool = False) -> None:
        assert job.result is not None
        plan = self.plan(job)
        if self.sink is not None:
            self.sink(job, plan)
            if self.store.mark_done(job, self.clock()):
                self._on_left(job)
            return
        source = Path(job.path)
        now = self.clock()
        if not self.is_online(source):  # its share is away: never write onto the mount point
            self.store.defer(job, now + OFFLINE_RETRY, "its folder is offline", now)
            return
        place = Placement(source, Path(plan.root), plan.formats, self.output)
        hdr = header(job, plan.backend, plan.model, now)
        paths = place.paths(job.output_key,
                            language_of(job.result, hdr, plan.options.get("language")))
        if after_trouble:
            clear_leftovers(paths)
        try:
            write_transcripts(paths, plan.formats, job.result, hdr)
        except RenderError as exc:
            self._unrenderable(job, place, paths, plan, hdr, exc)
            return
        except OSError as exc:
            reason = f"cannot write transcript: {exc.strerror or exc}"
            if write_error_is_permanent(exc):
                self.fail(job, f"{reason} ({exc.filename or paths[0]})")
                return
            # The service has delivered (and billed) this result: keep it and try the write
            # again later instead of failing the file and paying for it twice.
            delay = backoff(job.defers + 1, 5.0, 300.0)
            self.store.defer(job, now + delay, reason, now)
            log.error("write_failed", job_id=job.id, path=job.path, error=reason,
                      retry_in=round(delay))
            return
        index_result(self.store, job, plan)
        event = self._event(job, plan, "done", None, paths)
        if not self.store.mark_done(job, self.clock(), event=event):
            log.warning("lease_lost", job_id=job.id, path=job.path, stage="finish")
            return
        self.ended += 1
        self._on_left(job)
        log.info("done", job_id=job.id, path=job.path, generation_id=job.generation_id,
                 outputs=[str(p) for p in paths])
        try:
            outcome = tidy_source(place, job.size, job.mtime_ns)
        except OSError as exc:
            log.error("on_done_failed", job_id=job.id, path=job.path, error=str(exc))
            return
        if outcome is not None:
            log.info(outcome.pop("event"), job_id=job.id, path=job.path, **outcome)

    def retire(self, donor: Job) -> None:
        """After its result went to a recording with the same bytes: a donor whose source is
        gone was renamed or moved, so its row and its transcripts go too (with on_done:
        keep only, where a missing source was not our doing)."""
        if self.output.on_done != "keep" or Path(donor.path).exists() or \
                not self.is_online(Path(donor.path)) or donor.result is None:
            return
        plan = self.plan(donor)
        place = Placement(Path(donor.path), Path(plan.root), plan.formats, self.output)
        hdr = header(donor, plan.backend, plan.model, self.clock())
        old = place.paths(donor.output_key,
                          language_of(donor.result, hdr, plan.options.get("language")))
        self.store.forget([donor.path])
        for path in old:
            with contextlib.suppress(OSError):
                path.unlink()
        log.info("renamed", path=donor.path, removed=[str(p) for p in old])

    def _unrenderable(self, job: Job, place: Placement, paths: Sequence[Path], plan: Plan,
                      hdr: Mapping[str, Any], exc: RenderError) -> None:
        """A billed result we cannot read: keep it (the row and the json output) and fail the
        job so that ``retry --render`` can finish it later without a second payment."""
        assert job.result is not None
        json_path = place.paths(job.output_key)[0].with_suffix(".json") if "json" not in \
            plan.formats else paths[list(plan.formats).index("json")]
        try:
            write_transcripts([json_path], ["json"], job.result, hdr)
        except OSError as err:
            log.warning("json_not_written", job_id=job.id, error=str(err))
        self.fail(job, f"cannot render transcript: {exc}; the result is kept in {json_path} "
                       "(sttwatch retry --render, once sttwatch can read it)")

    def _event(self, job: Job, plan: Plan, state: str, reason: str | None,
               paths: Sequence[Path]) -> dict[str, Any] | None:
        return None if self.completions is None else self.completions.event(
            job, plan, state, reason, paths)

    def fail(self, job: Job, reason: str) -> None:
        event = self._event(job, self.plan(job), "failed", reason, [])
        if not durably(lambda: self.store.mark_failed(job, reason, self.clock(), event=event)):
            return
        self.failed_this_run += 1
        self.ended += 1
        self._on_left(job)
        log.error("failed", job_id=job.id, path=job.path, reason=reason)
        if self.output.error_files and self.is_online(Path(job.path)):
            try:
                write_error(Path(job.path), reason, job.attempts, self.clock())
            except OSError as exc:
                log.warning("error_file_failed", job_id=job.id, error=str(exc))
