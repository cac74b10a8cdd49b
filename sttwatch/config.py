"""The config file: one declarative schema, validated in one pass, turned into frozen dataclasses.

Every key is described once, in ``SCHEMA``: its type, default, bounds and the sentence a user
reads about it. Validation walks it; the dataclasses are filled from the validated tree by
name (tests/test_config.py checks that every key has its field and every field its key); and
config.example.yaml and docs/configuration.md are generated from it by sttwatch/configdoc.py.
All problems are collected before raising, so a user fixes a broken file in one round trip.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

AUDIO_PATTERNS = (
    "*.mp3", "*.mp4", "*.mp2", "*.m4a", "*.m4v", "*.aac", "*.wav", "*.flac", "*.ogg", "*.oga",
    "*.opus", "*.webm", "*.mkv", "*.mov", "*.wma", "*.amr", "*.aif", "*.aiff", "*.pcm",
    "*.mpga", "*.mpeg", "*.3gp",
)
FORMAT_KINDS = ("txt", "json", "srt", "vtt")
BACKEND_KINDS = ("auto", "aimlapi", "local")


_NOT_SHOWN: Any = object()  # Field.example's "show the default"


@dataclass(frozen=True)
class Field:
    """One key of the schema. ``kind`` is a small closed set the walker knows how to check.

    ``doc`` is the key's comment in config.example.yaml and its description in
    docs/configuration.md; ``example`` is a value shown there instead of the default, and
    ``commented`` shows the key commented out (a default too long to be worth showing).
    """

    kind: str  # str | int | float | bool | auto_bool | path | strlist | map | section | list
    default: Any = None
    doc: str = ""
    nullable: bool = False
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    children: Mapping[str, Field] | None = None
    example: Any = _NOT_SHOWN
    commented: bool = False

    @property
    def shown(self) -> Any:
        """The value config.example.yaml shows for this key."""
        return self.default if self.example is _NOT_SHOWN else self.example


def _section(doc: str, **children: Field) -> Field:
    return Field("section", doc=doc, children=children)


WATCH_ITEM: Mapping[str, Field] = {
    "path": Field("path", required=True, example="./inbox",
                  doc="the folder to watch (required)"),
    "name": Field("str", None, "the folder's name in a shared store (state.url); null = its "
                  "last path part. Hosts that mount one share at different paths give it the "
                  "same name, and share its jobs (docs/multi-host.md)", nullable=True),
    "recursive": Field("bool", True, "watch sub-folders too"),
    "patterns": Field("strlist", list(AUDIO_PATTERNS), "file name globs taken as input "
                      "(default: common audio and video types)", commented=True,
                      example=["*.mp3", "*.wav", "*.m4a"]),
    "ignore": Field("strlist", [], "extra globs to skip; hidden and temp names are always "
                    "skipped"),
    "settle_seconds": Field("float", None, "null = daemon.settle_seconds", nullable=True,
                            minimum=0),
    "polling": Field("auto_bool", "auto", "auto: poll a folder on a network or FUSE "
                     "filesystem (NFS, SMB, sshfs...), which sends no events for other hosts' "
                     "changes, and use inotify elsewhere; true or false forces it"),
    "model": Field("str", None, "null = api.model (the AI/ML API only)", nullable=True),
    "options": Field("map", None, "extra create fields over api.options, e.g. "
                     "{language: fr}", nullable=True),
    "formats": Field("strlist", None, "null = output.formats", nullable=True,
                     choices=FORMAT_KINDS),
    "backend": Field("str", None, "aimlapi | local | auto for this folder only; "
                     "null = backend", nullable=True, choices=BACKEND_KINDS),
    "follow_symlinks": Field("bool", False, "take symlinked recordings whose target is inside "
                             "a watched folder"),
    "create": Field("bool", False, "create the folder if missing (false: wait for it, e.g. a "
                    "share)", example=True),
    "skip_subtitled": Field("bool", False, "a video with subtitles in options.language (an "
                            "embedded subtitle stream, or NAME.LANG.srt|vtt|ass or "
                            "NAME.srt|vtt|ass beside it; any language when none is set) is "
                            "not sent: done with the note \"already subtitled\""),
}

SCHEMA: Mapping[str, Field] = {
    "backend": Field("str", "auto", "aimlapi | local | auto (aimlapi when the API key is set, "
                     "else the local engine)", choices=BACKEND_KINDS),
    "api": _section(
        "The AI/ML API (two-step STT: POST /stt/create, GET /stt/{generation_id}).",
        base_url=Field("str", "https://api.aimlapi.com/v1", "the service's root URL"),
        api_key_env=Field("str", "AIMLAPI_KEY", "name of the environment variable holding "
                          "the key", nullable=True),
        api_key_file=Field("path", None, "or a file holding it (e.g. "
                           "${CREDENTIALS_DIRECTORY}/aimlapi_key)",
                           nullable=True),
        model=Field("str", "#g1_whisper-tiny", "model name, sent as is"),
        options=Field("map", {}, "extra create fields, e.g. {language: en, punctuate: true}"),
        max_in_flight=Field("int", 16, "jobs submitted and not yet finished, at most",
                            minimum=1),
        connect_timeout=Field("float", 10.0, "seconds to connect", minimum=0.1),
        read_timeout=Field("float", 60.0, "seconds to wait for an answer (uploads get more, "
                           "by size)", minimum=0.1),
        retries=Field("int", 5, "tries of one request on connection errors, timeouts, 5xx",
                      minimum=1),
        upload=Field("str", "audio", "audio (default) sends one audio track and no video: "
                     "a video's track in the folder's language copied out without "
                     "re-encoding (AAC as m4a, Opus as ogg, MP3), else as Opus; audio files "
                     "the service reads go unchanged; compact sends 16 kHz mono Opus at "
                     "24 kbit/s (about 50x fewer bytes than WAV; files already compact go as "
                     "they are); as_is sends the file unchanged (audio and compact need "
                     "sttwatch[local] for PyAV)",
                     choices=("as_is", "audio", "compact")),
        trim_silence=Field("bool", False, "cut silences longer than trim_min_silence before "
                           "uploading (fewer billed seconds); every time in the transcript "
                           "is mapped back to the recording's (needs sttwatch[local])"),
        trim_min_silence=Field("float", 3.0, "seconds of silence worth cutting", minimum=1),
        skip_no_speech=Field("bool", True, "a recording in which the voice-activity detector "
                             "(sttwatch[local]) hears no speech is not sent: done with empty "
                             "transcripts and the note \"no speech\"; false sends everything"),
        price_per_minute=Field("float", 0.006, "USD per minute of audio, for the budget's "
                               "estimate before a create (default: the listed whisper rate)",
                               minimum=0),
        credits_per_usd=Field("float", 2_000_000.0, "converts the service's "
                              "x-aimlapi-credits-used header to USD when it sends no "
                              "x-aimlapi-usd-spent", minimum=1),
        probe_seconds=Field("float", 30.0, "while the service refuses the key or the account: "
                            "one request this often, and work resumes within one interval "
                            "of the key being accepted again", minimum=1),
    ),
    "local": _section(
        "The offline engine: whisper-tiny via faster-whisper (pip install 'sttwatch[local]').",
        model=Field("str", "tiny.en", "a faster-whisper model name, or a folder with a "
                    "converted model"),
        device=Field("str", "cpu", "cpu | cuda | auto"),
        compute_type=Field("str", "int8", "int8 on CPU; float16 on a GPU"),
        threads=Field("int", 0, "CPU threads per worker; 0 = cores / workers", minimum=0),
        beam_size=Field("int", 5, "beam search width", minimum=1),
        language=Field("str", None, "e.g. en; null = detect (tiny.en is English only)",
                       nullable=True),
        vad_filter=Field("bool", True, "skip silences (Silero VAD): same WER and CPU on the "
                         "espeak corpus, less work on quiet recordings (bench/local_modes.py)"),
        task=Field("str", "transcribe", "transcribe | translate (into English; needs a "
                   "multilingual model such as tiny or base, not tiny.en)",
                   choices=("transcribe", "translate")),
        workers=Field("int", 2, "files transcribed at once (2 x 1 thread beat 1 x 2 threads "
                      "by 2.2x on a 2-core machine: see bench/local_engine.py)", minimum=1),
        chunk_seconds=Field("float", 120.0, "longer files go in pieces of about this length "
                            "(bounds memory)", minimum=30),
    ),
    "watch": Field("list", [], "Folders to watch (needed by 'run'). Each entry may override "
                   "backend, patterns, ignore, settle_seconds, polling, model, options and "
                   "formats for its own files.", children=WATCH_ITEM),
    "state": _section(
        "Where jobs are kept: a SQLite file (one daemon) or a PostgreSQL database "
        "(several daemons); give either path or url.",
        path=Field("path", "./sttwatch-state.db", "SQLite; keeps every job across restarts "
                   "and crashes"),
        url=Field("str", None, "or postgresql://user@host/db, shared by several daemons "
                  "(needs sttwatch[postgres])", nullable=True),
    ),
    "output": _section(
        "Transcripts.",
        formats=Field("strlist", ["txt"], "any of txt, json, srt, vtt", choices=FORMAT_KINDS),
        name=Field("str", "{stem}.{format}", "{stem}: talk, {name}: talk.mp3, {lang}: the "
                   "language (en). Each name belongs to one recording: talk.mp3 and "
                   "talk.wav in one folder never overwrite each other (the second gets "
                   "talk.wav.txt, then numbered names: talk.wav.2.txt), and a transcript "
                   "sttwatch did not write is never replaced (the recording takes the next "
                   "free name)"),
        dir=Field("path", None, "null: beside the recording; or a folder mirroring the "
                  "watched tree", nullable=True),
        on_done=Field("str", "keep", "keep | move | delete the recording once every "
                      "transcript is written", choices=("keep", "move", "delete")),
        done_dir=Field("path", None, "where on_done: move puts recordings (mirrored tree)",
                       nullable=True),
        error_files=Field("bool", True, "a failed file gets name.ext.sttwatch-error.json "
                          "beside it"),
    ),
    "daemon": _section(
        "Timing, and sharing a store between daemons.",
        settle_seconds=Field("float", 2.0, "a file must stop changing this long before it is "
                             "taken", minimum=0),
        rescan_seconds=Field("float", 300.0, "full rescan, for events that were missed",
                             minimum=1),
        share_rescan_seconds=Field("float", 3600.0, "full rescan of a polled watch (a share), "
                                   "for files rewritten in place; new files are found by "
                                   "folder mtimes every 2 s", minimum=10),
        share_deadline_seconds=Field("float", 5.0, "a call on a watched folder on a share "
                                     "(network, FUSE or unknown filesystem) that takes "
                                     "longer marks its share hung (offline) until it "
                                     "answers; the daemon never waits longer", minimum=0.5),
        first_poll_seconds=Field("float", 1.0, "first fetch of a job, until recent jobs teach "
                                 "a better time", minimum=0.1),
        poll_cap_seconds=Field("float", 20.0, "longest gap between fetches of one job",
                               minimum=0.1),
        job_timeout_seconds=Field("float", 3600.0, "a job not finished by then is submitted "
                                  "again", minimum=1),
        max_attempts=Field("int", 3, "submissions of one file before it is marked failed",
                           minimum=1),
        host_id=Field("str", None, "this daemon's name in a shared store; null = the host "
                      "name",
                      nullable=True),
        lease_seconds=Field("float", 60.0, "a dead daemon's jobs are taken over after this "
                            "long", minimum=5),
        once_timeout=Field("float", 600.0, "run --once exits 5 when the service is unreachable "
                           "this long, and 1 when transcripts cannot be written or a watch "
                           "folder stays offline this long (the jobs stay for the next run)",
                           minimum=1),
    ),
    "budget": _section(
        "Spend caps for the paid service (none by default). Days and months are UTC; a create "
        "that would pass a cap is not sent.",
        usd_per_day=Field("float", None, "USD per UTC day, at most", nullable=True,
                          minimum=0),
        usd_per_month=Field("float", None, "USD per UTC month, at most", nullable=True,
                            minimum=0),
        audio_hours_per_day=Field("float", None, "hours of audio sent per UTC day, at most",
                                  nullable=True, minimum=0),
        on_exhausted=Field("str", "pause", "pause (jobs wait for the cap's reset, or for "
                           "credits) | local (they go to the local engine)",
                           choices=("pause", "local")),
    ),
    "metrics": _section(
        "Prometheus metrics (sttwatch_*).",
        listen=Field("str", None, "host:port serving /metrics, e.g. 127.0.0.1:9464",
                     nullable=True),
        textfile=Field("path", None, "or a file for node_exporter's textfile collector, "
                       "rewritten atomically", nullable=True),
        interval=Field("float", 15.0, "seconds between textfile writes", minimum=1),
    ),
    "hooks": _section(
        "Run for every job that ends done or failed (delivered at least once, one at a time).",
        command=Field("strlist", None, "argv run with STTWATCH_* environment variables",
                      nullable=True),
        url=Field("str", None, "POSTed the same fields as JSON", nullable=True),
        timeout=Field("float", 30.0, "seconds one delivery may take", minimum=1),
        env=Field("strlist", None, "names of the daemon's environment variables the command "
                  "also gets, e.g. [NOTES_TOKEN]; it always gets PATH, HOME, LANG and the "
                  "STTWATCH_* ones, and never the API key's (api.api_key_env)",
                  nullable=True),
    ),
    "log": _section(
        "Logging.",
        level=Field("str", "info", "debug | info | warning | error",
                    choices=("debug", "info", "warning", "error")),
        format=Field("str", "auto", "auto (console on a TTY, JSON lines otherwise) | console "
                     "| json", choices=("auto", "console", "json")),
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
    probe_seconds: float
    upload: str = "audio"
    trim_silence: bool = False
    trim_min_silence: float = 3.0
    skip_no_speech: bool = True
    price_per_minute: float = 0.006
    credits_per_usd: float = 2_000_000.0


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
    task: str = "transcribe"


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    recursive: bool
    patterns: tuple[str, ...]
    ignore: tuple[str, ...]
    settle_seconds: float | None
    polling: bool | str  # True, False or "auto"
    model: str | None
    options: Mapping[str, Any] | None
    formats: tuple[str, ...] | None
    backend: str | None
    follow_symlinks: bool = False
    create: bool = False
    skip_subtitled: bool = False
    name: str | None = None

    @property
    def key_name(self) -> str:
        """What the store keys this folder's jobs by: ``name``, else the folder's name."""
        return self.name or self.path.name or "root"


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
    share_rescan_seconds: float = 3600.0
    share_deadline_seconds: float = 5.0


@dataclass(frozen=True)
class BudgetConfig:
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    audio_hours_per_day: float | None = None
    on_exhausted: str = "pause"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = None
    textfile: Path | None = None
    interval: float = 15.0


@dataclass(frozen=True)
class HooksConfig:
    command: tuple[str, ...] | None = None
    url: str | None = None
    timeout: float = 30.0
    env: tuple[str, ...] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.command) or bool(self.url)


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
    budget: BudgetConfig = BudgetConfig()
    metrics: MetricsConfig = MetricsConfig()
    hooks: HooksConfig = HooksConfig()

    def watch_for(self, path: Path) -> WatchConfig | None:
        return watch_for(self.watches, path)


def watch_for(watches: Sequence[WatchConfig], path: Path) -> WatchConfig | None:
    """The watch whose folder holds ``path`` (the deepest one when folders nest). Compared
    as text, as ``PurePath.is_relative_to`` compares parts (both are lexical; it costs a
    few microseconds a call, and every call about a file asks): two folders that both hold
    ``path`` nest, so the longer is the deeper."""
    text, best, depth = str(path), None, -1
    for w in watches:
        root = str(w.path)
        if (text == root or text.startswith(root if root.endswith("/") else root + "/")) \
                and len(root) > depth:
            best, depth = w, len(root)
    return best


_TYPES: Mapping[str, tuple[type, ...]] = {
    "str": (str,), "path": (str,), "bool": (bool,), "map": (dict,),
    "int": (int,), "float": (int, float),
}


RESOLVE_DEADLINE = 2.0  # seconds; see _resolve


def _resolve(path: Path) -> Path:
    """``Path.resolve()``, which looks at each part of the path: on a hung share (a watch
    folder's mount) that blocks for as long as the hang. Past a short deadline the path is
    taken as written, made absolute, so that ``status`` and start-up still answer."""
    out: list[Path] = []
    looker = threading.Thread(target=lambda: out.append(path.resolve()), daemon=True)
    looker.start()
    looker.join(RESOLVE_DEADLINE)
    return out[0] if out else Path(os.path.abspath(path))


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
    if kind == "auto_bool":
        if not isinstance(value, bool) and value != "auto":
            errors.append(f"at '{key}': expected true, false or auto, got {value!r}")
            return field.default
        return value
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
        return _resolve(base / os.path.expanduser(os.path.expandvars(value)))
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


# The dataclass each section becomes; ``state`` and ``log`` are flattened into ``Config`` as
# ``state_path``, ``log_level``..., and the ``watch`` list becomes ``Config.watches``.
SECTION_TYPES: Mapping[str, type] = {"api": ApiConfig, "local": LocalConfig,
                                     "output": OutputConfig, "daemon": DaemonConfig,
                                     "watch": WatchConfig, "budget": BudgetConfig,
                                     "metrics": MetricsConfig, "hooks": HooksConfig}
CONFIG_NAMES: Mapping[str, str] = {"watch": "watches"}

T = TypeVar("T")


def _build(cls: type[T], values: Mapping[str, Any]) -> T:
    """A dataclass from validated values, copied so that nothing in it is shared or mutable
    through it (lists become tuples, mappings fresh dicts)."""
    return cls(**{name: tuple(v) if isinstance(v, list) else dict(v) if isinstance(v, dict)
                  else v for name, v in values.items()})


def _config(values: Mapping[str, Any], source: Path) -> Config:
    """``Config`` from the validated tree, by the naming rule above (no key is listed here)."""
    fields: dict[str, Any] = {"source": source.resolve()}
    for name, value in values.items():
        attr = CONFIG_NAMES.get(name, name)
        cls = SECTION_TYPES.get(name)
        if SCHEMA[name].kind == "list" and cls is not None:
            fields[attr] = tuple(_build(cls, item) for item in value or [])
        elif cls is not None:
            fields[attr] = _build(cls, value)
        elif SCHEMA[name].kind == "section":
            fields.update({f"{name}_{key}": v for key, v in value.items()})
        else:
            fields[attr] = value
    return Config(**fields)


def parse(text: str, source: Path) -> Config:
    """Parse config text; relative paths resolve against the config file's folder."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    errors: list[str] = []
    base = source.parent.resolve()
    values = _walk(raw, SCHEMA, "", base, errors)
    if errors:
        raise ConfigError(source, errors)
    errors.extend(_logical_errors(values, raw))
    if errors:
        raise ConfigError(source, errors)
    return _config(values, source)


def _logical_errors(v: Mapping[str, Any], raw: Any) -> list[str]:
    """Rules across keys that a per-key check cannot see."""
    errors = []
    o = v["output"]
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
    given_state = raw.get("state") if isinstance(raw, dict) else None
    if isinstance(given_state, dict) and given_state.get("path") is not None and \
            given_state.get("url") is not None:
        errors.append("at 'state': give either 'state.path' (SQLite) or 'state.url' "
                      "(PostgreSQL), not both")
    listen = v["metrics"]["listen"]
    if listen is not None and not _host_port(listen):
        errors.append(f"at 'metrics.listen': expected host:port, e.g. 127.0.0.1:9464, got "
                      f"{listen!r}")
    if v["budget"]["on_exhausted"] == "local" and v["backend"] == "local":
        errors.append("at 'budget.on_exhausted': 'local' falls back from the paid service; "
                      "backend is already local")
    seen_names: dict[str, int] = {}
    for i, w in enumerate(v["watch"] or []):
        name = w["name"] or Path(w["path"]).name or "root"
        if "/" in name or name != name.strip() or not name:
            errors.append(f"at 'watch[{i}].name': {name!r} is not a name (no '/', no "
                          "surrounding spaces)")
        elif name in seen_names and v["state"]["url"] is not None:  # keys a shared store
            errors.append(f"at 'watch[{i}].name': {name!r} is also watch[{seen_names[name]}]'s "
                          "name (the default is the folder's last path part); give each watch "
                          "its own name")
        seen_names.setdefault(name, i)
    key_env = v["api"]["api_key_env"]
    if key_env is not None and key_env in (v["hooks"]["env"] or []):
        errors.append(f"at 'hooks.env': {key_env} holds the API key (api.api_key_env); a "
                      "hook never gets it")
    url = v["state"]["url"]
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        errors.append(f"at 'state.url': expected a postgresql:// URL, got {url.split('@')[-1]!r}")
    return errors


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]") or "0.0.0.0", int(port)


def listen_address(text: str) -> tuple[str, int]:
    """``metrics.listen`` as (host, port); validated at load time."""
    got = _host_port(text)
    assert got is not None
    return got


def load(path: Path | str) -> Config:
    """Read and validate a config file; every failure is a ``ConfigError`` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(p, [f"cannot read the file: {exc.strerror}"]) from None
    return parse(text, p)
