"""Settled files become jobs: in batches, each with its plan and output name fixed.

One transaction per batch (a first scan of a large library is hundreds of files a commit, not
one fsync each), and a caller that pings between batches; a file already known at the same
size and mtime costs nothing but its share of one lookup per batch. A file whose transcripts
already exist and are newer than it is recorded as done, never sent.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from .config import OutputConfig
from .identity import sha256_of
from .offline import ShareUnreachable
from .plan import Planner
from .sharefile import Opener, plain_open
from .store import Admission, Plan, Store
from .transcripts import Placement, up_to_date

log = structlog.get_logger("sttwatch.admission")


class Settled(Protocol):
    """A file the watcher hands on (``watcher.Settled``): the stages meet at the store, so
    admission names only what it reads of it."""

    @property
    def raw(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime_ns(self) -> int: ...

    @property
    def path(self) -> Path: ...

BATCH = 500
Guard = Callable[[Path, Callable[[], Admission]], Admission]


def batches(items: Sequence[Settled], size: int = BATCH) -> Iterator[Sequence[Settled]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Admitter:
    def __init__(self, store: Store, planner: Planner, output: OutputConfig,
                 clock: Callable[[], float], wake_submit: threading.Event,
                 owner: str | None = None, guard: Guard | None = None,
                 opener: Opener = plain_open) -> None:
        self.store = store
        self.owner = owner
        # Runs the look at a file (its hash, its transcripts) on its mount's worker, with a
        # deadline, so a hung share never holds the main loop (fsgate.py).
        self.guard = guard
        # The hash reads the whole file: a block at a time with the deadline, not as one call
        # (sharefile.py); an hour-long recording on a slow share outlasts any one deadline.
        self.opener = opener
        self.planner = planner
        self.output = output
        self.clock = clock
        self._wake = wake_submit

    def admit(self, batch: Sequence[Settled]) -> int:
        """Returns how many became new work. The submitter is woken by any batch, not only
        by one that queued work here: on a shared library another host may have queued
        these files a moment before (between this scan's look at the store and its
        admission), and this daemon's submitter, asleep since its last look found nothing,
        would otherwise wait out its idle sleep with its share of the service's slots."""
        named = self._named(batch)
        try:
            return self._admit(named)
        finally:
            if named:
                self._wake.set()

    def _named(self, batch: Sequence[Settled]) -> list[tuple[Settled, str]]:
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
        return named

    def _admit(self, named: list[tuple[Settled, str]]) -> int:
        known = self.store.versions([path for _s, path in named])
        fresh = [(s, path) for s, path in named if known.get(path) != (s.size, s.mtime_ns)]
        if not fresh:
            return 0
        # The same bytes under a newer mtime are no new version: hashed only where the row
        # knows its bytes' digest and the file looks newer (another host's view, a touch).
        newer = [path for s, path in fresh if path in known and (
            s.mtime_ns > known[path][1] or (s.mtime_ns == known[path][1]
                                            and s.size != known[path][0]))]
        digests = self.store.known_sha256(newer) if newer else {}
        places = {path: self._place(s) for s, path in fresh}
        holders = self.store.output_holders(
            [k for placed, _plan in places.values() for k in placed.keys()])  # noqa: SIM118
        holding = set(holders.values())
        offers: list[Admission] = []
        for s, path in fresh:
            try:
                digest = sha256_of(s.path, self.opener) if path in digests else None
                offer = functools.partial(
                    self._offer, s, path, path in known, places[path], holders, digest,
                    path in known and path not in holding)
                offers.append(offer() if self.guard is None else self.guard(s.path, offer))
            except ShareUnreachable as exc:  # its watch is offline: the rescan brings it back
                log.debug("admit_deferred", path=path, error=exc.strerror)
            except Exception as exc:  # one file's trouble never stops the batch
                log.exception("admit_failed", path=path, error=str(exc))
        if not offers:
            return 0
        jobs = self.store.admit(offers, self.clock(), self.owner)
        queued = {j.path for j in jobs}
        for a in offers:
            if a.done_note is not None and a.path not in queued:
                log.info("already_transcribed", path=a.path, output=a.keys[0] if a.keys
                         else None)
        first = {a.path: places[a.path][0].keys()[0] for a in offers}
        for job in jobs:
            if job.output_key is not None and job.output_key != first.get(job.path):
                log.warning("output_name_taken", job_id=job.id, path=job.path,
                            wanted=first.get(job.path), using=job.output_key)
            log.info("queued", job_id=job.id, path=job.path, size=job.size,
                     backend=job.backend, new_version=job.path in known)
        return len(jobs)

    def _place(self, s: Settled) -> tuple[Placement, Plan]:
        plan = self.planner.plan_for(s.path)
        return Placement(s.path, Path(plan.root), plan.formats, self.output), plan

    def _offer(self, s: Settled, path: str, known: bool, placed: tuple[Placement, Plan],
               holders: Mapping[str, str], digest: str | None,
               legacy: bool = False) -> Admission:
        """The names this file may take: its own, or ones no other source holds whose
        transcripts do not exist yet; a transcript sttwatch did not write is never replaced
        (the file takes the next name). A new file whose transcripts are already there and
        newer is recorded as done, holding their name."""
        place, plan = placed
        first, second = place.keys()
        if legacy and first not in holders:
            holders = {**holders, first: path}  # its transcripts there were its own
        done = None
        keys: list[str] = []
        if not known:
            for key in (first, second):
                if holders.get(key, path) == path and up_to_date(place, s.mtime_ns, key):
                    done, keys = "transcript already up to date", [key]
                    break
        skipped = []
        for key in place.all_keys():
            if keys and key not in (first, second):
                break  # numbered names only when both usual ones are out of reach
            holder = holders.get(key) if key in (first, second) else \
                self.store.output_holder(key)
            mine = holder == path
            if (holder is not None and not mine) or key in keys:
                continue
            # Its own name stays its own, unless sources leave the folder (on_done): then a
            # file at the same path is a new recording, and the transcripts are the last's.
            if not (mine and self.output.on_done == "keep") and place.on_disk(key):
                skipped.append(key)
                continue
            if mine:
                keys.insert(0, key)
            else:
                keys.append(key)
        if skipped:
            log.warning("output_name_in_use", path=path, skipped=skipped,
                        reason="transcripts there are not this recording's (another's, "
                               "or not sttwatch's)")
        return Admission(path, s.size, s.mtime_ns, plan, tuple(dict.fromkeys(keys)), done,
                         digest, digest_read=True)
