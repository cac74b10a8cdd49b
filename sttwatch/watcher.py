"""Finding new recordings: watchdog events as hints, scans as the truth, a settle check, and
watches that are checked rather than trusted.

The event handler only puts paths on a queue (an exception in a handler kills watchdog's
dispatcher thread); everything else happens in ``tick``, called from the daemon's main loop.
A file is handed on once it has stopped changing: at once after a rename into the tree or a
close-after-write with no growth since, otherwise after ``settle_seconds`` of no change.

Each watch is *online* or *offline*. Offline means its folder is missing, unreachable
(ENOTCONN, ESTALE, EIO...) or no longer on the filesystem it was found on (a share that was
unmounted leaves the bare mount point behind). An offline watch yields nothing and nothing is
created in it; when it comes back its observer is armed again and it is rescanned. The same
re-arming happens when a folder is replaced (``rm -rf inbox; mkdir inbox``) or its watchdog
emitter stopped while the observer thread lives on.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
from watchdog.observers.inotify import InotifyFullEmitter, InotifyObserver
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)

from .config import FORMAT_KINDS, WatchConfig, watch_for
from .dirpoll import POLL_EVERY, DirPoller
from .fsgate import FsGate, ShareHung
from .mounts import MountTable, mount_of
from .offline import UNREACHABLE
from .sharefile import ShareFile, Source

log = structlog.get_logger("sttwatch.watcher")
T = TypeVar("T")

ERROR_SUFFIX = ".sttwatch-error.json"
TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", "~",
                 ".swp", ERROR_SUFFIX)
CLOSE_QUIET = 1.0  # seconds of no change after a close-after-write before a file is taken
CHECK_EVERY = 1.0  # seconds between checks that each watch is there and its observer alive
COMPARE_EVERY = 1000  # listed files (whole folders) compared with the store in one ask
OUTPUT_SUFFIXES = tuple(f".{k}" for k in FORMAT_KINDS)
NEVER_SUFFIXES = (*TEMP_SUFFIXES, *OUTPUT_SUFFIXES)  # never a recording, whatever the patterns
# Names our own transcript writes produce (temp file, rename, sidecar): dropped in the event
# handler so they never cost a stat or a settle judgement.
OWN_SUFFIXES = (*OUTPUT_SUFFIXES, ".tmp", ERROR_SUFFIX)
LIMIT_FIX = ("raise it: sysctl -w fs.inotify.max_user_watches=524288, and keep it in a file "
             "under /etc/sysctl.d/; polling this folder meanwhile")
# The events the hints use, asked of inotify: opens and reads (every scan's folders, every
# upload's file) are left in the kernel rather than read and dropped in the handler.
HINT_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, DirModifiedEvent, FileMovedEvent,
    DirMovedEvent, FileDeletedEvent, DirDeletedEvent, FileClosedEvent]
OVERFLOW_FIX = ("events were lost and a rescan finds the files; if it recurs raise "
                "fs.inotify.max_queued_events (sysctl -w fs.inotify.max_queued_events=65536)")


@dataclass(frozen=True)
class Settled:
    """A file handed on, as the string the walk found: most of a rescan's files are known
    and unchanged, and a ``Path`` for each would cost more than the rest of the rescan."""

    raw: str
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return Path(self.raw)


def accepts(watch: WatchConfig, path: Path, exclude: Sequence[Path] = ()) -> bool:
    """Is this a recording this watch should take? Hidden names (rsync's ``.name.XXXXXX``,
    our own temp files), download temp names, our own outputs and the output and done
    folders never are."""
    return _accepts(watch, _Names(watch), path, exclude)


def _accepts(watch: WatchConfig, names: _Names, path: Path, exclude: Sequence[Path]) -> bool:
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
    return names.wanted(path.name)


class _Names:
    """A watch's name rules compiled once: a rescan judges every file name by them. Globs
    that only name an ending (``*.mp3``, the shipped patterns) are one ``endswith``, not a
    regex that runs each of its twenty ``.*\\.ext`` alternatives over the name: 200,000
    names (a library of 100,000 recordings and their transcripts) in 0.07 s, not 0.12."""

    def __init__(self, watch: WatchConfig) -> None:
        ends, rest = _endings(watch.patterns)
        self._ends = ends
        self._take = _globs(rest)
        self._skip = _globs(watch.ignore)

    def wanted(self, name: str) -> bool:
        low = name.lower()
        if not low.endswith(self._ends) and (self._take is None or
                                             self._take.match(low) is None):
            return False
        if low.startswith(".") or low.endswith(NEVER_SUFFIXES):
            return False
        return self._skip is None or self._skip.match(low) is None


def _endings(globs: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
    """The endings of the globs that are ``*`` and a literal ending, and the other globs."""
    ends: list[str] = []
    rest: list[str] = []
    for g in globs:
        low = g.lower()
        if low.startswith("*") and not any(c in low[1:] for c in "*?["):
            ends.append(low[1:])
        else:
            rest.append(g)
    return tuple(ends), rest


def _globs(globs: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(g.lower()) for g in globs]
    return re.compile("|".join(parts)) if parts else None


def _own_or_hidden(path: str) -> bool:
    name = os.path.basename(path).lower()
    return name.startswith(".") or name.endswith(OWN_SUFFIXES)


OWN_NAMES = tuple(os.fsencode(s) for s in OWN_SUFFIXES)


def _own_or_hidden_name(name: bytes) -> bool:
    """``_own_or_hidden`` for a raw inotify name (one entry of a watched folder)."""
    low = name.lower()
    return low.startswith(b".") or low.endswith(OWN_NAMES)


class _Hints(FileSystemEventHandler):
    """Puts (kind, path) on the queue and returns; never raises."""

    def __init__(self, hints: queue.Queue[tuple[str, str]], root: str,
                 wake: threading.Event | None = None) -> None:
        self._hints = hints
        self._root = root
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path)
        if event.is_directory:
            if kind == "created" or (kind == "moved" and dest):
                self._hints.put(("dir", dest or src))
            elif kind == "deleted" and src == self._root:
                self._hints.put(("gone", src))
            return
        if kind == "moved":  # full events: "" is the side outside the watched tree
            if src and not _own_or_hidden(src):
                self._hints.put(("deleted", src))
            if dest and not _own_or_hidden(dest):
                self._hints.put(("moved", dest))
        elif not _own_or_hidden(src):
            self._hints.put((kind, src))
        else:
            return
        if self._wake is not None:  # the main loop sleeps until something happens
            self._wake.set()


class _CheckedInotify(InotifyFD):
    """watchdog's inotify reader, reporting what watchdog only logs or swallows: a queue
    overflow (events were lost) and the watch limit reached below the root (ENOSPC).

    A file event whose name can never be a hint (a hidden name, a transcript, a temp file:
    ``_own_or_hidden``) ends here, before watchdog's move pairing, emitter and dispatcher
    threads. Each transcript written beside its source is five or more such events (create,
    write, close, and the rename's two halves, the first held half a second for its pair),
    and every daemon watching the folder gets them for every host's transcripts: with
    several hosts on one share that was the watcher's largest cost per file. A rename
    between a kept and a dropped name still reaches the handler as its kept half (a move
    from or to outside the tree), which is what the handler takes from it anyway."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__()
        self._report = report

    def handle_event(self, event: InotifyEvent) -> None:
        if event.is_queue_overflow:
            self._report("overflow")
        elif event.name and not event.is_directory and _own_or_hidden_name(event.name):
            return
        super().handle_event(event)

    def add_callback(self, path: bytes, mask: Mask, callback: WatchCallback,
                     id_: CallbackId) -> WatchDescriptor:
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._report("watch_limit")
            raise


class _Observer(InotifyObserver):
    """``InotifyObserver(generate_full_events=True)`` with the checked reader: a file moved
    in from an unwatched folder then arrives as a move (complete), not as a creation."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._inotify_fd = _CheckedInotify(report)
        self._inotify_fd.start()
        BaseObserver.__init__(self, InotifyFullEmitter, timeout=DEFAULT_OBSERVER_TIMEOUT,
                              inotify_fd=self._inotify_fd)


@dataclass(frozen=True)
class Probe:
    """What one look at a watch folder found."""

    online: bool
    reason: str
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder
    blocked: bool = False  # a file stands where the folder (or one above it) should be


def probe(path: Path, mount: Path | None) -> Probe:
    """Is the folder there, reachable, and (when it was found on a mounted filesystem) is
    that filesystem still mounted? ``mount`` is the mount point seen when it was last online."""
    try:
        st = os.stat(path)
        if mount is not None and mount != Path(mount.anchor):
            top = st if mount == path else os.stat(mount)
            if top.st_dev == os.stat(mount.parent).st_dev:
                return Probe(False, f"the filesystem mounted at {mount} is gone")
            if top.st_dev != st.st_dev:
                return Probe(False, f"no longer on the filesystem mounted at {mount}")
    except FileNotFoundError:
        return Probe(False, "folder missing")
    except OSError as exc:
        what = "unreachable" if exc.errno in UNREACHABLE else "cannot be read"
        return Probe(False, f"{what}: {exc.strerror or exc}",
                     blocked=exc.errno == errno.ENOTDIR)
    if not stat.S_ISDIR(st.st_mode):
        return Probe(False, "not a folder", blocked=True)
    return Probe(True, "", (st.st_dev, st.st_ino))


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem ``path`` lives on (``/`` when nothing is between)."""
    dev = os.stat(path).st_dev
    while path.parent != path:
        try:
            if os.stat(path.parent).st_dev != dev:
                return path
        except OSError:
            return path
        path = path.parent
    return path


@dataclass
class _Watch:
    """One watched folder's live state; changed by the main loop only."""

    config: WatchConfig
    names: _Names
    online: bool = False
    reason: str = "not checked yet"
    ident: tuple[int, int] | None = None
    mount: Path | None = None
    observer: BaseObserver | None = None
    polling: bool = False  # fell back to polling: the inotify watch limit was reached
    polled: bool = False  # polled rather than inotify (a share, or the config says so)
    poll_reason: str = ""
    poller: DirPoller | None = None
    gate_key: str = ""  # the mount whose worker makes this watch's calls (fsgate.py)
    arm_error: str | None = None  # the observer could not be started; rescans still run
    overflowed: bool = False


@dataclass
class _Candidate:
    watch: _Watch
    settle: float
    sig: tuple[int, int] | None = None
    changed_at: float = 0.0
    quick: bool = False  # complete as soon as it is seen unchanged (rename, close, old file)
    closed_sig: tuple[int, int] | None = None


@dataclass
class Watcher:
    """All watched folders: observers, hint queue, settle bookkeeping, scans, and whether
    each watch is online."""

    watches: Sequence[WatchConfig]
    default_settle: float
    clock: Callable[[], float]
    exclude: tuple[Path, ...] = ()
    hints: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    # Set by the event handler when a hint arrives; the daemon's main loop waits on it.
    wake: threading.Event = field(default_factory=threading.Event)
    monotonic: Callable[[], float] = time.monotonic
    share_rescan_seconds: float = 3600.0  # full rescan of a polled watch
    poll_every: float = POLL_EVERY
    # Calls on watch folders go through each mount's worker, with a deadline: a hung share
    # never blocks the main loop (or a stage asking whether a folder is online) for longer.
    gate: FsGate = field(default_factory=FsGate)
    # Which filesystem each path is on, asked per call (one poll while nothing is mounted
    # or unmounted): calls on a local one are made on the calling thread, not the worker.
    mounts: MountTable = field(default_factory=MountTable)
    batch: int = 2000  # settled files handed on per tick at most: the main loop stays lively
    # Which of the listed files (path, size, mtime_ns; one folder's each) the store does not
    # know as they are now, asked once for many: a scan hands on only those. Most of a
    # rescan's files are known and unchanged; each would otherwise cost a settle judgement,
    # a ``Settled`` and its share of an admission batch, only to be dropped there.
    unknown: Callable[[Sequence[Sequence[tuple[str, int, int]]]],
                      list[tuple[str, int, int]]] | None = None
    _candidates: dict[str, _Candidate] = field(default_factory=dict)
    # Files the pollers found (path, size, mtime_ns, watch root): filled by their threads.
    _polled: queue.Queue[tuple[str, int, int, str]] = field(default_factory=queue.Queue)
    _scanned: list[tuple[str, int, int, _Watch]] = field(default_factory=list)
    _states: dict[str, _Watch] = field(default_factory=dict)
    _started: bool = False
    _next_check: float = 0.0
    _replaced: bool = False
    _links_seen: set[str] = field(default_factory=set)

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Arm every online watch first, then scan, so a file created during the scan is
        seen. A missing folder is waited for (offline) unless its watch says ``create``."""
        self._started = True
        self._ensure_states()  # a watch first looked at here is armed as it comes online
        for w in self._states.values():
            # Armed once: arming walks the whole tree for its folders (watchdog adds a watch
            # to each), a tenth of the start-up CPU with 100,000 files.
            if w.online and w.observer is None and w.poller is None:
                self._arm(w)
        self._next_check = self.monotonic() + CHECK_EVERY
        self.scan()

    def stop(self) -> None:
        observers = [w.observer for w in self._states.values() if w.observer is not None]
        for obs in observers:
            obs.stop()
        for obs in observers:
            if obs.is_alive():
                obs.join(timeout=5)
        for w in self._states.values():
            w.observer = None
            if w.poller is not None:
                w.poller.stop()
                w.poller = None
        self._started = False

    def healthy(self) -> bool:
        """Check every watch now; False when an observer had to be replaced since the last
        call (a dead thread or emitter, a replaced folder). An offline watch is a known state
        the daemon waits out, not ill health."""
        self._supervise()
        ok, self._replaced = not self._replaced, False
        return ok

    # --- state for the pipeline and status ----------------------------------------------

    def watch_states(self) -> dict[str, bool]:
        """Each watch folder and whether it is online, for ``status`` and the heartbeat."""
        self._ensure_states()
        return {key: w.online for key, w in self._states.items()}

    def watch_notes(self) -> dict[str, str]:
        """How each watch is watched, for ``status``: polled (and why) or offline (and why)."""
        self._ensure_states()
        notes = {}
        for key, w in self._states.items():
            if not w.online:
                notes[key] = f"offline: {w.reason}"
            elif w.polled or w.polling:
                notes[key] = f"polled: {w.poll_reason or 'the inotify watch limit was reached'}"
        return notes

    def is_online(self, path: Path) -> bool:
        """May files about ``path`` be read or written now? False while the watch holding it
        is offline; looks at the folder again, so a share that went away a moment ago is
        caught before the next check. Safe to call from any thread."""
        cfg = watch_for(self.watches, Path(path))
        if cfg is None:
            return True
        w = self._states.get(str(cfg.path))
        if w is None:
            return self._probe(cfg, self._gate_key(cfg.path), None).online
        if not w.online:
            return False
        here = self.mounts.local(cfg.path)
        now = self._probe(cfg, None if here else w.gate_key, w.mount)
        return now.online and now.ident == w.ident

    def _probe(self, cfg: WatchConfig, key: str | None, mount: Path | None) -> Probe:
        """``probe`` on the mount's worker (here when ``key`` is None: a local folder): a
        share that does not answer is hung."""
        if key is None:
            return probe(cfg.path, mount)
        try:
            return self.gate.call(key, lambda: probe(cfg.path, mount), str(cfg.path))
        except ShareHung as exc:
            return Probe(False, f"hung: {exc.strerror}")

    def _gate_key(self, path: Path) -> str:
        """The mount point (from the mount table, without touching the folder) whose worker
        makes calls about ``path``."""
        m = self.mounts.lookup(path)
        return str(m.point) if m is not None else str(path)

    def _key_of(self, path: Path) -> str | None:
        """The worker that makes calls about ``path``, or None: make them here. Here when
        the path, and every mount on the way to it, is on a local filesystem now (the mount
        table, asked per call, so a share mounted over a watched folder a moment ago is
        already the worker's) and its watch is online. An offline watch, a share, a FUSE
        or unknown filesystem, or a table that cannot be read: the worker, with the
        deadline."""
        cfg = watch_for(self.watches, path)
        w = None if cfg is None else self._states.get(str(cfg.path))
        if (w is None or w.online) and self.mounts.local(path):
            return None
        return w.gate_key if w is not None else self._gate_key(path)

    def call(self, path: Path, fn: Callable[[], T]) -> T:
        """``fn()`` (a call about ``path``) on its mount's worker, with the deadline; raises
        ``ShareHung`` when that share does not answer. On a local filesystem: here."""
        key = self._key_of(path)
        return fn() if key is None else self.gate.call(key, fn, str(path))

    def open(self, path: Path) -> Source:
        """``path`` opened for reading on its mount's worker, each block read there with
        the deadline (sharefile.py): for reads too long for one deadline (a hash, an
        upload). On a local filesystem: a plain buffered file."""
        key = self._key_of(path)
        return path.open("rb") if key is None else ShareFile(self.gate, key, path)

    def guarded(self, path: Path, fn: Callable[[], list[T]]) -> list[T]:
        """``fn()`` (a call about ``path`` that lists things) on its mount's worker; nothing
        when that share is hung."""
        try:
            return self.gate.call(self._gate_key(path), fn, str(path))
        except ShareHung as exc:
            log.warning("share_call_skipped", path=str(path), error=exc.strerror)
            return []

    def waiting(self) -> int:
        return len(self._candidates) + len(self._scanned)

    def backlog(self) -> int:
        """Scanned files not yet handed on: the next ``tick`` has work without waiting."""
        return len(self._scanned)

    # --- watches ----------------------------------------------------------------------

    def _ensure_states(self) -> None:
        """Look at each watch the first time. A file where a watch folder should be is a
        mistake in the config, not a share yet to come: that raises (NotADirectoryError)."""
        for cfg in self.watches:
            key = str(cfg.path)
            if key in self._states:
                continue
            gate_key = self._gate_key(cfg.path)
            found = self._probe(cfg, gate_key, None)
            if found.blocked:
                raise NotADirectoryError(errno.ENOTDIR, f"cannot watch: {found.reason}", key)
            w = self._states[key] = _Watch(cfg, _Names(cfg), gate_key=gate_key)
            if not found.online and found.reason == "folder missing" and cfg.create:
                cfg.path.mkdir(parents=True, exist_ok=True)
                log.info("watch_folder_created", path=key)
                found = self._probe(cfg, gate_key, None)
            if found.online:
                self._went_online(w, found, rescan=False)
            else:
                self._went_offline(w, found.reason + ("" if cfg.create else
                                                      ": waiting for it (create: false)"))

    def _went_online(self, w: _Watch, found: Probe, *, rescan: bool) -> None:
        w.online, w.reason, w.ident = True, "", found.ident
        # A share mounted over the folder since it was last online has its own worker: a
        # hang on it must not stop the calls of the filesystem it was mounted on.
        self.mounts.read_again()
        w.gate_key = self._gate_key(w.config.path)
        try:
            w.mount = self.gate.call(w.gate_key, lambda: mount_point(w.config.path))
        except OSError:
            w.mount = None
        self._choose_polling(w)
        if self._started:
            self._arm(w)
        files = self.scan([w.config.path]) if rescan else None
        log.info("watch_online", path=str(w.config.path), mount=str(w.mount), rescanned=files)

    def _choose_polling(self, w: _Watch) -> None:
        """``polling: auto`` polls a folder on a network or FUSE filesystem: other hosts'
        changes to it send no inotify event. Said once per watch (and again if it changes)."""
        setting = w.config.polling
        m = mount_of(w.config.path)
        fstype = m.fstype if m is not None else "unknown"
        if setting == "auto":
            polled = m is not None and m.network
            reason = (f"on a {fstype} filesystem, which sends no events for other hosts' "
                      "changes (polling: auto)")
        else:
            polled = bool(setting)
            reason = f"polling: true in the config ({fstype})"
        if polled and (not w.polled or reason != w.poll_reason):
            log.info("watch_polled", path=str(w.config.path), fstype=fstype, reason=reason,
                     every_seconds=self.poll_every,
                     full_rescan_seconds=self.share_rescan_seconds)
        w.polled, w.poll_reason = polled, reason if polled else ""

    def _went_offline(self, w: _Watch, reason: str) -> None:
        w.online, w.reason, w.ident = False, reason, None
        self._disarm(w)
        root = str(w.config.path)
        for raw in [r for r, c in self._candidates.items() if c.watch is w]:
            del self._candidates[raw]
        self._scanned = [s for s in self._scanned if s[3] is not w]
        log.warning("watch_offline", path=root, reason=reason,
                    action="nothing is taken from or written into it until it is back")

    def _arm(self, w: _Watch) -> None:
        self._disarm(w)
        root = str(w.config.path)
        report: Callable[[str], None] = lambda kind: self.hints.put((kind, root))  # noqa: E731
        if w.polled or w.polling:
            self._start_poller(w)
            return
        obs: BaseObserver
        try:
            obs = _Observer(report)
            obs.schedule(_Hints(self.hints, root, self.wake), root,
                         recursive=w.config.recursive, event_filter=HINT_EVENTS)
            obs.start()
        except OSError as exc:
            if exc.errno != errno.ENOSPC or w.polling:
                w.arm_error = str(exc)
                log.error("watch_failed", path=root, error=str(exc),
                          action="rescans find its files; retried when the folder changes")
                return
            self._limit_reached(w)
            return
        w.observer, w.arm_error = obs, None

    def _start_poller(self, w: _Watch) -> None:
        root = str(w.config.path)
        skip = frozenset({str(x) for x in self.exclude} | {k for k in self._states if k != root})

        def found(raw: str, size: int, mtime_ns: int) -> None:
            self._polled.put((raw, size, mtime_ns, root))
            self.wake.set()

        def hint(kind: str) -> Callable[[str], None]:
            def put(raw: str) -> None:
                self.hints.put((kind, raw))
                self.wake.set()
            return put

        def trouble(exc: OSError) -> None:
            log.debug("poll_unreachable", path=root, error=str(exc))
            self.hints.put(("gone", root))
            self.wake.set()

        w.poller = DirPoller(root, w.config.recursive, w.names.wanted, skip, found,
                             hint("created"), hint("deleted"), trouble,
                             interval=self.poll_every,
                             rescan_seconds=self.share_rescan_seconds)
        w.poller.start()
        w.arm_error = None

    def _disarm(self, w: _Watch) -> None:
        poller, w.poller = w.poller, None
        if poller is not None:
            poller.stop()
        obs, w.observer = w.observer, None
        if obs is not None:
            obs.stop()  # not joined: a thread stuck on a dead share must not stall the loop

    def _limit_reached(self, w: _Watch) -> None:
        if not w.polling:
            log.error("inotify_watch_limit", path=str(w.config.path),
                      setting="fs.inotify.max_user_watches", fix=LIMIT_FIX)
        w.polling = True
        self._arm(w)

    def _observer_trouble(self, w: _Watch) -> str | None:
        if w.poller is not None:
            return None if w.poller.is_alive() else "poller thread died"
        obs = w.observer
        if obs is None:
            return None if w.arm_error is not None else "not armed"
        if not obs.is_alive():
            return "observer thread died"
        if not obs.emitters or not all(e.is_alive() for e in obs.emitters):
            return "watchdog emitter stopped"
        return None

    def _supervise(self) -> None:
        """Probe every watch; turn each change into one transition (logged once)."""
        self._ensure_states()
        self._next_check = self.monotonic() + CHECK_EVERY
        for w in self._states.values():
            # An offline watch keeps the mount point it had: the folder showing up again on
            # the bare mount point is not the share coming back.
            found = self._probe(w.config, w.gate_key, w.mount)
            if not found.online:
                if w.online or w.reason != found.reason:
                    if w.online:
                        self._went_offline(w, found.reason)
                    else:
                        w.reason = found.reason
                continue
            if not w.online:
                self._went_online(w, found, rescan=True)
                continue
            why = ("folder replaced or remounted" if found.ident != w.ident
                   else self._observer_trouble(w) if self._started else None)
            if why is not None:
                self._replaced = True
                log.warning("watch_rearmed", path=str(w.config.path), reason=why)
                self._went_online(w, found, rescan=True)

    def _watch_of(self, raw: str) -> _Watch | None:
        cfg = watch_for(self.watches, Path(raw))
        return None if cfg is None else self._states.get(str(cfg.path))

    # --- scans ------------------------------------------------------------------------

    def scan(self, roots: Sequence[Path] | None = None) -> int:
        """Queue every file under the online watch folders (or under ``roots`` only) that the
        store does not know at its size and mtime; events are hints, this is the truth. Reads
        each folder with one scandir and one stat per candidate file. Returns how many files
        were found, known or not."""
        self._ensure_states()
        count = 0
        tops = ([(w, w.config.path) for w in self._states.values()] if roots is None else
                [(w, r) for r in roots if (w := self._watch_of(str(r))) is not None])
        for w, top in tops:
            if not w.online or w.poller is not None or not self._dir_wanted(w, top):
                continue  # a poller walks its own watch, paced
            try:
                count += self._walk(w, str(top), self._scanned)
            except ShareHung as exc:  # what it found so far goes with the watch
                self._went_offline(w, f"hung: {exc.strerror}")
        return count

    def _dir_wanted(self, w: _Watch, top: Path) -> bool:
        if any(top.is_relative_to(x) for x in self.exclude):
            return False
        rel = top.relative_to(w.config.path).parts
        return not any(p.startswith(".") for p in rel) and (w.config.recursive or not rel)

    def _walk(self, w: _Watch, top: str, out: list[tuple[str, int, int, _Watch]]) -> int:
        """Appends each wanted file under ``top`` the store does not know as it is to ``out``;
        returns how many were found. Other watches' folders below this one are theirs to
        scan; hidden folders, the output and done folders and symlinked folders are not
        entered. A rescan of a large library is this loop: each entry costs what scandir
        already knows (its name and type), a wanted file one lstat and its share of one
        store read per thousand files."""
        skip = {str(x) for x in self.exclude} | {k for k in self._states if k != top}
        listed: list[list[tuple[str, int, int]]] = []
        found = waiting = 0
        stack = [top]
        while stack:
            folder = stack.pop()
            # On a share, each folder is read on its mount's worker with the deadline: one
            # that hangs (``polling: false`` on a share) raises ShareHung here instead of
            # holding the main loop. Local folders are read here: no handoff per folder.
            try:
                files, below = self._list(w, folder, skip) if self.mounts.local(
                    Path(folder)) else self.gate.call(
                    w.gate_key, lambda f=folder: self._list(w, f, skip),  # type: ignore[misc]
                    folder)
            except ShareHung:
                raise
            except OSError as exc:
                log.debug("scan_folder_failed", path=folder, error=str(exc))
                continue
            stack.extend(below)
            if files:
                listed.append(files)
                waiting += len(files)
            if waiting >= COMPARE_EVERY:  # whole folders in one ask
                found += waiting
                self._unknown(w, listed, out)
                listed, waiting = [], 0
        self._unknown(w, listed, out)
        return found + waiting

    def _list(self, w: _Watch, folder: str, skip: set[str]
              ) -> tuple[list[tuple[str, int, int]], list[str]]:
        """One folder's wanted files (path, size, mtime_ns) and the folders to enter.
        Listed through the folder's descriptor: each lstat then looks up one name, not the
        whole path again."""
        files: list[tuple[str, int, int]] = []
        below: list[str] = []
        recursive, wanted = w.config.recursive, w.names.wanted
        base = folder if folder.endswith("/") else folder + "/"
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with os.scandir(fd) as entries:
                for e in entries:
                    name = e.name
                    if name[0] == ".":
                        continue
                    try:
                        if e.is_dir(follow_symlinks=False):
                            if recursive and (sub := base + name) not in skip:
                                below.append(sub)
                        elif not wanted(name):
                            continue
                        elif e.is_file(follow_symlinks=False):
                            st = e.stat(follow_symlinks=False)
                            files.append((base + name, st.st_size, st.st_mtime_ns))
                        elif e.is_symlink():
                            sig = self._link_sig(w, base + name)
                            if sig is not None:
                                files.append((base + name, sig[0], sig[1]))
                    except OSError:
                        continue
        finally:
            os.close(fd)
        return files, below

    def _unknown(self, w: _Watch, listed: list[list[tuple[str, int, int]]],
                 out: list[tuple[str, int, int, _Watch]]) -> None:
        """Appends to ``out`` the files of ``listed`` the store does not know at their size
        and mtime."""
        if not listed:
            return
        fresh = ([f for files in listed for f in files] if self.unknown is None
                 else self.unknown(listed))
        out += [(raw, size, mtime_ns, w) for raw, size, mtime_ns in fresh]

    # --- symlinks -----------------------------------------------------------------------

    def _link_sig(self, w: _Watch, raw: str) -> tuple[int, int] | None:
        """A symlinked recording is taken only when its watch follows symlinks and the target
        lies inside a watched folder; anything else is skipped, and said once."""
        if not w.config.follow_symlinks:
            self._link_note(raw, "symlink_skipped", "follow_symlinks is false for this watch")
            return None
        target = os.path.realpath(raw)
        inside = any(Path(target).is_relative_to(os.path.realpath(c.path)) for c in self.watches)
        if not inside:
            self._link_note(raw, "symlink_skipped", f"its target {target} is outside "
                            "every watched folder")
            return None
        try:
            st = os.stat(target)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None

    def _link_note(self, raw: str, event: str, reason: str) -> None:
        if raw not in self._links_seen:
            self._links_seen.add(raw)
            log.info(event, path=raw, reason=reason)

    def _sig(self, w: _Watch, raw: str) -> tuple[int, int] | None:
        try:
            st = os.lstat(raw)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return self._link_sig(w, raw)
        return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None

    # --- the settle judgement ---------------------------------------------------------

    def _settle_for(self, path: str) -> tuple[_Watch, float] | None:
        w = self._watch_of(path)
        if w is None or not w.online or not _accepts(w.config, w.names, Path(path),
                                                     self.exclude):
            return None
        return w, self._settle_of(w)

    def _settle_of(self, w: _Watch) -> float:
        s = w.config.settle_seconds
        return s if s is not None else self.default_settle

    def _take_hint(self, kind: str, raw: str, now: float) -> None:
        if kind in ("dir", "gone", "overflow", "watch_limit"):
            w = self._watch_of(raw)
            if kind == "dir":
                self.scan([Path(raw)])
            elif kind == "gone":
                self._next_check = 0.0  # look at the watch now, not at the next check
            elif w is not None and kind == "overflow":
                if not w.overflowed:
                    log.warning("inotify_overflow", path=str(w.config.path),
                                setting="fs.inotify.max_queued_events", fix=OVERFLOW_FIX)
                w.overflowed = True
                self.scan([w.config.path])
            elif w is not None and w.online:  # watch_limit: a folder below went unwatched
                self._limit_reached(w)
                self.scan([w.config.path])
            return
        if kind == "deleted":
            self._candidates.pop(raw, None)
            return
        cand = self._candidates.get(raw)
        if cand is None:
            found = self._settle_for(raw)
            if found is None:
                return
            cand = self._candidates[raw] = _Candidate(*found, changed_at=now)
        elif kind == "modified":  # the candidate is looked at below anyway
            return
        found = cand.watch, cand.settle
        if kind == "moved":
            cand.quick = True
        elif kind == "closed":
            cand.closed_sig = self._sig(found[0], raw)
        elif kind == "created":
            sig = self._sig(found[0], raw)
            # Old mtime: there since before (a copy that kept its time, a hard link).
            if sig is not None and now - sig[1] / 1e9 >= found[1]:
                cand.quick = True

    def tick(self) -> list[Settled]:
        """Take in queued hints and scan results, then hand on every candidate that has
        settled. Watches are checked here too, at most every ``CHECK_EVERY`` seconds."""
        now = self.clock()
        if self.monotonic() >= self._next_check:
            self._supervise()
        while True:
            try:
                kind, raw = self.hints.get_nowait()
            except queue.Empty:
                break
            self._take_hint(kind, raw, now)
        if self._next_check == 0.0:
            self._supervise()
        while True:
            try:
                raw, size, mtime_ns, root = self._polled.get_nowait()
            except queue.Empty:
                break
            pw = self._states.get(root)
            if pw is not None and pw.online and pw.poller is not None:
                self._scanned.append((raw, size, mtime_ns, pw))
        settled: list[Settled] = []
        taken = 0
        # Files events told of first: one dropped in during a large scan is not queued
        # behind it.
        for raw, cand in list(self._candidates.items()):
            if len(settled) >= self.batch:
                break
            if raw not in self._candidates:  # dropped with its watch, which went offline
                continue
            w = cand.watch
            try:
                sig = None if not w.online else self._sig(w, raw) if self.mounts.local(
                    Path(raw)) else self.gate.call(
                    w.gate_key, lambda w=w, r=raw: self._sig(w, r),  # type: ignore[misc]
                    raw)
            except ShareHung as exc:
                self._went_offline(cand.watch, f"hung: {exc.strerror}")
                continue
            if sig is None:
                del self._candidates[raw]
                continue
            if sig != cand.sig:
                cand.sig, cand.changed_at = sig, now
                if cand.closed_sig not in (None, sig):
                    cand.closed_sig = None
            # After a close with no growth since, a short quiet spell still has to pass:
            # writers that append in several open/write/close rounds would otherwise have
            # each round taken (and paid for) as a new version.
            closed_quiet = cand.closed_sig == sig and now - cand.changed_at >= min(
                cand.settle, CLOSE_QUIET)
            if cand.quick or closed_quiet or now - cand.changed_at >= cand.settle:
                settled.append(Settled(raw, sig[0], sig[1]))
                del self._candidates[raw]
        # A scan entry was judged by name while walking and stat-ed by scandir just now.
        for raw, size, mtime_ns, w in self._scanned:
            if len(settled) >= self.batch:
                break
            taken += 1
            if raw in self._candidates or not w.online:
                continue
            settle = self._settle_of(w)
            if now - mtime_ns / 1e9 >= settle:  # unchanged for the settle time already
                settled.append(Settled(raw, size, mtime_ns))
            else:
                self._candidates[raw] = _Candidate(w, settle, (size, mtime_ns), now)
        del self._scanned[:taken]
        return settled

