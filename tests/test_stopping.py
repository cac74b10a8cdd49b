"""Stopping and reloading a running daemon as systemd does: SIGTERM while the local engine is
in the middle of a long recording, and SIGHUP to a daemon started with --backend."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio
from speech import PARAGRAPH, speak


@pytest.mark.model
@pytest.mark.solo  # stops within the unit's timeout (wall time)
def test_sigterm_with_a_long_local_file_in_flight_stops_within_the_unit_timeout(
        tmp_path: Path, daemon_factory: Callable[..., Daemon]) -> None:
    piece = speak(PARAGRAPH, tmp_path / "piece.wav")
    cfg = write_config(tmp_path, backend="local", local={"workers": 1})
    long_file = tmp_path / "inbox" / "lecture.wav"
    # Ten minutes of speech: far longer than any stop may take.
    subprocess.run(["sox", str(piece), str(long_file), "repeat", "25"], check=True)
    d = daemon_factory(cfg, env={"STTWATCH_TEST_KEY": ""}).start()
    wait_for(lambda: any(e["event"] == "submitted" for e in d.events()), timeout=120)
    d.signal(signal.SIGTERM)
    assert d.proc is not None
    assert d.proc.wait(30) == 0  # the unit's TimeoutStopSec=30
    events = [e["event"] for e in d.events()]
    # "stopping" when the signal is taken, "stopped" once the engine has let go: the
    # process ends right after it, with nothing of the engine left running.
    assert events.index("stopping") < events.index("stopped") == len(events) - 1
    assert transcript(long_file) is None  # queued again for the next start, not half-done


def test_a_daemon_started_with_backend_takes_a_reload(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    cfg = write_config(tmp_path, fake.base_url, backend="auto")
    d = daemon_factory(cfg, extra=("--backend", "aimlapi")).start()
    d.wait_started()
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] in ("reloaded", "reload_refused") for e in d.events()))
    assert any(e["event"] == "reloaded" for e in d.events()), [
        e for e in d.events() if e["event"] == "reload_refused"]
    make_fake_audio(tmp_path / "inbox" / "after.mp3", "after the reload")
    wait_for(lambda: transcript(tmp_path / "inbox" / "after.mp3") == "after the reload")
    assert d.stop() == 0
