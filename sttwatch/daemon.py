"""Wiring and the main loop: the one place that builds the objects and runs them.

``build`` constructs store, backend, pipeline and watcher in flow order and hands each its
collaborators (the clock included). ``Daemon.run`` is the main loop: it takes settled files
from the watcher into the store, supervises the worker threads, talks to systemd, and turns
the flags set by signal handlers into a clean stop. Signal handlers never do more than set
a flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import structlog

from .backends import Backend, backend_class
from .config import Config
from .errors import BackendUnavailable, ConfigError
from .notify import Notifier
from .pipeline import JobSettings, Pipeline, PipelineSettings
from .store import Store
from .transcripts import Placement, up_to_date
from .watcher import Settled, Watcher

log = structlog.get_logger("sttwatch.daemon")


class ExitCode:
    OK = 0
    FAILED = 1
    CONFIG = 2
    AUTH = 3
    INTERRUPTED = 130


def read_api_key(cfg: Config, environ: Mapping[str, str]) -> str | None:
    """The key from ``api.api_key_file`` (a systemd credential) or ``api.api_key_env``."""
    api = cfg.api
    if api.api_key_file is not None:
        try:
            key = api.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(cfg.source, [f"at 'api.api_key_file': cannot read "
                                           f"{api.api_key_file}: {exc.strerror}"]) from None
        if not key:
            raise ConfigError(cfg.source, [f"at 'api.api_key_file': {api.api_key_file} "
                                           "is empty"])
        return key
    if api.api_key_env:
        return environ.get(api.api_key_env, "").strip() or None
    return None


def choose_backend(cfg: Config, key: str | None, override: str | None = None) -> str:
    kind = override or cfg.backend
    if kind == "auto":
        return "aimlapi" if key else "local"
    if kind == "aimlapi" and not key:
        where = (f"the file {cfg.api.api_key_file}" if cfg.api.api_key_file
                 else f"the environment variable {cfg.api.api_key_env}")
        raise BackendUnavailable(f"backend aimlapi needs an API key in {where}")
    return kind


def download(url: str, target: Path) -> None:
    """Fetch a URL to a file for the local engine, streaming so memory stays flat."""
    with requests.get(url, stream=True, timeout=(10, 60)) as resp:
        resp.raise_for_status()
        with target.open("wb") as fh:
            for chunk in resp.iter_content(1 << 20):
                fh.write(chunk)


def build_backend(cfg: Config, kind: str, key: str | None) -> Backend:
    cls = backend_class(kind)
    if kind == "aimlapi":
        from .backends.aimlapi import AimlApiBackend
        assert key is not None and issubclass(cls, AimlApiBackend)
        return cls(cfg.api.base_url, key, cfg.api.model, connect_timeout=cfg.api.connect_timeout,
                   read_timeout=cfg.api.read_timeout, retries=cfg.api.retries)
    from .backends.local import LocalBackend, LocalSettings
    assert issubclass(cls, LocalBackend)
    lc = cfg.local
    return cls(LocalSettings(model=lc.model, device=lc.device, compute_type=lc.compute_type,
                             threads=lc.threads, beam_size=lc.beam_size, language=lc.language,
                             vad_filter=lc.vad_filter, workers=lc.workers),
               fetch_url=download)


def job_settings(cfg: Config, backends: Mapping[str, Backend],
                 default: str) -> Callable[[Path], JobSettings]:
    """Per-file create settings: the watch's overrides over the global ones."""

    def settings_for(path: Path) -> JobSettings:
        w = cfg.watch_for(path)
        kind = w.backend if w is not None and w.backend in backends else default
        assert kind is not None
        backend = backends[kind]
        local = kind == "local"
        options: dict[str, Any] = {} if local else dict(cfg.api.options)
        if local and cfg.local.language:
            options["language"] = cfg.local.language
        options.update(w.options or {} if w is not None else {})
        model = backend.model_name if local or w is None or w.model is None else w.model
        formats = w.formats if w is not None and w.formats is not None else cfg.output.formats
        root = w.path if w is not None else path.parent
        return JobSettings(kind, model, options, formats, root)

    return settings_for


