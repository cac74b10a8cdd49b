"""Polling a watch folder on a share at a cost in proportion to change, not to the library.

A directory's mtime changes when an entry is added, removed or renamed in it. So each round
stats the known folders only (one call per folder, not per file), lists just the folders whose
mtime moved, and stats just the new names in them. Files still being written are followed by
the watcher's settle check, not here. In-place rewrites (same name, new content: no folder
mtime change) are caught by a full rescan every ``rescan_seconds``, itself paced at
``RESCAN_RATE`` stats a second so that it never becomes a constant load on the share.

Coarse clocks: SFTP carries whole seconds and SMB may round to 2 s, so an entry added in the
same second as a listing leaves the folder's mtime unchanged. A folder whose mtime is within
``RECENT`` seconds of the time it was listed is listed again on the next round.

Everything runs on the poller's own daemon thread, which nothing joins: a call stuck on a
hung share holds that thread only. Its findings go to callbacks that only queue them.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from .offline import UNREACHABLE, ShareUnreachable

log = structlog.get_logger("sttwatch.dirpoll")

POLL_EVERY = 2.0  # seconds between rounds of folder stats
RECENT = 3.0  # a folder changed this close to its listing is listed again next round
RESCAN_RATE = 1000.0  # file stats a second at most during a full rescan


@dataclass
class _Dir:
    sig: tuple[int, int]  # (st_ino, st_mtime_ns) when it was last listed
    listed_at: float  # wall clock of that listing
    rechecked: bool = False  # listed again once for a change close to its listing
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (size, mtime_ns)
    others: set[str] = field(default_factory=set)  # symlinks and names not wanted
    subdirs: set[str] = field(default_factory=set)


@dataclass
class DirPoller:
    """One polled watch folder. ``found(path, size, mtime_ns)`` receives every file seen for
    the first time or changed since; ``link(path)`` a symlinked name (the watcher judges it);
    ``deleted(path)`` a name gone; ``trouble(exc)`` a call that failed as a dead share does."""

    root: str
    recursive: bool
    wanted: Callable[[str], bool]  # by file name
    skip: frozenset[str]  # folders not to enter (other watches, output and done folders)
    found: Callable[[str, int, int], None]
    link: Callable[[str], None]
    deleted: Callable[[str], None]
    trouble: Callable[[OSError], None]
    interval: float = POLL_EVERY
    rescan_seconds: float = 3600.0
    rescan_rate: float = RESCAN_RATE
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    rounds: int = 0  # finished rounds (the first is the full walk): tests and the bench wait
    _dirs: dict[str, _Dir] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"poll {self.root}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Not joined: a thread stuck on a hung share must not stall whoever stops it."""
        self._stop.set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_rescan = self.monotonic() + self.rescan_seconds
        full = True
        while not self._stop.is_set():
            try:
                if full:
                    self._walk_all(paced=self.rounds > 0)
                else:
                    self._round()
                self.rounds += 1
            except ShareUnreachable as exc:
                self.trouble(exc)
                full = True  # when it answers again, everything is looked at afresh
                self._dirs.clear()
                self._stop.wait(self.interval)
                continue
            except Exception as exc:  # the poller must never die silently
                log.error("poll_failed", path=self.root, error=f"{type(exc).__name__}: {exc}")
            full = self.monotonic() >= next_rescan
            if full:
                next_rescan = self.monotonic() + self.rescan_seconds
            self._stop.wait(self.interval)

    # --- calls on the share --------------------------------------------------------------

    def _call(self, fn: Callable[[], os.stat_result], path: str) -> os.stat_result | None:
        """One call; None when the name is gone or unreadable, ShareUnreachable when the share
        is."""
        try:
            return fn()
        except OSError as exc:
            if exc.errno in UNREACHABLE:
                raise ShareUnreachable(exc.errno, exc.strerror, path) from exc
            return None

    def _list(self, folder: str) -> list[os.DirEntry[str]] | None:
        try:
            with os.scandir(folder) as it:
                return list(it)
        except OSError as exc:
            if exc.errno in UNREACHABLE:
                raise ShareUnreachable(exc.errno, exc.strerror, folder) from exc
            return None

    # --- rounds --------------------------------------------------------------------------

    def _round(self) -> None:
        """Stat each known folder; list those that changed (or changed near their listing)."""
        for folder in list(self._dirs):
            if self._stop.is_set():
                return
            d = self._dirs.get(folder)
            if d is None:
                continue
            st = self._call(lambda f=folder: os.stat(f), folder)  # type: ignore[misc]
            if st is None or not stat.S_ISDIR(st.st_mode):
                if folder != self.root:
                    self._forget(folder)
                continue
            sig = (st.st_ino, st.st_mtime_ns)
            if sig != d.sig:
                self._relist(folder, d, sig, stat_all=False)
            elif not d.rechecked and st.st_mtime_ns / 1e9 >= d.listed_at - RECENT:
                # Once per change, so a folder with a clock ahead of ours is not listed
                # every round.
                self._relist(folder, d, sig, stat_all=False)
                d.rechecked = True

    def _walk_all(self, *, paced: bool) -> None:
        """The first round (everything is new) and each full rescan (every file stat-ed
        again, at ``rescan_rate`` at most, to catch rewrites in place)."""
        stack = [self.root]
        while stack and not self._stop.is_set():
            folder = stack.pop()
            st = self._call(lambda f=folder: os.stat(f), folder)  # type: ignore[misc]
            if st is None or not stat.S_ISDIR(st.st_mode):
                if folder != self.root:
                    self._forget(folder)
                continue
            d = self._dirs.get(folder)
            if d is None:
                d = self._dirs[folder] = _Dir((0, 0), 0.0)
            stats = self._relist(folder, d, (st.st_ino, st.st_mtime_ns), stat_all=True)
            if paced and stats:
                self._stop.wait(stats / self.rescan_rate)
            stack.extend(os.path.join(folder, s) for s in d.subdirs)

    def _relist(self, folder: str, d: _Dir, sig: tuple[int, int], *, stat_all: bool) -> int:
        listed_at = self.clock()
        entries = self._list(folder)
        if entries is None:
            return 0
        stats = 0
        seen_files: set[str] = set()
        seen_dirs: set[str] = set()
        others: set[str] = set()
        for e in entries:
            name = e.name
            if name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    if self.recursive and e.path not in self.skip:
                        seen_dirs.add(name)
                    continue
                if not self.wanted(name):
                    continue
                if e.is_symlink():
                    others.add(name)
                    if name not in d.others or stat_all:
                        self.link(e.path)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
            except OSError as exc:
                if exc.errno in UNREACHABLE:
                    raise ShareUnreachable(exc.errno, exc.strerror, e.path) from exc
                continue
            seen_files.add(name)
            old = d.files.get(name)
            if old is not None and not stat_all:
                continue
            st = self._call(lambda e=e: e.stat(follow_symlinks=False), e.path)  # type: ignore[misc]
            stats += 1
            if st is None:
                continue
            now = (st.st_size, st.st_mtime_ns)
            d.files[name] = now
            if now != old:
                self.found(e.path, now[0], now[1])
        for name in [n for n in d.files if n not in seen_files]:
            del d.files[name]
            self.deleted(os.path.join(folder, name))
        for name in d.others - others:
            self.deleted(os.path.join(folder, name))
        d.others = others
        for name in d.subdirs - seen_dirs:
            self._forget(os.path.join(folder, name))
        for name in seen_dirs - d.subdirs:
            path = os.path.join(folder, name)
            if path not in self._dirs and not stat_all:
                self._dirs[path] = _Dir((0, 0), 0.0)
                self._relist_new(path)
        d.subdirs = seen_dirs
        if sig != d.sig:
            d.rechecked = False
        d.sig, d.listed_at = sig, listed_at
        return stats

    def _relist_new(self, folder: str) -> None:
        """A folder that appeared between rounds: walk it whole (a moved-in tree)."""
        st = self._call(lambda: os.stat(folder), folder)
        if st is None or not stat.S_ISDIR(st.st_mode):
            self._dirs.pop(folder, None)
            return
        d = self._dirs[folder]
        self._relist(folder, d, (st.st_ino, st.st_mtime_ns), stat_all=False)

    def _forget(self, folder: str) -> None:
        """A folder gone: its files (and its sub-folders') are gone too."""
        prefix = folder + os.sep
        for path in [p for p in self._dirs if p == folder or p.startswith(prefix)]:
            d = self._dirs.pop(path)
            for name in d.files:
                self.deleted(os.path.join(path, name))
