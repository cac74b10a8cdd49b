"""The API key's handling (issue 12): a key pasted where a variable's name belongs is refused
without being shown, a key file others can read is warned about, and ``redact`` removes the
key and any bearer token from text."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from conftest import KEY, run_cli, write_config

from sttwatch import config as configmod
from sttwatch.apikey import (
    key_source,
    key_warnings,
    log_key_warnings,
    looks_like_a_key,
    read_api_key,
    redact,
)
from sttwatch.errors import ConfigError

PASTED = [KEY, "sk-aiml-7Hq2ZtW9xK4mP0sV", "3f9a1c27b84e4d0f9e6a5b2c7d8e9f01", "abc.def/ghi=",
          "sk_live_abc"]


@pytest.mark.parametrize("value", PASTED)
def test_a_key_pasted_into_api_key_env_is_refused_without_being_shown(
        tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, api={"api_key_env": value})
    with pytest.raises(ConfigError) as info:
        read_api_key(configmod.load(path), {value: "x"})
    assert "api.api_key_env" in str(info.value) and str(path) in str(info.value)
    assert value not in str(info.value)
    result = run_cli("run", "--config", str(path), env={value: KEY})
    assert result.code == 2 and "api.api_key_env" in result.err
    assert value not in result.out + result.err
    assert value not in key_source(configmod.load(path))


def test_check_does_not_print_a_key_pasted_into_api_key_env(tmp_path: Path) -> None:
    path = write_config(tmp_path, api={"api_key_env": KEY})
    result = run_cli("check", "--config", str(path), env={KEY: KEY})
    assert "api.api_key_env" in result.out + result.err
    assert KEY not in result.out + result.err


@pytest.mark.parametrize("name", ["AIMLAPI_KEY", "STTWATCH_TEST_KEY", "my_key", "_K2",
                                  "aimlapi_key_for_prod"])
def test_variable_names_are_names(tmp_path: Path, name: str) -> None:
    assert not looks_like_a_key(name)
    cfg = configmod.load(write_config(tmp_path, api={"api_key_env": name}))
    assert read_api_key(cfg, {name: KEY}) == KEY


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True),
                                              (0o644, True), (0o604, True)])
def test_a_key_file_others_can_read_is_warned_about(tmp_path: Path, mode: int,
                                                    warned: bool) -> None:
    key_file = tmp_path / "aimlapi.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(mode)
    cfg = configmod.load(write_config(tmp_path, api={"api_key_file": str(key_file)}))
    assert read_api_key(cfg, {}) == KEY
    assert bool(key_warnings(cfg)) is warned
    with structlog.testing.capture_logs() as logs:
        log_key_warnings(cfg)
    if warned:
        (event,) = logs
        assert event["event"] == "api_key_file_readable" and event["path"] == str(key_file)
        assert event["mode"] == f"{mode:04o}" and "chmod 600" in event["fix"]
        assert KEY not in str(event)
    else:
        assert logs == []


def test_redact_removes_the_key_and_any_bearer_token() -> None:
    text = (f'{{"authorization": "Bearer {KEY}", "x-api-key": "{KEY}", '
            '"other": "bearer abc.DEF_1-2~+\\/x==", "note": "a bearer of news"}')
    clean = redact(text, KEY)
    assert KEY not in clean and "abc.DEF" not in clean
    assert clean == ('{"authorization": "Bearer ***", "x-api-key": "***", '
                     '"other": "bearer ***", "note": "a bearer of news"}')
    assert redact("nothing here", None) == "nothing here"
    spoken = "The bearer responsibilities. A bearer of news; bearer instruments and bonds"
    assert redact(spoken, KEY) == spoken  # transcripts pass through here too
    assert redact("Bearer 0123456789abcdef", None) == "Bearer ***"
    slashed = "sk/with/slashes"
    assert redact('{"k": "sk\\/with\\/slashes"}', slashed) == '{"k": "***"}'
