"""Finding new recordings: watchdog events as hints, scans as the truth, a settle check.

The event handler only puts paths on a queue (an exception in a handler kills watchdog's
dispatcher thread); everything else happens in ``tick``, called from the daemon's main loop.
A file is handed on once it has stopped changing: at once after a rename into the tree or a
close-after-write with no growth since, otherwise after ``settle_seconds`` of no change.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import queue
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .config import FORMAT_KINDS, WatchConfig, watch_for

log = structlog.get_logger("sttwatch.watcher")

TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", "~",
                 ".swp", ".sttwatch-error.json")
CLOSE_QUIET = 1.0  # seconds of no change after a close-after-write before a file is taken
OUTPUT_SUFFIXES = tuple(f".{k}" for k in FORMAT_KINDS)


@dataclass(frozen=True)
class Settled:
    path: Path
    size: int
    mtime_ns: int


def accepts(watch: WatchConfig, path: Path, exclude: Sequence[Path] = ()) -> bool:
    """Is this a recording this watch should take? Hidden names (rsync's ``.name.XXXXXX``,
    our own temp files), download temp names, our own outputs and the output and done
    folders never are."""
    if any(path.is_relative_to(x) for x in exclude):
        return False
    try:
        rel = path.relative_to(watch.path)
    except ValueError:
        return False
    if not rel.parts or any(p.startswith(".") for p in rel.parts):
        return False
    if not watch.recursive and len(rel.parts) > 1:
        return False
    name = path.name.lower()
    if name.endswith(TEMP_SUFFIXES) or name.endswith(OUTPUT_SUFFIXES):
        return False
    if any(fnmatch.fnmatch(name, g.lower()) for g in watch.ignore):
        return False
    return any(fnmatch.fnmatch(name, g.lower()) for g in watch.patterns)


class _Hints(FileSystemEventHandler):
    """Puts (kind, path) on the queue and returns; never raises."""

    def __init__(self, hints: queue.Queue[tuple[str, str]]) -> None:
        self._hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        if event.is_directory:
            if kind in ("created", "moved"):
                self._hints.put(("dir", os.fsdecode(event.dest_path or event.src_path)))
            return
        if kind == "moved":
            self._hints.put(("moved", os.fsdecode(event.dest_path)))
        else:
            self._hints.put((kind, os.fsdecode(event.src_path)))


@dataclass
class _Candidate:
    sig: tuple[int, int] | None = None
    changed_at: float = 0.0
    quick: bool = False  # complete as soon as it is seen unchanged (rename, close, old file)
    closed_sig: tuple[int, int] | None = None


@dataclass
class Watcher:
    """All watched folders: observers, hint queue, settle bookkeeping and scans."""

    watches: Sequence[WatchConfig]
    default_settle: float
    clock: Callable[[], float]
    exclude: tuple[Path, ...] = ()
    hints: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    _candidates: dict[str, _Candidate] = field(default_factory=dict)
    _observers: list[BaseObserver] = field(default_factory=list)

    def start(self) -> None:
        """Start the observers first, then scan, so a file created during the scan is seen."""
        self._observers = []
        for w in self.watches:
            self._observers.append(self._observe(w))
        self.scan()

    def _observe(self, watch: WatchConfig) -> BaseObserver:
        if not watch.path.is_dir():
            watch.path.mkdir(parents=True, exist_ok=True)
            log.info("watch_folder_created", path=str(watch.path))
        observer: BaseObserver = PollingObserver(timeout=2) if watch.polling else Observer()
        try:
            observer.schedule(_Hints(self.hints), str(watch.path), recursive=watch.recursive)
            observer.start()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            log.error("inotify_watch_limit", path=str(watch.path), fix="raise "
                      "fs.inotify.max_user_watches; polling this folder meanwhile")
            observer = PollingObserver(timeout=5)
            observer.schedule(_Hints(self.hints), str(watch.path), recursive=watch.recursive)
            observer.start()
        return observer

    def healthy(self) -> bool:
        """Restart any observer thread that died (vanished share, watch overflow)."""
        ok = True
        if not self._observers:  # a one-off run scans only
            return ok
        for i, (watch, obs) in enumerate(zip(self.watches, self._observers, strict=True)):
            if not obs.is_alive():
                ok = False
                log.warning("observer_died", path=str(watch.path))
                try:
                    self._observers[i] = self._observe(watch)
                except OSError as exc:
                    log.error("observer_restart_failed", path=str(watch.path), error=str(exc))
                    continue
                self.scan()
        return ok

    def stop(self) -> None:
        for obs in self._observers:
            obs.stop()
        for obs in self._observers:
            if obs.is_alive():
                obs.join(timeout=5)

    def scan(self, roots: Sequence[Path] | None = None) -> int:
        """Queue every file under the watched folders; events are hints, this is the truth."""
        count = 0
        for watch in self.watches:
            for root in roots or [watch.path]:
                if root.is_relative_to(watch.path):
                    for path in _walk(root, watch.recursive):
                        self.hints.put(("scan", path))
                        count += 1
        return count

    def _settle_for(self, path: Path) -> tuple[WatchConfig, float] | None:
        w = watch_for(self.watches, path)
        if w is None or not accepts(w, path, self.exclude):
            return None
        return w, w.settle_seconds if w.settle_seconds is not None else self.default_settle

    def tick(self) -> list[Settled]:
        """Take in queued hints, then hand on every candidate that has settled."""
        now = self.clock()
        while True:
            try:
                kind, raw = self.hints.get_nowait()
            except queue.Empty:
                break
            if kind == "dir":
                self.scan([Path(raw)])
                continue
            if kind == "deleted":
                self._candidates.pop(raw, None)
                continue
            cand = self._candidates.setdefault(raw, _Candidate(changed_at=now))
            sig = _stat(raw)
            if kind == "moved":
                cand.quick = True
            elif kind == "closed":
                cand.closed_sig = sig
            elif kind in ("scan", "created") and sig is not None:
                settle = self._settle_for(Path(raw))
                # Old mtime: renamed in from outside or there since before we started.
                if settle is not None and now - sig[1] / 1e9 >= settle[1]:
                    cand.quick = True
        settled: list[Settled] = []
        for raw, cand in list(self._candidates.items()):
            sig = _stat(raw)
            found = self._settle_for(Path(raw))
            if sig is None or found is None:
                del self._candidates[raw]
                continue
            if sig != cand.sig:
                cand.sig, cand.changed_at = sig, now
                if cand.sig is not None and cand.closed_sig not in (None, sig):
                    cand.closed_sig = None
            # After a close with no growth since, a short quiet spell still has to pass:
            # writers that append in several open/write/close rounds would otherwise have
            # each round taken (and paid for) as a new version.
            closed_quiet = cand.closed_sig == sig and now - cand.changed_at >= min(
                found[1], CLOSE_QUIET)
            if cand.quick or closed_quiet or now - cand.changed_at >= found[1]:
                settled.append(Settled(Path(raw), sig[0], sig[1]))
                del self._candidates[raw]
        return settled

    def waiting(self) -> int:
        return len(self._candidates)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


def _walk(root: Path, recursive: bool) -> Iterator[str]:
    if root.is_file():
        yield str(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            yield os.path.join(dirpath, name)
