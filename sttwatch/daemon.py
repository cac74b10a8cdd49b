"""The main loop: takes settled files into the store, supervises the worker threads, talks
to systemd, and turns the flags set by signal handlers into a stop or a reload.

Signal handlers never do more than set a flag; everything happens here, in one thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from . import config as configmod
from .backends import Backend
from .config import Config
from .errors import BackendUnavailable, ConfigError
from .exitcodes import ExitCode
from .notify import Notifier
from .pipeline import Pipeline
from .store import UNFINISHED, Store
from .transcripts import Placement, sweep_leftovers, up_to_date
from .watcher import Settled, Watcher

if TYPE_CHECKING:
    from .wiring import Wiring

log = structlog.get_logger("sttwatch.daemon")

STATUS_REFRESH = 10.0  # seconds; status.STALE_AFTER must stay well above it


@dataclass
class Daemon:
    cfg: Config
    store: Store
    backends: Mapping[str, Backend]
    pipeline: Pipeline
    watcher: Watcher
    wiring: Wiring
    notifier: Notifier
    clock: Callable[[], float] = time.time
    stop_requested: threading.Event = field(default_factory=threading.Event)
    reload_requested: threading.Event = field(default_factory=threading.Event)
    _workers_stop: threading.Event = field(default_factory=threading.Event)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)
    _last_meta: dict[str, object] = field(default_factory=dict)
    _last_meta_at: float = 0.0

    def _start_worker(self, name: str) -> None:
        target = {"submit": self.pipeline.submit_loop, "poll": self.pipeline.poll_loop}[name]
        t = threading.Thread(target=target, args=(self._workers_stop,), name=name, daemon=True)
        t.start()
        self._threads[name] = t

    def _healthy(self) -> bool:
        """Replace dead workers and observers; healthy only if nothing had to be replaced."""
        ok = self.watcher.healthy()
        for name, t in list(self._threads.items()):
            if not t.is_alive():
                ok = False
                log.error("worker_died", worker=name)
                self._start_worker(name)
        return ok

    def admit(self, s: Settled) -> None:
        """A settled file becomes a job, unless it is known and unchanged, or its transcript
        is already newer than it (then it is recorded as done without a submission)."""
        path = str(s.path)
        job = self.store.get(path)
        if job is not None and (job.size, job.mtime_ns) == (s.size, s.mtime_ns):
            return
        now = self.clock()
        js = self.pipeline.settings_for(s.path)
        place = Placement(s.path, js.root, js.formats, self.cfg.output)
        holder = self.store.output_holder(place.keys()[0])
        if job is None and holder in (None, path) and up_to_date(place, s.mtime_ns):
            self.store.add_done(path, s.size, s.mtime_ns, now, "transcript already up to date")
            log.info("already_transcribed", path=path)
            return
        new = self.store.add_seen(path, s.size, s.mtime_ns, now)
        if new is not None:
            log.info("queued", job_id=new.id, path=path, size=s.size,
                     new_version=job is not None)
            self.pipeline.wake_submit.set()

    def _admit_all(self) -> None:
        """One file's trouble (an undecodable name, a vanished folder) never stops the loop."""
        for settled in self.watcher.tick():
            try:
                str(settled.path).encode("utf-8")
            except UnicodeEncodeError:
                log.error("unsupported_file_name", path=repr(str(settled.path)),
                          fix="rename the file to a UTF-8 name")
                continue
            try:
                self.admit(settled)
            except Exception as exc:
                log.exception("admit_failed", path=str(settled.path), error=str(exc))

    def _status_line(self) -> str:
        c = self.store.counts()
        paused = " (API key rejected: submitting paused)" if self.pipeline.auth_error else ""
        return (f"{c['seen']} queued, {c['submitting'] + c['pending']} in flight, "
                f"{c['done']} done, {c['failed']} failed{paused}")

    def _heartbeat(self) -> None:
        """Tell systemd and ``sttwatch status`` we are alive, and what we wait on."""
        healthy = self._healthy()
        status = self._status_line()
        if healthy:
            self.notifier.send(watchdog=1, status=status)
        # The state file is fsynced on every write: only write when something changed, or
        # often enough for ``status`` to tell a live daemon from a dead one.
        meta = {"pid": os.getpid(), "healthy": healthy, "status": status,
                **self.pipeline.waiting_on()}
        now = self.clock()
        if meta != self._last_meta or now - self._last_meta_at >= STATUS_REFRESH:
            self.store.set_meta("daemon", {**meta, "heartbeat": now})
            self._last_meta, self._last_meta_at = meta, now

    def _unfinished(self) -> int:
        c = self.store.counts()
        return sum(c[state.value] for state in UNFINISHED)

    def reload(self) -> None:
        """SIGHUP: swap in a new config (watch folders, options, formats, timing) without
        dropping any job; a config that does not load is refused and the old one runs on."""
        self.notifier.send(reloading=1, monotonic_usec=time.monotonic_ns() // 1000)
        try:
            new = configmod.load(self.cfg.source)
            settings, settings_for = self.wiring.reconfigure(new, self.backends)
        except (ConfigError, BackendUnavailable) as exc:
            log.error("reload_refused", reason=str(exc), action="the old config stays")
            self.notifier.send(ready=1, status=self._status_line())
            return
        watcher = self.wiring.watcher(new, self.clock)
        try:
            watcher.start()
        except OSError as exc:
            watcher.stop()
            log.error("reload_refused", reason=f"cannot watch: {exc}",
                      action="the old config stays")
            self.notifier.send(ready=1, status=self._status_line())
            return
        self.watcher.stop()
        self.watcher, self.cfg = watcher, new
        self.pipeline.reconfigure(settings, settings_for, new.output)
        log.info("reloaded", watches=[str(w.path) for w in new.watches])
        self.notifier.send(ready=1, status=self._status_line())

    def run(self, *, once: bool = False) -> int:
        volatile = [k for k, b in self.backends.items() if not b.durable_ids]
        recovered = self.store.recover(self.clock(), volatile)
        default = self.pipeline.settings_for(self.cfg.source).backend
        log.info("starting", backend=default, model=self.backends[default].model_name,
                 watches=[str(w.path) for w in self.cfg.watches], state=str(self.store.path),
                 once=once, **recovered)
        for root in {self.cfg.output.dir or w.path for w in self.cfg.watches}:
            for path in sweep_leftovers(root, 60.0, self.clock()):
                log.info("leftover_removed", path=str(path))
        if once:
            self.watcher.scan()
        else:
            self.watcher.start()
        for name in ("submit", "poll"):
            self._start_worker(name)
        self.notifier.send(ready=1, status=self._status_line())
        beat = min(2.0, self.notifier.watchdog_interval or 2.0)
        next_rescan = self.clock() + self.cfg.daemon.rescan_seconds
        next_beat = 0.0
        code = ExitCode.OK
        try:
            while not self.stop_requested.wait(0.1):
                self._admit_all()
                now = self.clock()
                if not once and now >= next_rescan:
                    next_rescan = now + self.cfg.daemon.rescan_seconds
                    log.debug("rescan", files=self.watcher.scan())
                if now >= next_beat:
                    next_beat = now + beat
                    self._heartbeat()
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                if once:
                    if self.pipeline.auth_error is not None:
                        code = ExitCode.AUTH
                        break
                    if (self.watcher.waiting() == 0 and self.watcher.hints.empty()
                            and not self._unfinished()):
                        code = ExitCode.FAILED if self.pipeline.failed_this_run else ExitCode.OK
                        break
            log.info("stop_requested" if self.stop_requested.is_set() else "finished")
        finally:
            self.shutdown()
        return code

    def shutdown(self) -> None:
        """Stop taking files, let in-flight transitions commit, and leave; pending ids are
        already in the store, so nothing waits on the service."""
        self.notifier.send(stopping=1)
        self.watcher.stop()
        self._workers_stop.set()
        self.pipeline.wake_submit.set()
        self.pipeline.wake_poll.set()
        for t in self._threads.values():
            t.join(timeout=20)  # an upload in progress may finish (unit: TimeoutStopSec=30)
        self.pipeline.close()
        counts = self.store.counts()
        self.store.set_meta("daemon", None)
        self.store.close()
        log.info("stopped", **counts)


