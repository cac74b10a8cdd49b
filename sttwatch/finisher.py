"""The last stage: a stored result becomes transcript files, then the job is done.

Its one loop takes every ``fetched`` row that is due from the store: a result the poller has
just stored or the submitter has reused (they wake it), one left by a crash or by a daemon
whose lease ran out, or a write that failed and waits in the row's ``next_at``. One thread,
so a job is finished once; the lease keeps other daemons off. Failing a job is the outcomes
module's (outcomes.py).
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from .backends.media import Probes
from .config import OutputConfig
from .errors import RenderError
from .offline import OFFLINE_RETRY, unreachable
from .outcomes import Outcomes
from .outputs import readable
from .pacing import backoff, sleep_for
from .screen import audio_track_of, skip_of
from .search.indexer import index_result
from .sharefile import Shares
from .store import Job, JobStore, Plan, State
from .transcript_model import output_language
from .transcripts import (
    LEFTOVER,
    Placement,
    header,
    tidy_source,
    write_error_is_permanent,
    write_transcripts,
)

log = structlog.get_logger("sttwatch.finisher")



def clear_leftovers(paths: Sequence[Path]) -> None:
    """Half-written temp files of these very transcripts, left by a daemon killed while
    writing them: whoever holds the job's lease is the only writer, so they can go."""
    for path in paths:
        with contextlib.suppress(OSError):
            for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                if LEFTOVER.match(old.name):
                    old.unlink(missing_ok=True)


