"""Settled files become jobs: in batches, each with its plan and output name fixed.

One transaction per batch (a first scan of a large library is hundreds of files a commit, not
one fsync each), and a caller that pings between batches; a file already known at the same
size and mtime costs nothing but its share of one lookup per batch. A file whose transcripts
already exist and are newer than it is recorded as done, never sent.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog

from .config import OutputConfig
from .offline import ShareUnreachable
from .plan import Planner
from .store import Admission, Store
from .transcripts import Placement, up_to_date
from .watcher import Settled

log = structlog.get_logger("sttwatch.admission")

BATCH = 500
Guard = Callable[[Path, Callable[[], Admission]], Admission]


def batches(items: Sequence[Settled], size: int = BATCH) -> Iterator[Sequence[Settled]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Admitter:
    def __init__(self, store: Store, planner: Planner, output: OutputConfig,
                 clock: Callable[[], float], wake_submit: threading.Event,
                 guard: Guard | None = None) -> None:
        self.store = store
        # Runs the look at a file's transcripts on its mount's worker, with a deadline, so a
        # hung share never holds the main loop (fsgate.py).
        self.guard = guard
        self.planner = planner
        self.output = output
        self.clock = clock
        self._wake = wake_submit

    def admit(self, batch: Sequence[Settled]) -> int:
        """Returns how many became new work."""
        named: list[tuple[Settled, str]] = []
        for s in batch:
            path = s.raw
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                log.error("unsupported_file_name", path=repr(path),
                          fix="rename the file to a UTF-8 name")
                continue
            named.append((s, path))
        known = self.store.versions([path for _s, path in named])
        offers: list[Admission] = []
        for s, path in named:
            if known.get(path) == (s.size, s.mtime_ns):
                continue
            try:
                offers.append(self._offer(s, path, path in known) if self.guard is None
                              else self.guard(s.path, functools.partial(
                                  self._offer, s, path, path in known)))
            except ShareUnreachable as exc:  # its watch is offline: the rescan brings it back
                log.debug("admit_deferred", path=path, error=exc.strerror)
            except Exception as exc:  # one file's trouble never stops the batch
                log.exception("admit_failed", path=path, error=str(exc))
        if not offers:
            return 0
        jobs = self.store.admit(offers, self.clock())
        for a in offers:
            if a.done_note is not None:
                log.info("already_transcribed", path=a.path)
        wanted = {a.path: a.keys[0] for a in offers if a.keys}
        for job in jobs:
            if job.output_key is not None and job.output_key != wanted.get(job.path):
                log.warning("output_name_taken", job_id=job.id, path=job.path,
                            wanted=wanted.get(job.path), using=job.output_key)
            log.info("queued", job_id=job.id, path=job.path, size=job.size,
                     backend=job.backend, new_version=job.path in known)
        if jobs:
            self._wake.set()
        return len(jobs)

    def _offer(self, s: Settled, path: str, known: bool) -> Admission:
        plan = self.planner.plan_for(s.path)
        place = Placement(s.path, Path(plan.root), plan.formats, self.output)
        keys = place.candidate_keys(None)
        done = None
        if not known and up_to_date(place, s.mtime_ns) and \
                self.store.output_holder(place.keys()[0]) in (None, path):
            done = "transcript already up to date"
        return Admission(path, s.size, s.mtime_ns, plan, keys, done)
