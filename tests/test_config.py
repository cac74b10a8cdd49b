"""Config loading: the schema's dataclasses, its error messages, and the example file."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
import yaml

from sttwatch import config, configdoc
from sttwatch.cli import main
from sttwatch.config import (
    AUDIO_PATTERNS,
    SCHEMA,
    WATCH_ITEM,
    ApiConfig,
    DaemonConfig,
    LocalConfig,
)
from sttwatch.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"

FULL = """\
backend: aimlapi
api:
  base_url: http://127.0.0.1:9/v1
  api_key_env: null
  api_key_file: secrets/aimlapi_key
  model: "#g1_whisper-base"
  options: {language: en, punctuate: true}
  max_in_flight: 4
  connect_timeout: 5
  read_timeout: 30.5
  retries: 2
local:
  model: base.en
  device: cuda
  compute_type: float16
  threads: 2
  beam_size: 1
  language: en
  vad_filter: true
  workers: 3
watch:
  - path: inbox
    recursive: false
    patterns: ["*.wav"]
    ignore: ["*.tmp"]
    settle_seconds: 0.5
    polling: true
    model: "#g1_whisper-small"
    options: {language: de}
    formats: [srt, vtt]
  - path: ../shared/recordings
state:
  path: ./var/jobs.db
output:
  formats: [txt, json]
daemon:
  settle_seconds: 1
  rescan_seconds: 60
  first_poll_seconds: 0.5
  poll_cap_seconds: 10
  job_timeout_seconds: 900
  max_attempts: 5
log:
  level: debug
  format: json
