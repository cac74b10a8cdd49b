"""A recording is what its bytes are: renamed, moved or copied, it is not paid for again."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, run_cli, transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio


def test_rename_move_and_copy_are_answered_from_the_paid_result(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(inbox / "talk.mp3", "the talk as recorded")
    make_fake_audio(inbox / "memo.mp3", "a memo copied twice")
    d = daemon_factory(cfg).start()
    wait_for(lambda: transcript(inbox / "talk.mp3") == "the talk as recorded")
    wait_for(lambda: transcript(inbox / "memo.mp3") == "a memo copied twice")
    assert len(fake.creates()) == 2

    (inbox / "talk.mp3").rename(inbox / "meeting.mp3")           # a rename
    (inbox / "2026").mkdir()
    shutil.copy2(inbox / "memo.mp3", inbox / "2026" / "memo.mp3")  # a copy, elsewhere
    shutil.copy2(inbox / "memo.mp3", inbox / "memo-copy.mp3")      # and one beside it
    wait_for(lambda: transcript(inbox / "meeting.mp3") == "the talk as recorded")
    wait_for(lambda: transcript(inbox / "2026" / "memo.mp3") == "a memo copied twice")
    wait_for(lambda: transcript(inbox / "memo-copy.mp3") == "a memo copied twice")
    (inbox / "meeting.mp3").rename(inbox / "2026" / "meeting.mp3")  # a move
    wait_for(lambda: transcript(inbox / "2026" / "meeting.mp3") == "the talk as recorded")
    wait_for(lambda: not (inbox / "meeting.txt").exists())

    assert len(fake.creates()) == 2  # nothing paid twice
    assert not (inbox / "talk.txt").exists()  # the renamed one's old transcript went with it
    assert transcript(inbox / "memo.mp3") == "a memo copied twice"  # a copy keeps its source
    info = json.loads(run_cli("status", "--config", str(cfg), "--json").out)
    # memo, memo-copy, 2026/memo and 2026/meeting: the talk's row followed the file through
    # its rename and its move instead of staying behind, so the last three rows were reused.
    assert info["counts"]["done"] == 4 and info["reused"] == 3
    assert d.stop() == 0

    # A changed recording is new work.
    make_fake_audio(inbox / "memo.mp3", "the memo, rerecorded")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert transcript(inbox / "memo.mp3") == "the memo, rerecorded"
    assert len(fake.creates()) == 3


def test_a_touched_recording_is_not_sent_again(tmp_path: Path, fake: FakeService) -> None:
    """A newer mtime over the same bytes (a touch, a copy tool, another host's view) is no
    new version: the row keeps its result and nothing is paid twice."""
    inbox = tmp_path / "inbox"
    cfg = write_config(tmp_path, fake.base_url)
    talk = make_fake_audio(inbox / "talk.mp3", "the talk, once")
    os.utime(talk, (time.time() - 60, time.time() - 60))
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert transcript(talk) == "the talk, once"
    os.utime(talk, (time.time() - 30, time.time() - 30))  # touched: newer, same bytes
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert len(fake.creates()) == 1
    info = json.loads(run_cli("status", "--config", str(cfg), "--json").out)
    assert info["counts"]["done"] == 1
    make_fake_audio(talk, "the talk, rerecorded")  # other bytes: a new version
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert transcript(talk) == "the talk, rerecorded" and len(fake.creates()) == 2
