"""The composition root: the one place that builds objects, for every command.

Key, store, backends (each built from its own config section through the registry), plans,
stages, watcher and daemon are constructed here in flow order and handed their collaborators
(the clock included); no other module opens a store or picks a backend. The choice of
backend (``auto``: the AI/ML API when a key is present, else local) is made here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from . import config as configmod
from .apikey import key_source, read_api_key
from .backends import Backend, backend_class
from .backends.aimlapi import AimlApiBackend
from .budget import Budget, local_plan
from .config import Config
from .daemon import Daemon, Rebuilt
from .errors import BackendUnavailable, ConfigError
from .fsgate import FsGate
from .hooks import Completions, Deliverer
from .metrics import Metrics
from .mounts import MountTable
from .notify import Notifier
from .pipeline import Pipeline
from .plan import Planner
from .screen import Screener
from .settings import PipelineSettings
from .sharefile import Shares, Source, plain_open
from .store import Admission, Store, StoreError, StoreLocked, StoreUnavailable, open_store
from .store.keys import WatchKeys
from .watcher import Watcher

T = TypeVar("T")

log = structlog.get_logger("sttwatch.wiring")

__all__ = ["build", "choose_backend", "host_id", "open_for_command", "read_api_key"]


def host_id(cfg: Config) -> str:
    return cfg.daemon.host_id or socket.gethostname()


def auto_kind(key: str | None) -> str:
    """What ``backend: auto`` means: the AI/ML API when a key is set, else the local engine."""
    return "aimlapi" if key else "local"


def choose_backend(cfg: Config, key: str | None, override: str | None = None) -> str:
    kind = override or cfg.backend
    if kind == "auto":
        return auto_kind(key)
    if backend_class(kind).needs_key() and not key:
        where = key_source(cfg)
        raise BackendUnavailable(f"backend {kind} needs an API key in {where}")
    return kind


def backend_kinds(cfg: Config, key: str | None, default: str) -> set[str]:
    """Every backend the config uses: the default and the per-watch overrides."""
    kinds = {default} | {choose_backend(cfg, key, w.backend) for w in cfg.watches
                         if w.backend not in (None, "auto")}
    if cfg.budget.on_exhausted == "local" and any(backend_class(k).needs_key() for k in kinds):
        kinds.add("local")  # the budget's (and an empty account's) fallback
    return kinds


def build_backend(cfg: Config, kind: str, key: str | None) -> Backend:
    return backend_class(kind).from_config(cfg, key)


def pipeline_settings(cfg: Config, owner: str) -> PipelineSettings:
    d = cfg.daemon
    return PipelineSettings(owner=owner, lease=d.lease_seconds,
                            max_in_flight=cfg.api.max_in_flight, first_poll=d.first_poll_seconds,
                            poll_cap=d.poll_cap_seconds, job_timeout=d.job_timeout_seconds,
                            max_attempts=d.max_attempts,
                            probe_interval=cfg.api.probe_seconds)


def watch_keys(cfg: Config) -> WatchKeys | None:
    """How a shared store keys jobs: by watch name and the path within it, so hosts may mount
    the share at different paths. A SQLite store serves one host: its paths are that host's."""
    if cfg.state_url is None:
        return None
    return WatchKeys.of((w.key_name, str(w.path)) for w in cfg.watches)


def open_for_command(cfg: Config) -> Store:
    """The store for ``status``, ``retry``, ``forget`` and ``check``: never created by them."""
    store = open_store(cfg.state_path, cfg.state_url, create=False)
    keys = watch_keys(cfg)
    if keys is not None:
        store.key_by_watch(keys)
    return store


def _claim_identity(store: Store, owner: str, lease: float, now: float) -> None:
    """One daemon per state file (SQLite), one live daemon per host id (PostgreSQL)."""
    lock = getattr(store, "lock_for_daemon", None)
    if lock is not None:
        lock(owner)
        return
    d = store.register(owner, os.getpid(), socket.gethostname(), now, max(30.0, lease))
    if d is not None:
        raise StoreLocked(
            f"host id {owner!r} is in use by a live daemon (pid {d.pid} on host "
            f"{d.hostname}) in the store at {store.location}: give each daemon its own "
            "daemon.host_id")


def _give_up(store: Store, owner: str, claimed: bool) -> None:
    """A start that fails after taking the host id hands it back at once."""
    if claimed and getattr(store, "lock_for_daemon", None) is None:
        with contextlib.suppress(StoreError, StoreUnavailable):
            store.leave(owner)
    store.close()