"""


WATCH_INBOX = {"recursive": False, "patterns": ("*.wav",), "ignore": ("*.tmp",),
               "settle_seconds": 0.5, "polling": True, "model": "#g1_whisper-small",
               "options": {"language": "de"}, "formats": ("srt", "vtt")}
WATCH_DEFAULTS = {"recursive": True, "patterns": AUDIO_PATTERNS, "ignore": (),
                  "settle_seconds": None, "polling": "auto", "model": None, "options": None,
                  "formats": None}


def attrs(obj: object, like: dict[str, object]) -> dict[str, object]:
    return {name: getattr(obj, name) for name in like}


def write(folder: Path, text: str, name: str = "sttwatch.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> tuple[str, list[str]]:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.path == str(path)
    return str(info.value), info.value.problems


def test_full_config_gives_frozen_dataclasses_with_paths_beside_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    path = write(etc, FULL)
    monkeypatch.chdir(write(tmp_path / "elsewhere", "").parent)  # not the config's folder
    cfg = config.load(path)

    assert cfg.source == path.resolve()
    assert cfg.backend == "aimlapi"
    assert cfg.api == ApiConfig(
        base_url="http://127.0.0.1:9/v1", api_key_env=None,
        api_key_file=(etc / "secrets" / "aimlapi_key").resolve(), model="#g1_whisper-base",
        options={"language": "en", "punctuate": True}, max_in_flight=4, connect_timeout=5.0,
        read_timeout=30.5, retries=2, probe_seconds=30.0)
    assert isinstance(cfg.api.connect_timeout, float)
    assert cfg.local == LocalConfig(model="base.en", device="cuda", compute_type="float16",
                                    threads=2, beam_size=1, language="en", vad_filter=True,
                                    workers=3, chunk_seconds=120.0)
    inbox, shared = cfg.watches
    assert attrs(inbox, WATCH_INBOX) == WATCH_INBOX
    assert inbox.path == (etc / "inbox").resolve()
    assert attrs(shared, WATCH_DEFAULTS) == WATCH_DEFAULTS
    assert shared.path == (tmp_path / "shared" / "recordings").resolve()
    assert cfg.state_path == (etc / "var" / "jobs.db").resolve()
    assert cfg.output.formats == ("txt", "json")
    assert cfg.daemon == DaemonConfig(settle_seconds=1.0, rescan_seconds=60.0,
                                      first_poll_seconds=0.5, poll_cap_seconds=10.0,
                                      job_timeout_seconds=900.0, max_attempts=5)
    assert (cfg.log_level, cfg.log_format) == ("debug", "json")

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.backend = "local"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.api.max_in_flight = 99  # type: ignore[misc]
    assert cfg.watch_for(etc / "inbox" / "sub" / "a.wav") == cfg.watches[0]


def test_minimal_config_takes_the_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "watch:\n  - path: inbox\n"))
    assert cfg.backend == "auto"
    assert (cfg.api.base_url, cfg.api.model) == ("https://api.aimlapi.com/v1", "#g1_whisper-tiny")
    assert (cfg.api.api_key_env, cfg.api.api_key_file, cfg.api.options) == ("AIMLAPI_KEY",
                                                                             None, {})
    assert cfg.state_path == (tmp_path / "sttwatch-state.db").resolve()
    assert cfg.output.formats == ("txt",)
    assert cfg.watches[0].patterns == AUDIO_PATTERNS and cfg.watches[0].recursive is True
    assert cfg.daemon.max_attempts == 3 and cfg.log_level == "info"


ERRORS = {
    "unknown top-level key": ("bakend: local\n", ["at the top level", "unknown key 'bakend'"]),
    "unknown nested key": ("api:\n  modle: x\n", ["at 'api'", "unknown key 'modle'"]),
    "unknown watch key": ("watch:\n  - path: in\n    recursve: false\n",
                          ["at 'watch[0]'", "unknown key 'recursve'"]),
    "wrong type": ('api:\n  max_in_flight: "many"\n',
                   ["at 'api.max_in_flight'", "expected int", "'many'"]),
    "bool for int": ("api:\n  max_in_flight: true\n", ["at 'api.max_in_flight'", "expected int"]),
    "bool for float": ("daemon:\n  settle_seconds: false\n",
                       ["at 'daemon.settle_seconds'", "expected a number"]),
    "bad choice": ("backend: cloud\n",
                   ["at 'backend'", "'cloud' is not one of: auto, aimlapi, local"]),
    "bad format": ("output:\n  formats: [docx]\n",
                   ["at 'output.formats[0]'", "'docx' is not one of: txt, json, srt, vtt"]),
    "bad watch format": ("watch:\n  - path: in\n    formats: [srt, docx]\n",
                         ["at 'watch[0].formats[1]'", "'docx'"]),
    "bad watch backend": ("watch:\n  - path: in\n    backend: cloud\n",
                          ["at 'watch[0].backend'", "'cloud' is not one of"]),
    "bad watch polling": ("watch:\n  - path: in\n    polling: sometimes\n",
                          ["at 'watch[0].polling'", "expected true, false or auto"]),
    "watch without path": ("watch:\n  - recursive: true\n",
                           ["at 'watch[0].path'", "missing required key"]),
    "below minimum": ("daemon:\n  poll_cap_seconds: 0\n",
                      ["at 'daemon.poll_cap_seconds'", "must be at least 0.1"]),
    "section not a mapping": ("api: 5\n", ["at 'api'", "expected a mapping"]),
    "invalid YAML": ("api: [unclosed\n", ["not valid YAML"]),
}


@pytest.mark.parametrize(("text", "fragments"), list(ERRORS.values()), ids=list(ERRORS))
def test_each_error_names_the_file_and_the_key(tmp_path: Path, text: str,
                                                 fragments: list[str]) -> None:
    path = write(tmp_path, text)
    message, problems = problems_of(path)
    assert message.startswith(f"{path}: invalid configuration:")
    assert len(problems) == 1, problems  # exactly this problem, nothing spurious
    for fragment in fragments:
        assert fragment in problems[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = ("backend: cloud\napi:\n  modle: x\n  max_in_flight: many\n"
            "output:\n  formats: [docx]\nwatch:\n  - recursive: true\n")
    message, problems = problems_of(write(tmp_path, text))
    assert len(problems) == 5
    for key in ("'backend'", "'modle'", "'api.max_in_flight'", "'output.formats[0]'",
                "'watch[0].path'"):
        assert sum(key in p for p in problems) == 1, key
        assert key in message


def test_unreadable_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    message, problems = problems_of(tmp_path / "missing.yaml")
    assert "cannot read the file" in problems[0] and str(tmp_path / "missing.yaml") in message


def test_a_bad_name_template_is_a_config_error(tmp_path: Path) -> None:
    _message, problems = problems_of(write(tmp_path, "output:\n  name: '{stem.nope}.{format}'\n"))
    assert len(problems) == 1 and "at 'output.name'" in problems[0]


@pytest.mark.parametrize("command", ["run", "status"])
def test_cli_reports_a_broken_config_and_exits_2(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, 'api:\n  max_in_flight: "many"\nwatch:\n  - path: in\n',
                 name="broken.yaml")
    out, err = io.StringIO(), io.StringIO()
    code = main([command, "--config", str(path)], stdout=out, stderr=err, environ={})
    assert code == 2
    assert str(path) in err.getvalue() and "api.max_in_flight" in err.getvalue()
    assert "'many'" in err.getvalue() and "Traceback" not in err.getvalue()
    assert out.getvalue() == ""
    assert not (tmp_path / "sttwatch-state.db").exists()  # nothing started


# --- the example file must not drift from the schema ---------------------------------------

def test_example_config_shows_every_schema_key_and_parses() -> None:
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    text = EXAMPLE.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    missing = []
    for name, field in SCHEMA.items():
        if name not in raw:
            missing.append(name)
        elif field.kind == "section":
            missing += [f"{name}.{child}" for child in field.children or {}
                        if child not in (raw[name] or {})]
    (entry,) = raw["watch"]
    # A watch key may be shown commented out ('# patterns: [...]'): its default is long.
    missing += [f"watch[].{child}" for child in WATCH_ITEM if child not in entry
                and not re.search(rf"^\s*#\s*{child}:", text, re.MULTILINE)]
    assert missing == []
    config.parse(text, EXAMPLE)  # raises ConfigError on any problem


def test_example_config_shows_the_defaults(tmp_path: Path) -> None:
    """The example's values are the ones a user gets by leaving the keys out."""
    example = config.parse(EXAMPLE.read_text(encoding="utf-8"), tmp_path / "x.yaml")
    (watch,) = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["watch"]
    # The example's inbox is created on first run (create: true), the one non-default value.
    minimal = config.parse(f"watch:\n  - path: {watch['path']}\n    create: true\n",
                           tmp_path / "x.yaml")
    assert example == minimal


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    cfg = config.parse("api:\nlocal:\noutput:\nwatch:\n  - path: ./in\n", tmp_path / "c.yaml")
    assert cfg.api.model == "#g1_whisper-tiny" and cfg.local.model == "tiny.en"
    assert cfg.output.formats == ("txt",)