@dataclass
class Daemon:
    cfg: Config
    store: Store
    backends: Mapping[str, Backend]
    pipeline: Pipeline
    watcher: Watcher
    notifier: Notifier
    clock: Callable[[], float] = time.time
    stop_requested: threading.Event = field(default_factory=threading.Event)
    reload_requested: threading.Event = field(default_factory=threading.Event)
    _workers_stop: threading.Event = field(default_factory=threading.Event)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)

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
        if job is None and up_to_date(Placement(s.path, js.root, js.formats, self.cfg.output),
                                      s.mtime_ns):
            self.store.add_done(path, s.size, s.mtime_ns, now, "transcript already up to date")
            log.info("already_transcribed", path=path)
            return
        new = self.store.add_seen(path, s.size, s.mtime_ns, now)
        if new is not None:
            log.info("queued", job_id=new.id, path=path, size=s.size,
                     new_version=job is not None)
            self.pipeline.wake_submit.set()

    def _status_line(self) -> str:
        c = self.store.counts()
        paused = " (auth paused)" if self.pipeline.auth_error else ""
        return (f"{c['seen']} queued, {c['submitting'] + c['pending']} in flight, "
                f"{c['done']} done, {c['failed']} failed{paused}")

    def run(self, *, once: bool = False) -> int:
        volatile = [k for k, b in self.backends.items() if not b.durable_ids]
        recovered = self.store.recover(self.clock(), volatile)
        default = self.pipeline.settings_for(self.cfg.source).backend
        log.info("starting", backend=default, model=self.backends[default].model_name,
                 watches=[str(w.path) for w in self.cfg.watches], state=str(self.store.path),
                 once=once, **recovered)
        if once:
            self.watcher.scan()
        else:
            self.watcher.start()
        for name in ("submit", "poll"):
            self._start_worker(name)
        self.notifier.send(ready=1, status=self._status_line())
        next_rescan = self.clock() + self.cfg.daemon.rescan_seconds
        next_health = 0.0
        code = ExitCode.OK
        try:
            while not self.stop_requested.wait(0.1):
                for settled in self.watcher.tick():
                    self.admit(settled)
                now = self.clock()
                if not once and now >= next_rescan:
                    next_rescan = now + self.cfg.daemon.rescan_seconds
                    log.debug("rescan", files=self.watcher.scan())
                if now >= next_health:
                    next_health = now + 2.0
                    if self._healthy():
                        self.notifier.send(watchdog=1, status=self._status_line())
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    log.warning("reload_unsupported", action="restart the service instead")
                if once:
                    if self.pipeline.auth_error is not None:
                        code = ExitCode.AUTH
                        break
                    if (self.watcher.waiting() == 0 and self.watcher.hints.empty()
                            and not self.store.unfinished()):
                        code = ExitCode.FAILED if self.pipeline.failed_this_run else ExitCode.OK
                        break
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
            t.join(timeout=10)
        self.pipeline.close()
        counts = self.store.counts()
        self.store.close()
        log.info("stopped", **counts)


def build(cfg: Config, *, key: str | None, backend_kind: str,
          clock: Callable[[], float] = time.time,
          environ: Mapping[str, str] | None = None) -> Daemon:
    """Construct every part in flow order; the only place that picks backends."""
    if not cfg.watches:
        raise ConfigError(cfg.source, ["at 'watch': missing required key (folders to watch)"])
    kinds = {backend_kind} | {choose_backend(cfg, key, w.backend) for w in cfg.watches
                              if w.backend not in (None, "auto")}
    backends = {kind: build_backend(cfg, kind, key) for kind in sorted(kinds)}
    store = Store(cfg.state_path)
    d = cfg.daemon
    max_in_flight = cfg.api.max_in_flight if "aimlapi" in backends else max(
        cfg.local.workers * 2, 2)
    pipeline = Pipeline(store, backends, PipelineSettings(
        max_in_flight=max_in_flight, first_poll=d.first_poll_seconds,
        poll_cap=d.poll_cap_seconds, job_timeout=d.job_timeout_seconds,
        max_attempts=d.max_attempts), job_settings(cfg, backends, backend_kind),
        cfg.output, clock)
    exclude = tuple(p for p in (cfg.output.dir, cfg.output.done_dir, cfg.state_path.parent)
                    if p is not None and p != cfg.state_path.parent)
    watcher = Watcher(cfg.watches, d.settle_seconds, clock, exclude=exclude)
    return Daemon(cfg, store, backends, pipeline, watcher, Notifier(environ), clock)