def build(cfg: Config, *, key: str | None, override: str | None = None,
          clock: Callable[[], float] = time.time,
          environ: Mapping[str, str] | None = None,
          say: Callable[[str], None] = lambda _t: None) -> Daemon:
    """Construct every part of the daemon in flow order."""
    if not cfg.watches:
        raise ConfigError(cfg.source, ["at 'watch': missing required key (folders to watch)"])
    owner = host_id(cfg)
    store = open_store(cfg.state_path, cfg.state_url)
    claimed = False
    try:
        _claim_identity(store, owner, cfg.daemon.lease_seconds, clock())
        claimed = True
        kinds = sorted(backend_kinds(cfg, key, choose_backend(cfg, key, override)))
        backends = {kind: build_backend(cfg, kind, key) for kind in kinds}
    except BaseException:
        _give_up(store, owner, claimed)
        raise
    gate = FsGate(cfg.daemon.share_deadline_seconds)  # one per daemon, across reloads
    mounts = MountTable()

    def rebuild(new: Config) -> Rebuilt:
        """Parts for a reloaded config; refused when it needs other backends."""
        if not new.watches:
            raise ConfigError(new.source, ["at 'watch': missing required key"])
        kind = choose_backend(new, key, override)  # --backend holds across reloads
        if backend_kinds(new, key, kind) != set(backends):
            raise ConfigError(new.source, ["at 'backend': a change of backend needs a "
                                           "restart, not a reload"])
        parts = Rebuilt(pipeline_settings(new, owner), Planner(new, backends, kind),
                        {k: b.in_flight_limit(new) for k, b in backends.items()},
                        watcher(new, clock, gate, store, mounts))
        keys = watch_keys(new)
        if keys is not None:
            moved = store.key_by_watch(keys, migrate=True)
            if moved:
                log.info("jobs_keyed_by_watch", rows=moved,
                         watches={n: r for n, r in keys.roots})
        return parts

    first = rebuild(cfg)
    built: list[Daemon] = []  # the watcher is replaced on reload: ask the daemon's current one

    def is_online(path: Path) -> bool:
        return built[0].watcher.is_online(path) if built else True

    def call(path: Path, fn: Callable[[], T]) -> T:
        return built[0].watcher.call(path, fn) if built else fn()

    def open_source(path: Path) -> Source:
        return built[0].watcher.open(path) if built else plain_open(path)

    shares = Shares(is_online, call, open_source)
    pipeline = Pipeline(store, backends, first.settings, first.planner, cfg.output,
                        first.limits, clock, is_online, shares=shares)
    # Today's config, a reloaded one too: skip_subtitled and skip_no_speech apply at once.
    screener = Screener(lambda: built[0].cfg if built else cfg, shares)
    pipeline.submitter.screen = screener
    from .admission import Admitter

    def guard(path: Path, fn: Callable[[], Admission]) -> Admission:
        return built[0].watcher.call(path, fn) if built else fn()

    admitter = Admitter(store, first.planner, cfg.output, clock, pipeline.wake_submit, owner,
                        guard, open_source)
    def watch_states() -> dict[str, bool]:
        return built[0].watcher.watch_states() if built else {}

    try:
        extras = money_and_visibility(cfg, store, pipeline, backends, owner, clock, environ,
                                      watch_states, key)
    except BaseException:
        pipeline.close()
        _give_up(store, owner, claimed)
        raise
    source = cfg.source
    daemon = Daemon(cfg, store, pipeline, admitter, first.watcher, Notifier(environ), rebuild,
                    lambda: configmod.load(source), clock, say, extras=extras,
                    warm_up=screener.warm)
    built.append(daemon)
    return daemon


def money_and_visibility(cfg: Config, store: Store, pipeline: Pipeline,
                         backends: Mapping[str, Backend], owner: str,
                         clock: Callable[[], float], environ: Mapping[str, str] | None,
                         watch_states: Callable[[], dict[str, bool]],
                         key: str | None = None,
                         ) -> dict[str, Callable[[threading.Event], None]]:
    """The budget (in the submitter), the hooks' events (in the finisher), the metrics (fed by
    the client and the stages); returns the extra worker loops the daemon supervises."""
    m = cfg.metrics
    metrics = Metrics(store, cfg.budget, clock, watch_states) \
        if m.listen is not None or m.textfile is not None else None
    local = backends.get("local")
    pipeline.submitter.budget = Budget(
        cfg.budget, cfg.api, store, clock,
        frozenset(k for k in backends if backend_class(k).needs_key()),
        None if local is None else local_plan(local.model_name, cfg.local.language,
                                              local.shaping()), metrics)
    pipeline.outcomes.completions = Completions(cfg.hooks, cfg.api.credits_per_usd,
                                                None if metrics is None else metrics.task_time)
    extras: dict[str, Callable[[threading.Event], None]] = {}
    if cfg.hooks.enabled:
        extras["deliver"] = Deliverer(store, cfg.hooks, owner, clock, environ,
                                      cfg.api.api_key_env, key).loop
    if metrics is not None:
        for backend in backends.values():
            if isinstance(backend, AimlApiBackend):
                backend.observer = metrics
        if m.textfile is not None:
            extras["metrics_textfile"] = metrics.textfile_loop(m.textfile, m.interval)
        if m.listen is not None:
            try:
                extras["metrics_http"] = metrics.serve(*configmod.listen_address(m.listen))
            except OSError as exc:
                raise BackendUnavailable(f"metrics.listen {m.listen}: cannot listen "
                                         f"({exc.strerror or exc})") from None
    return extras


def watcher(cfg: Config, clock: Callable[[], float], gate: FsGate | None = None,
            store: Store | None = None, mounts: MountTable | None = None) -> Watcher:
    """``gate`` outlives a reload: a mount's worker stuck on a hung share is not made again
    (``mounts`` too: the mount table it watches is one open file). With ``store``, scans
    hand on only files it does not know as they are."""
    exclude = tuple(p for p in (cfg.output.dir, cfg.output.done_dir) if p is not None)
    unknown = None
    if store is not None:
        def unknown(listings: Sequence[Sequence[tuple[str, int, int]]]
                    ) -> list[tuple[str, int, int]]:
            try:
                return store.unknown(listings)
            except StoreUnavailable:  # all handed on: admission waits the store out
                return [f for files in listings for f in files]
    return Watcher(cfg.watches, cfg.daemon.settle_seconds, clock, exclude=exclude,
                   share_rescan_seconds=cfg.daemon.share_rescan_seconds,
                   gate=gate or FsGate(cfg.daemon.share_deadline_seconds), unknown=unknown,
                   mounts=mounts or MountTable())
