"""The command line as a newcomer meets it: help texts, exit statuses, a closed pipe, and
errors that say what happened and what to do."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, write_config
from fake_service import FakeService

from sttwatch import cli, configdoc
from sttwatch.backends.local import describe
from sttwatch.exitcodes import ExitCode
from sttwatch.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_command_has_help() -> None:
    missing = []
    seen = 0
    for prog, parser in _parsers(cli._parser()):
        for action in parser._actions:
            seen += 1
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{prog}: {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{prog} {c.dest}" for c in action._choices_actions if not c.help]
    assert seen > 20
    assert missing == []


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_run_help_lists_every_exit_status() -> None:
    r = run_cli("run", "--help")
    assert r.code == 0
    shown = _flat(r.out)
    for code in ExitCode:
        assert _flat(f"{int(code)} {code.description}") in shown, code.name
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 130]


def _config_with_state(tmp_path: Path) -> Path:
    """A config whose state file exists, as after a daemon's first run."""
    config = tmp_path / "c.yaml"
    config.write_text("watch:\n  - path: ./inbox\n", encoding="utf-8")
    open_store(tmp_path / "sttwatch-state.db", None).close()
    return config


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """'sttwatch status | head -1' after head has gone: no traceback, no message."""
    config = _config_with_state(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before sttwatch writes a byte
    try:
        proc = subprocess.run([sys.executable, "-m", "sttwatch", "status", "-c", str(config)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == ExitCode.OK


def test_status_through_head_prints_its_first_line(tmp_path: Path) -> None:
    config = _config_with_state(tmp_path)
    proc = subprocess.run(["sh", "-c", 'set -e; "$0" -m sttwatch status -c "$1" | head -1',
                           sys.executable, str(config)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "daemon: not running\n", "")


def test_transcribe_a_folder_says_it_is_a_folder(tmp_path: Path, fake: FakeService) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    r = run_cli("transcribe", "--config", str(write_config(tmp_path, fake.base_url)),
                str(folder))
    assert r.code == ExitCode.FAILED
    assert f"{folder}: is a folder" in r.err and "sttwatch run" in r.err
    assert "Traceback" not in r.err and r.out == ""


def test_no_local_engine_and_no_key_names_both_ways_out(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if [local] was not installed
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    r = run_cli("transcribe", str(audio), env={})
    assert r.code == ExitCode.CONFIG
    assert "pip install 'sttwatch[local]'" in r.err
    assert "AIMLAPI_KEY" in r.err and "api.api_key_file" in r.err
    assert "Traceback" not in r.err


def test_a_decode_failure_reads_in_user_terms(tmp_path: Path) -> None:
    """PyAV's own exception for a file that is not audio, as the local engine meets it."""
    av = pytest.importorskip("av")
    bad = tmp_path / "notes.mp3"
    bad.write_bytes(b"this is not audio at all\n" * 100)
    with pytest.raises(av.error.FFmpegError) as info:
        av.open(str(bad))
    text = describe(info.value)
    assert "Errno" not in text and "1094995529" not in text
    assert "cannot be decoded as audio" in text


@pytest.mark.model
def test_a_local_decode_failure_is_not_blamed_on_the_service(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp3"
    bad.write_bytes(b"this is not audio at all\n" * 100)
    r = run_cli("transcribe", "--backend", "local", str(bad), env={})
    assert r.code == ExitCode.FAILED
    assert f"{bad}: cannot transcribe: the file cannot be decoded as audio" in r.err
    assert "service" not in r.err and "Errno" not in r.err


@pytest.mark.parametrize(("flag", "rel"), [("--example", configdoc.EXAMPLE_PATH),
                                            ("--docs", configdoc.DOCS_PATH)])
def test_config_command_prints_the_generated_files(flag: str, rel: str) -> None:
    r = run_cli("config", flag)
    assert r.code == 0
    assert r.out == (ROOT / rel).read_text(encoding="utf-8")