# --- one schema: dataclasses and generated files follow it ---------------------------------

def _expected_config_fields() -> dict[str, tuple[type, str]]:
    """Every Config attribute a schema key fills, with (dataclass, key) for section keys."""
    out: dict[str, tuple[type, str]] = {}
    for name, field in SCHEMA.items():
        cls = config.SECTION_TYPES.get(name)
        if cls is not None:
            out[config.CONFIG_NAMES.get(name, name)] = (cls, name)
        elif field.kind == "section":
            out.update({f"{name}_{key}": (config.Config, f"{name}.{key}")
                        for key in field.children or {}})
        else:
            out[name] = (config.Config, name)
    return out


def test_every_schema_key_has_a_dataclass_field_and_every_field_a_key() -> None:
    top = {f.name for f in dataclasses.fields(config.Config)} - {"source"}
    assert top == set(_expected_config_fields())
    for name, cls in config.SECTION_TYPES.items():
        keys = set(SCHEMA[name].children or {})
        assert {f.name for f in dataclasses.fields(cls)} == keys, cls.__name__


def test_dataclass_defaults_are_the_schema_defaults() -> None:
    """Code that builds a dataclass directly (tests, other modules) gets what a user gets."""
    for name, cls in config.SECTION_TYPES.items():
        children = SCHEMA[name].children or {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                assert f.default == children[f.name].default, f"{cls.__name__}.{f.name}"
    for f in dataclasses.fields(config.Config):
        if f.name in ("budget", "metrics", "hooks"):  # whole sections, checked above
            assert f.default == config.SECTION_TYPES[f.name](), f.name
        elif f.default is not dataclasses.MISSING:
            section, key = f.name.split("_", 1)
            assert f.default == (SCHEMA[section].children or {})[key].default, f.name


def test_new_keys_reach_their_fields(tmp_path: Path) -> None:
    text = ("state:\n  url: postgresql://u@db/sttwatch\ndaemon:\n  host_id: box-2\n"
            "  lease_seconds: 30\n  once_timeout: 90\n"
            "watch:\n  - path: in\n    follow_symlinks: true\n    create: true\n")
    cfg = config.parse(text, tmp_path / "c.yaml")
    assert cfg.state_url == "postgresql://u@db/sttwatch"
    assert (cfg.daemon.host_id, cfg.daemon.lease_seconds, cfg.daemon.once_timeout) == (
        "box-2", 30.0, 90.0)
    assert (cfg.watches[0].follow_symlinks, cfg.watches[0].create) == (True, True)


def test_the_parsed_config_shares_nothing_mutable(tmp_path: Path) -> None:
    a = config.parse("watch:\n  - path: in\n", tmp_path / "c.yaml")
    b = config.parse("watch:\n  - path: in\n", tmp_path / "c.yaml")
    assert a.api.options == {} and a.api.options is not b.api.options
    assert a.api.options is not (SCHEMA["api"].children or {})["options"].default
    assert isinstance(a.watches[0].patterns, tuple) and isinstance(a.output.formats, tuple)


@pytest.mark.parametrize("rel", list(configdoc.GENERATED))
def test_generated_file_is_up_to_date_with_the_schema(rel: str) -> None:
    path = ROOT / rel
    assert path.is_file(), f"{rel} is missing; run {configdoc.REGENERATE}"
    assert path.read_text(encoding="utf-8") == configdoc.GENERATED[rel](), (
        f"{rel} is out of date with the schema in sttwatch/config.py; "
        f"run {configdoc.REGENERATE}")


def test_the_check_mode_names_a_stale_file(tmp_path: Path) -> None:
    assert configdoc.main(["--root", str(tmp_path)]) == 0
    assert configdoc.stale(tmp_path) == []
    example = tmp_path / configdoc.EXAMPLE_PATH
    example.write_text(example.read_text().replace("max_in_flight: 16", "max_in_flight: 8"))
    assert configdoc.stale(tmp_path) == [configdoc.EXAMPLE_PATH]
    assert configdoc.main(["--root", str(tmp_path), "--check"]) == 1


def test_the_example_has_a_comment_on_every_key() -> None:
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s+(- )?#? ?\w+: ", line):
            assert "  # " in line, line


def test_the_documented_error_is_what_a_broken_file_prints(tmp_path: Path) -> None:
    broken = write(tmp_path, "api:\n  max_in_flight: many\noutput:\n  formats: [docx]\n",
                   name="config.yaml")
    err = io.StringIO()
    assert main(["status", "--config", str(broken)], stdout=io.StringIO(), stderr=err,
                environ={}) == 2
    assert err.getvalue() == configdoc.sample_error().replace("config.yaml", str(broken), 1)
    assert configdoc.sample_error() in (ROOT / configdoc.DOCS_PATH).read_text(encoding="utf-8")
