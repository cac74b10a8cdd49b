"""``run --once`` always ends, with a status that says why: for cron and scripts."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli, write_config
from fake_service import FakeService, make_fake_audio

from sttwatch.exitcodes import ExitCode


def test_once_gives_up_on_an_unreachable_service_with_exit_5(tmp_path: Path) -> None:
    # Nothing listens on port 9: every create fails to connect.
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1", api={"retries": 1},
                       daemon={"once_timeout": 1})
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "never sent")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == ExitCode.UNREACHABLE == 5
    gave_up = [e for e in r.events() if e["event"] == "service_unreachable"]
    assert gave_up and "stay queued" in gave_up[0]["action"]
    status = run_cli("status", "--config", str(cfg)).out
    assert "seen 1" in status  # the file waits for the next run, not failed


def test_once_tells_a_rejected_key_from_an_empty_account(tmp_path: Path,
                                                         fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "queued")
    bad_key = run_cli("run", "--config", str(cfg), "--once",
                      env={"STTWATCH_TEST_KEY": "sk-wrong-000000000000000000"})
    assert bad_key.code == ExitCode.AUTH == 3
    assert any(e["event"] == "api_key_rejected" for e in bad_key.events())
    fake.update(out_of_credits=True)
    broke = run_cli("run", "--config", str(cfg), "--once")
    assert broke.code == ExitCode.CREDITS == 4
    assert any(e["event"] == "out_of_credits" for e in broke.events())
    assert not any(e["event"] == "api_key_rejected" for e in broke.events())
