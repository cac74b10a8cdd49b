"""The one place that builds the objects: key, backends, per-file settings, the daemon.

Everything is constructed here in flow order and handed its collaborators (the clock
included), so no module builds its own dependencies and tests can assemble the same parts.
The choice of backend (``auto``: the AI/ML API when a key is present, else local) is made
here and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from .apikey import read_api_key as read_api_key  # moved there; re-exported
from .backends import Backend, backend_class
from .config import Config
from .daemon import Daemon
from .errors import BackendUnavailable, ConfigError
from .notify import Notifier
from .pipeline import JobSettings, Pipeline, PipelineSettings
from .store import Store
from .watcher import Watcher


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
                             vad_filter=lc.vad_filter, workers=lc.workers,
                             chunk_seconds=lc.chunk_seconds),
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


def build(cfg: Config, *, key: str | None, backend_kind: str,
          clock: Callable[[], float] = time.time,
          environ: Mapping[str, str] | None = None) -> Daemon:
    """Construct every part in flow order; the only place that picks backends."""
    if not cfg.watches:
        raise ConfigError(cfg.source, ["at 'watch': missing required key (folders to watch)"])
    backends = {kind: build_backend(cfg, kind, key)
                for kind in sorted(backend_kinds(cfg, key, backend_kind))}
    store = Store(cfg.state_path)
    pipeline = Pipeline(store, backends, pipeline_settings(cfg, backends),
                        job_settings(cfg, backends, backend_kind), cfg.output, clock)
    wiring = Wiring(key, backend_kind)
    return Daemon(cfg, store, backends, pipeline, wiring.watcher(cfg, clock), wiring,
                  Notifier(environ), clock)


def backend_kinds(cfg: Config, key: str | None, default: str) -> set[str]:
    """Every backend the config uses: the default and the per-watch overrides."""
    return {default} | {choose_backend(cfg, key, w.backend) for w in cfg.watches
                        if w.backend not in (None, "auto")}


def pipeline_settings(cfg: Config, backends: Mapping[str, Backend]) -> PipelineSettings:
    d = cfg.daemon
    max_in_flight = cfg.api.max_in_flight if "aimlapi" in backends else max(
        cfg.local.workers * 2, 2)
    return PipelineSettings(max_in_flight=max_in_flight, first_poll=d.first_poll_seconds,
                            poll_cap=d.poll_cap_seconds, job_timeout=d.job_timeout_seconds,
                            max_attempts=d.max_attempts)


class Wiring:
    """What the daemon needs to rebuild its config-dependent parts on SIGHUP."""

    def __init__(self, key: str | None, default_backend: str) -> None:
        self._key = key
        self._default = default_backend

    def watcher(self, cfg: Config, clock: Callable[[], float]) -> Watcher:
        exclude = tuple(p for p in (cfg.output.dir, cfg.output.done_dir) if p is not None)
        return Watcher(cfg.watches, cfg.daemon.settle_seconds, clock, exclude=exclude)

    def reconfigure(self, cfg: Config, backends: Mapping[str, Backend]) -> tuple[
            PipelineSettings, Callable[[Path], JobSettings]]:
        """Settings for a new config, refused (ConfigError) when it needs other backends."""
        if not cfg.watches:
            raise ConfigError(cfg.source, ["at 'watch': missing required key"])
        kind = choose_backend(cfg, self._key)
        if backend_kinds(cfg, self._key, kind) != set(backends):
            raise ConfigError(cfg.source, ["at 'backend': a change of backend needs a "
                                           "restart, not a reload"])
        return pipeline_settings(cfg, backends), job_settings(cfg, backends, kind)
