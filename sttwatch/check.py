"""``sttwatch check``: the config loader, plus what loading cannot see.

Folders that exist and are writable, the inotify watch limit against the folders to watch,
folders on network filesystems (which send no events), the local engine's presence, and a
cheap request that shows whether the service accepts the key. Every problem is one line with
its fix; the key itself is only ever shown as ``set`` or ``missing``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from .apikey import key_source, key_warnings, read_api_key
from .backends import backend_class
from .config import Config, WatchConfig
from .errors import ConfigError
from .exitcodes import ExitCode
from .mounts import is_network
from .plan import language_conflict
from .store import State, StoreError, StoreMissing, StoreUnavailable
from .store.postgres import safe_url
from .wiring import auto_kind, open_for_command


def mount_fstype(path: Path, mounts: str) -> str:
    """The filesystem type of the deepest mount point holding ``path``."""
    best, fstype = "", "unknown"
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(
                    point) > len(best):
                best, fstype = point, parts[2]
    return fstype


def _watch_kind(cfg: Config, w: WatchConfig, key: str | None) -> str:
    """As the planner chooses: a watch's ``auto`` (or none) is the global backend."""
    default = auto_kind(key) if cfg.backend == "auto" else cfg.backend
    return default if w.backend in (None, "auto") else str(w.backend)


def kinds_in_use(cfg: Config, key: str | None) -> set[str]:
    """The backend kinds the config would run, as ``run`` chooses them (wiring's
    ``backend_kinds``), but without stopping at a missing key: that is one of the things to
    report."""
    chosen = {auto_kind(key) if cfg.backend == "auto" else cfg.backend} | {
        _watch_kind(cfg, w, key) for w in cfg.watches}
    if cfg.budget.on_exhausted == "local" and any(backend_class(k).needs_key() for k in chosen):
        chosen.add("local")  # the budget's (and an empty account's) fallback
    return chosen


def _check_plans(r: Report, cfg: Config, key: str | None) -> None:
    for w in cfg.watches:
        if _watch_kind(cfg, w, key) != "local":
            continue
        language = (w.options or {}).get("language") or cfg.local.language
        reason = language_conflict(cfg.local.model, language)
        if reason is not None:
            r.problem(f"watch folder {w.path}: {reason.split(' (')[0]}; its files would fail",
                      reason.split(" (", 1)[1].rstrip(")"))


def _folders(watch: WatchConfig) -> int:
    if not watch.recursive:
        return 1
    return sum(1 for _ in os.walk(watch.path))


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems = 0

    def ok(self, text: str) -> None:
        self.out.write(f"ok: {text}\n")

    def problem(self, text: str, fix: str) -> None:
        self.problems += 1
        self.out.write(f"problem: {text}; fix: {fix}\n")


def _polled(w: WatchConfig, mounts: str) -> bool:
    """As the watcher decides it: ``auto`` polls network and FUSE filesystems."""
    return w.polling is True or (w.polling == "auto" and is_network(mount_fstype(w.path, mounts)))


def _check_watch(r: Report, w: WatchConfig, mounts: str) -> None:
    if not w.path.is_dir():
        r.problem(f"watch folder {w.path} does not exist", f"mkdir -p '{w.path}'")
        return
    try:
        with tempfile.NamedTemporaryFile(dir=w.path, prefix=".sttwatch-check-"):
            pass
    except OSError as exc:
        r.problem(f"watch folder {w.path} is not writable ({exc.strerror})",
                  "run sttwatch as the folder's owner, or grant it write access (and "
                  "ReadWritePaths= in the unit)")
        return
    fstype = mount_fstype(w.path, mounts)
    network = is_network(fstype)
    if network and w.polling is False:
        r.problem(f"watch folder {w.path} is on a network filesystem ({fstype}), which sends "
                  "no events for changes made elsewhere, and polling is false",
                  "remove 'polling: false' from this watch (auto polls shares)")
    else:
        polled = _polled(w, mounts)
        r.ok(f"watch folder {w.path} ({fstype}{', polled' if polled else ''})")


def check(cfg: Config, environ: Mapping[str, str], out: TextIO,
          mounts: str | None = None) -> int:
    r = Report(out)
    r.ok(f"config {cfg.source} loads")
    try:
        key = read_api_key(cfg, environ)
    except ConfigError as exc:
        r.problem("; ".join(exc.problems), "make the key file readable by this user")
        key = None
    where = key_source(cfg)
    r.ok(f"API key {'set' if key else 'missing'} ({where})")
    for warning in key_warnings(cfg):
        r.problem(f"the key file {warning.path} is readable by others (mode {warning.mode})",
                  warning.fix)
    for kind in sorted(kinds_in_use(cfg, key)):  # each backend kind says what it can see
        for finding in backend_class(kind).preflight(cfg, key):
            if finding.ok:
                r.ok(finding.text)
            else:
                r.problem(finding.text, finding.fix)
    if not cfg.watches:
        r.problem("no folders to watch", "add a 'watch:' entry with a path")
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            mounts = ""
    for w in cfg.watches:
        _check_watch(r, w, mounts)
    _check_plans(r, cfg, key)
    limit_file = Path("/proc/sys/fs/inotify/max_user_watches")
    if limit_file.exists():
        limit = int(limit_file.read_text())
        needed = sum(_folders(w) for w in cfg.watches if w.path.is_dir()
                     and not _polled(w, mounts))
        if needed * 2 > limit:
            r.problem(f"{needed} folders to watch against an inotify limit of {limit}",
                      f"sysctl fs.inotify.max_user_watches={max(needed * 4, 65536)}")
        else:
            r.ok(f"inotify: {needed} folders to watch, limit {limit}")
    try:
        store = open_for_command(cfg)
        try:
            waiting = store.waiting_for_backend(sorted(kinds_in_use(cfg, key)),
                                                [State.PENDING])
        finally:
            store.close()
        r.ok(f"store {(cfg.state_url and safe_url(cfg.state_url)) or cfg.state_path} opens")
        for kind, n in sorted(waiting.items()):
            r.problem(f"{n} task(s) already sent to backend {kind}, which this config does "
                      "not use, wait for a daemon that has it (queued files are planned "
                      "again at start-up)",
                      f"run a daemon with backend {kind} until they are done, or "
                      "sttwatch retry them")
    except StoreMissing:
        r.ok(f"state file {cfg.state_path} will be created by the first run")
    except (StoreError, StoreUnavailable) as exc:
        r.problem(str(exc), "make its folder writable, or set state.path / state.url")
    out.write("all good\n" if not r.problems else f"{r.problems} problem(s)\n")
    return ExitCode.OK if not r.problems else ExitCode.FAILED
