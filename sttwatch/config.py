"""The config file: one declarative schema, validated in one pass, turned into frozen dataclasses.

Every key is listed once in ``SCHEMA`` with its type, default and a one-line description, so
validation, defaults and the drift test against ``config.example.yaml`` all read the same table.
All problems are collected before raising, so a user fixes a broken file in one round trip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

AUDIO_PATTERNS = (
    "*.mp3", "*.mp4", "*.mp2", "*.m4a", "*.m4v", "*.aac", "*.wav", "*.flac", "*.ogg", "*.oga",
    "*.opus", "*.webm", "*.mkv", "*.mov", "*.wma", "*.amr", "*.aif", "*.aiff", "*.pcm",
    "*.mpga", "*.mpeg", "*.3gp",
)
FORMAT_KINDS = ("txt", "json", "srt", "vtt")
BACKEND_KINDS = ("auto", "aimlapi", "local")


@dataclass(frozen=True)
class Field:
    """One key of the schema. ``kind`` is a small closed set the walker knows how to check."""

    kind: str  # str | int | float | bool | path | strlist | map | section | list
    default: Any = None
    doc: str = ""
    nullable: bool = False
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    children: Mapping[str, Field] | None = None


def _section(doc: str, **children: Field) -> Field:
    return Field("section", doc=doc, children=children)


WATCH_ITEM: Mapping[str, Field] = {
    "path": Field("path", required=True, doc="folder to watch"),
    "recursive": Field("bool", True, "watch sub-folders too"),
    "patterns": Field("strlist", list(AUDIO_PATTERNS), "file name globs taken as input"),
    "ignore": Field("strlist", [], "file name globs never taken (temp names are always ignored)"),
    "settle_seconds": Field("float", None, "override of daemon.settle_seconds", nullable=True,
                            minimum=0),
    "polling": Field("bool", False, "poll this folder instead of inotify (network shares)"),
    "model": Field("str", None, "override of the model for this folder", nullable=True),
    "options": Field("map", None, "override of api.options for this folder", nullable=True),
    "formats": Field("strlist", None, "override of output.formats for this folder",
                     nullable=True, choices=FORMAT_KINDS),
    "backend": Field("str", None, "override of backend for this folder", nullable=True,
                     choices=BACKEND_KINDS),
    "follow_symlinks": Field("bool", False, "take symlinked recordings (only those whose "
                             "target lies inside a watched folder)"),
    "create": Field("bool", False, "create the folder when it is missing (otherwise a missing "
                    "folder is waited for: it may be a share that is not mounted yet)"),
}

SCHEMA: Mapping[str, Field] = {
    "backend": Field("str", "auto", "aimlapi | local | auto (aimlapi when a key is set)",
                     choices=BACKEND_KINDS),
    "api": _section(
        "the AI/ML API",
        base_url=Field("str", "https://api.aimlapi.com/v1", "service root"),
        api_key_env=Field("str", "AIMLAPI_KEY", "environment variable holding the key",
                          nullable=True),
        api_key_file=Field("path", None, "file holding the key (a systemd credential)",
                           nullable=True),
        model=Field("str", "#g1_whisper-tiny", "model name, sent as is"),
        options=Field("map", {}, "extra create fields, e.g. {language: en}"),
        max_in_flight=Field("int", 16, "jobs submitted and not yet finished, at most", minimum=1),
        connect_timeout=Field("float", 10.0, "seconds to connect", minimum=0.1),
        read_timeout=Field("float", 60.0, "seconds to wait for an answer", minimum=0.1),
        retries=Field("int", 5, "tries of one request on transient failures", minimum=1),
    ),
    "local": _section(
        "the offline engine (faster-whisper)",
        model=Field("str", "tiny.en", "model name or a folder holding a converted model"),
        device=Field("str", "cpu", "cpu | cuda | auto"),
        compute_type=Field("str", "int8", "ctranslate2 compute type"),
        threads=Field("int", 0, "CPU threads per worker (0: all cores / workers)", minimum=0),
        beam_size=Field("int", 5, "beam search width", minimum=1),
        language=Field("str", None, "language code, or null to detect", nullable=True),
        vad_filter=Field("bool", False, "skip silence with the VAD"),
        workers=Field("int", 2, "files transcribed at once", minimum=1),
        chunk_seconds=Field("float", 120.0, "longer files are decoded and transcribed in "
                            "pieces of about this length (bounds memory)", minimum=30),
    ),
    "watch": Field("list", [], "folders to watch (needed by 'run')", children=WATCH_ITEM),
    "state": _section(
        "where jobs are kept: one SQLite file (one daemon) or a PostgreSQL database (many)",
        path=Field("path", "./sttwatch-state.db", "SQLite state file"),
        url=Field("str", None, "postgresql://user@host/db: a store shared by several daemons "
                  "(pip install 'sttwatch[postgres]'); give either url or path", nullable=True),
    ),
    "output": _section(
        "transcripts",
        formats=Field("strlist", ["txt"], "any of txt, json, srt, vtt", choices=FORMAT_KINDS),
        name=Field("str", "{stem}.{format}",
                   "file name template: {stem}, {name}, {lang}, {format}"),
        dir=Field("path", None, "write into a mirror of the watched tree here instead of "
                  "beside the source", nullable=True),
        on_done=Field("str", "keep", "keep | move | delete the source once transcribed",
                      choices=("keep", "move", "delete")),
        done_dir=Field("path", None, "where on_done: move puts sources (mirrored tree)",
                       nullable=True),
        error_files=Field("bool", True, "write name.ext.sttwatch-error.json for failed files"),
    ),
    "daemon": _section(
        "timing",
        settle_seconds=Field("float", 2.0, "a file must stop changing this long", minimum=0),
        rescan_seconds=Field("float", 300.0, "full rescan period (finds missed events)",
                             minimum=1),
        first_poll_seconds=Field("float", 1.0, "first fetch delay before any history",
                                 minimum=0.1),
        poll_cap_seconds=Field("float", 20.0, "longest gap between fetches of one job",
                               minimum=0.1),
        job_timeout_seconds=Field("float", 3600.0, "a job not finished by then is resubmitted",
                                  minimum=1),
        max_attempts=Field("int", 3, "submissions of one file before it is failed", minimum=1),
        host_id=Field("str", None, "this daemon's name in a shared store (null: the host name); "
                      "several daemons on one machine each set their own", nullable=True),
        lease_seconds=Field("float", 60.0, "a job claimed by a daemon that stops renewing it "
                            "is taken over by another after this long", minimum=5),
        once_timeout=Field("float", 600.0, "run --once gives up (exit 5) when the service has "
                           "been unreachable this long", minimum=1),
    ),
    "log": _section(
        "logging",
        level=Field("str", "info", "debug | info | warning | error",
                    choices=("debug", "info", "warning", "error")),
        format=Field("str", "auto", "auto (console on a TTY, JSON otherwise) | console | json",
                     choices=("auto", "console", "json")),
    ),
}


@dataclass(frozen=True)
class ApiConfig:
    base_url: str
    api_key_env: str | None
    api_key_file: Path | None
    model: str
    options: Mapping[str, Any]
    max_in_flight: int
    connect_timeout: float
    read_timeout: float
    retries: int


@dataclass(frozen=True)
class LocalConfig:
    model: str
    device: str
    compute_type: str
    threads: int
    beam_size: int
    language: str | None
    vad_filter: bool
    workers: int
    chunk_seconds: float


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    recursive: bool
    patterns: tuple[str, ...]
    ignore: tuple[str, ...]
    settle_seconds: float | None
    polling: bool
    model: str | None
    options: Mapping[str, Any] | None
    formats: tuple[str, ...] | None
    backend: str | None
    follow_symlinks: bool = False
    create: bool = False


@dataclass(frozen=True)
class OutputConfig:
    formats: tuple[str, ...]
    name: str
    dir: Path | None
    on_done: str
    done_dir: Path | None
    error_files: bool


@dataclass(frozen=True)
class DaemonConfig:
    settle_seconds: float
    rescan_seconds: float
    first_poll_seconds: float
    poll_cap_seconds: float
    job_timeout_seconds: float
    max_attempts: int
    host_id: str | None = None
    lease_seconds: float = 60.0
    once_timeout: float = 600.0


@dataclass(frozen=True)
class Config:
    source: Path
    backend: str
    api: ApiConfig
    local: LocalConfig
    watches: tuple[WatchConfig, ...]
    state_path: Path
    output: OutputConfig
    daemon: DaemonConfig
    log_level: str
    log_format: str
    state_url: str | None = None

    def watch_for(self, path: Path) -> WatchConfig | None:
        return watch_for(self.watches, path)


def watch_for(watches: Sequence[WatchConfig], path: Path) -> WatchConfig | None:
    """The watch whose folder holds ``path`` (the deepest one when folders nest)."""
    best: WatchConfig | None = None
    for w in watches:
        if path.is_relative_to(w.path) and (
                best is None or len(w.path.parts) > len(best.path.parts)):
            best = w
    return best


_TYPES: Mapping[str, tuple[type, ...]] = {
    "str": (str,), "path": (str,), "bool": (bool,), "map": (dict,),
    "int": (int,), "float": (int, float),
}


def _check(value: Any, field: Field, key: str, base: Path, errors: list[str]) -> Any:
    """Validate one value against its field; returns the cleaned value (paths resolved)."""
    if value is None and field.kind == "section":
        value = {}  # 'api:' with nothing under it means all defaults
    if value is None:
        if field.nullable or (field.default is None and not field.required):
            return None
        errors.append(f"at '{key}': a value is required ({field.doc})")
        return None
    kind = field.kind
    if kind == "section":
        return _walk(value, field.children or {}, key, base, errors)
    if kind == "list":
        if not isinstance(value, list) or not value:
            errors.append(f"at '{key}': expected a non-empty list of entries, got {value!r}")
            return []
        return [_walk(v, field.children or {}, f"{key}[{i}]", base, errors)
                for i, v in enumerate(value)]
    if kind == "strlist":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            errors.append(f"at '{key}': expected a list of strings, got {value!r}")
            return field.default
        for i, v in enumerate(value):
            if field.choices and v not in field.choices:
                errors.append(f"at '{key}[{i}]': {v!r} is not one of: "
                              f"{', '.join(field.choices)}")
        return value
    ok = isinstance(value, _TYPES[kind]) and not (kind in ("int", "float")
                                                  and isinstance(value, bool))
    if not ok:
        expected = {"map": "a mapping", "path": "a path", "float": "a number"}.get(kind, kind)
        errors.append(f"at '{key}': expected {expected}, got {value!r}")
        return field.default
    if field.choices and value not in field.choices:
        errors.append(f"at '{key}': {value!r} is not one of: {', '.join(field.choices)}")
    if field.minimum is not None and value < field.minimum:
        errors.append(f"at '{key}': must be at least {field.minimum:g}, got {value!r}")
    if kind == "path":
        return (base / os.path.expanduser(os.path.expandvars(value))).resolve()
    if kind == "float":
        return float(value)
    return value


def _walk(raw: Any, schema: Mapping[str, Field], prefix: str, base: Path,
          errors: list[str]) -> dict[str, Any]:
    where = f"at '{prefix}'" if prefix else "at the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping of keys, got {raw!r}")
        raw = {}
    out: dict[str, Any] = {}
    for name in raw:
        if name not in schema:
            errors.append(f"{where}: unknown key '{name}' (known: {', '.join(schema)})")
    for name, field in schema.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            if field.required:
                errors.append(f"at '{key}': missing required key ({field.doc})")
            value = field.default if field.kind != "section" else {}
            if field.kind == "section" or (field.kind == "path" and value is not None):
                value = _check(value, field, key, base, errors)
            out[name] = value
        else:
            out[name] = _check(raw[name], field, key, base, errors)
    return out


def parse(text: str, source: Path) -> Config:
    """Parse config text; relative paths resolve against the config file's folder."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    errors: list[str] = []
    base = source.parent.resolve()
    v = _walk(raw, SCHEMA, "", base, errors)
    if errors:
        raise ConfigError(source, errors)
    api, local, d = v["api"], v["local"], v["daemon"]
    watches = tuple(
        WatchConfig(path=w["path"], recursive=w["recursive"], patterns=tuple(w["patterns"]),
                    ignore=tuple(w["ignore"]), settle_seconds=w["settle_seconds"],
                    polling=w["polling"], model=w["model"], options=w["options"],
                    formats=tuple(w["formats"]) if w["formats"] is not None else None,
                    backend=w["backend"], follow_symlinks=w["follow_symlinks"],
                    create=w["create"])
        for w in v["watch"] or [])
    o = v["output"]
    errors.extend(_logical_errors(o, watches))
    given_state = raw.get("state") if isinstance(raw, dict) else None
    if isinstance(given_state, dict) and given_state.get("path") is not None and \
            given_state.get("url") is not None:
        errors.append("at 'state': give either 'state.path' (SQLite) or 'state.url' "
                      "(PostgreSQL), not both")
    url = v["state"]["url"]
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        errors.append(f"at 'state.url': expected a postgresql:// URL, got {url.split('@')[-1]!r}")
    if errors:
        raise ConfigError(source, errors)
    return Config(
        source=source.resolve(),
        backend=v["backend"],
        api=ApiConfig(**{**api, "options": dict(api["options"])}),
        local=LocalConfig(**local),
        watches=watches,
        state_path=v["state"]["path"],
        output=OutputConfig(formats=tuple(o["formats"]), name=o["name"], dir=o["dir"],
                            on_done=o["on_done"], done_dir=o["done_dir"],
                            error_files=o["error_files"]),
        daemon=DaemonConfig(**d),
        log_level=v["log"]["level"],
        log_format=v["log"]["format"],
        state_url=v["state"]["url"],
    )


def _logical_errors(o: Mapping[str, Any], watches: tuple[WatchConfig, ...]) -> list[str]:
    """Rules across keys that a per-key check cannot see."""
    errors = []
    if o["on_done"] == "move" and o["done_dir"] is None:
        errors.append("at 'output.done_dir': required when output.on_done is 'move'")
    try:
        o["name"].format(stem="a", name="a.mp3", format="txt", lang="en")
    except Exception as exc:  # any str.format failure is the user's template
        errors.append(f"at 'output.name': bad template {o['name']!r} ({exc}); "
                      "use {stem}, {name}, {lang} and {format}")
    if "{format}" not in o["name"]:
        errors.append("at 'output.name': must contain {format}, so a transcript can never "
                      "take the recording's own name")
    if "/" in o["name"]:
        errors.append("at 'output.name': must be a file name, not a path")
    return errors


def load(path: Path | str) -> Config:
    """Read and validate a config file; every failure is a ``ConfigError`` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(p, [f"cannot read the file: {exc.strerror}"]) from None
    return parse(text, p)