class Finisher:
    def __init__(self, store: JobStore, outcomes: Outcomes, output: OutputConfig, owner: str,
                 lease: float, clock: Callable[[], float],
                 shares: Shares | None = None,
                 sink: Callable[[Job, Plan], None] | None = None,
                 probes: Probes | None = None) -> None:
        self.store = store
        self.outcomes = outcomes
        self.output = output
        self.owner = owner
        self.lease = lease
        self.clock = clock
        # Every call about a source or a transcript on a share runs on its mount's worker with
        # the deadline (sharefile.py): a share that hangs mid-write costs this thread one
        # deadline. On a local filesystem they are made here (watcher.py).
        self.shares = shares or Shares()
        self.is_online = self.shares.is_online
        # on_done moves and deletes a share that was away refused: retried here, while this
        # daemon runs (``_tidy_owed``), by source path.
        self.owed: dict[str, tuple[Job, Placement]] = {}
        # Where results go instead of files beside the sources (``sttwatch transcribe``
        # prints them); None: the transcript files of the job's plan.
        self.sink = sink
        # The job's container as the screen probed it (media.Probes, the submitter's): the
        # json header's audio track without opening the file again.
        self.probes = Probes() if probes is None else probes
        self.wake = outcomes.wake_finish
        self.started_at = clock()
        self._owed_at = 0.0

    def run_once(self) -> float:
        now = self.clock()
        claim = self.store.claim_finish_due(self.owner, now, self.lease, 16)
        for job in claim.jobs:
            self.finish(job)
        now = self.clock()
        if self.owed and now >= self._owed_at:
            self._tidy_owed()
        # Read with the claim (the jobs it took count from a lease ahead, a deferred one
        # only later); a result stored meanwhile wakes this loop (wake_finish).
        due = [claim.next_due]
        return sleep_for(now, [*due, self._owed_at] if self.owed else due, floor=0.05)

    def finish(self, job: Job) -> None:
        """A result stored before this finisher started (a crash, a takeover) or whose write
        failed may have left a half-written temp file beside the target: cleared first. A
        fresh one is not looked for: that is a listing of the output folder per file."""
        self._finish(job, after_trouble=job.defers > 0 or job.updated_at < self.started_at)

    def _finish(self, job: Job, after_trouble: bool = False) -> None:
        assert job.result is not None
        plan = self.outcomes.plan(job)
        if self.sink is not None:
            self.sink(job, plan)
            if self.store.mark_done(job, self.clock()):
                self.outcomes.left(job)
            return
        source = Path(job.path)
        now = self.clock()
        if not self.is_online(source):  # its share is away: never write onto the mount point
            self.outcomes.defer(job, now + OFFLINE_RETRY, "its folder is offline")
            return
        place = Placement(source, Path(plan.root), plan.formats, self.output)
        skipped = skip_of(job.result)  # not sent (screen.py): its note, and whether to write
        if skipped is not None and not skipped[1]:
            self._end_unsent(job, plan, skipped[0])
            return
        call, result = self.shares.call, job.result
        media = self.probes.of(source, job.size, job.mtime_ns)
        try:
            # One call on the mount's worker for both: each call is a hand-over to another
            # thread, and the track is most often the screen's probe, not a read.
            hdr = call(source, lambda: {
                **header(job, plan.backend, plan.model, now),
                **audio_track_of(source, plan.options.get("language"), media)})
            # Read once for the name's language, every format and the search entries; None:
            # no profile reads it, and write_transcripts raises why (json kept, job failed).
            layout = readable(result, hdr)
            lang = output_language(layout.transcript if layout else None,
                                   plan.options.get("language"))
            paths = call(place.folder(), lambda: place.paths(job.output_key, lang))
            if after_trouble:
                call(paths[0], lambda: clear_leftovers(paths))
            write_transcripts(paths, plan.formats, job.result, hdr, run=call, layout=layout)
        except RenderError as exc:
            self._unrenderable(job, place, paths, plan, hdr, exc)
            return
        except OSError as exc:
            reason = f"cannot write transcript: {exc.strerror or exc}"
            if unreachable(exc):  # issue 20: its share went away: wait for it, keep the result
                self.outcomes.defer(job, now + OFFLINE_RETRY, "its folder is offline")
                log.warning("write_offline", job_id=job.id, path=job.path, error=reason)
                return
            if write_error_is_permanent(exc):
                self.outcomes.fail(job, f"{reason} ({exc.filename or paths[0]})")
                return
            # The service has delivered (and billed) this result: keep it and try the write
            # again later instead of failing the file and paying for it twice.
            delay = backoff(job.defers + 1, 5.0, 300.0)
            self.outcomes.defer(job, now + delay, reason)
            log.error("write_failed", job_id=job.id, path=job.path, error=reason,
                      retry_in=round(delay))
            return
        index = index_result(self.store, job, plan, layout)
        event = self.outcomes.event(job, plan, "done", None, paths)
        if not self.store.mark_done(job, self.clock(), skipped[0] if skipped else None,
                                    event=event, index=index):
            log.warning("lease_lost", job_id=job.id, path=job.path, stage="finish")
            return
        self.outcomes.left(job)
        self.probes.forget(source, job.size, job.mtime_ns)
        log.info("done", job_id=job.id, path=job.path, generation_id=job.generation_id,
                 outputs=[str(p) for p in paths])
        if job.reused_from is not None:  # its result came from a recording with its bytes
            donor = self.store.get(job.reused_from)
            if donor is not None and donor.state is State.DONE and donor.sha256 == job.sha256:
                self.outcomes.retire(donor)
        self._tidy(job, place)

    def _tidy(self, job: Job, place: Placement) -> bool:
        """The error sidecar cleared and ``on_done`` applied, on the source's mount worker.
        A share that is away (or hung) owes the move: kept in ``owed`` and tried again every
        few seconds until it answers. Only while this daemon runs: after a restart the
        transcribed source stays where it is (known and done, it is never sent again).
        Returns False when it is owed."""
        try:
            outcome = self.shares.call(place.source,
                                       lambda: tidy_source(place, job.size, job.mtime_ns))
        except OSError as exc:
            if unreachable(exc) and self.output.on_done != "keep":
                if job.path not in self.owed:
                    log.warning("on_done_deferred", job_id=job.id, path=job.path,
                                action=self.output.on_done, error=exc.strerror or str(exc),
                                retry="when the share answers again")
                self.owed[job.path] = (job, place)
                self._owed_at = self.clock() + OFFLINE_RETRY
                return False
            log.error("on_done_failed", job_id=job.id, path=job.path, error=str(exc))
            self.owed.pop(job.path, None)
            return True
        self.owed.pop(job.path, None)
        if outcome is not None:
            log.info(outcome.pop("event"), job_id=job.id, path=job.path, **outcome)
        return True

    def _tidy_owed(self) -> None:
        for job, place in list(self.owed.values()):
            if self.is_online(place.source) and not self._tidy(job, place):
                break  # still away: the rest wait for the next round too
        else:
            self._owed_at = self.clock() + OFFLINE_RETRY

    def _end_unsent(self, job: Job, plan: Plan, note: str) -> None:
        """Done without a transcript (a film already subtitled): the note says why."""
        event = self.outcomes.event(job, plan, "done", note, [])
        if self.outcomes.durably(lambda: self.store.mark_done(job, self.clock(), note,
                                                              event=event)):
            self.outcomes.left(job)
            self.probes.forget(Path(job.path), job.size, job.mtime_ns)
            log.info("done", job_id=job.id, path=job.path, note=note, outputs=[])

    def _unrenderable(self, job: Job, place: Placement, paths: Sequence[Path], plan: Plan,
                      hdr: Mapping[str, Any], exc: RenderError) -> None:
        """A billed result we cannot read: keep it (the row and the json output) and fail the
        job so that ``retry --render`` can finish it later without a second payment."""
        assert job.result is not None
        json_path = place.paths(job.output_key)[0].with_suffix(".json") if "json" not in \
            plan.formats else paths[list(plan.formats).index("json")]
        try:
            write_transcripts([json_path], ["json"], job.result, hdr, run=self.shares.call)
        except OSError as err:
            log.warning("json_not_written", job_id=job.id, error=str(err))
        self.outcomes.fail(job, f"cannot render transcript: {exc}; the result is kept in "
                                f"{json_path} (sttwatch retry --render, once sttwatch can "
                                "read it)")
