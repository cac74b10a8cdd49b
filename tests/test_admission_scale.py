"""A first scan of a large library: admitted in batches while systemd's watchdog keeps
hearing from the daemon, and sending starts with the first batch, not after the scan."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, write_config
from fake_service import FakeService

FILES = 30_000
WATCHDOG_USEC = 6_000_000  # systemd kills at this; the daemon pings at half of it


@pytest.mark.slow
@pytest.mark.solo  # the watchdog gaps are wall time
def test_thirty_thousand_new_files_never_starve_the_watchdog(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    fake.update(task_seconds=3600)  # nothing finishes: this is about admission
    inbox = tmp_path / "inbox"
    cfg = write_config(tmp_path, fake.base_url, api={"max_in_flight": 4})
    for i in range(FILES):
        (inbox / f"{i // 1000:02}").mkdir(exist_ok=True)
        (inbox / f"{i // 1000:02}" / f"r{i:05}.mp3").write_bytes(b"ID3 fake audio %d" % i)
    sock_path = str(tmp_path / "n.sock")
    pings: list[float] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(0.2)
        d = daemon_factory(cfg, env={"NOTIFY_SOCKET": sock_path,
                                     "WATCHDOG_USEC": str(WATCHDOG_USEC)}).start()
        ready_at = None
        deadline = time.monotonic() + 300
        admitted_at = None
        while time.monotonic() < deadline:
            try:
                msg = sock.recv(4096).decode()
            except TimeoutError:
                msg = ""
            now = time.monotonic()
            if "READY=1" in msg and ready_at is None:
                ready_at = now
            if "WATCHDOG=1" in msg:
                pings.append(now)
            if ready_at is not None and admitted_at is None and f"{FILES} queued" not in msg \
                    and "queued" in msg:
                parts = msg.split("STATUS=")[-1].split(" queued, ")
                queued = int(parts[0])
                in_flight = int(parts[1].split(" in flight")[0])
                if queued + in_flight >= FILES:
                    admitted_at = now
            if admitted_at is not None and now - admitted_at > 3:
                break
        assert ready_at is not None and admitted_at is not None, "admission did not finish"
        first_create = fake.creates()[0].time if fake.creates() else None
        d.stop()
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    print(f"{FILES} files admitted in {admitted_at - ready_at:.1f} s after READY; "
          f"{len(pings)} pings, longest gap {max(gaps):.2f} s")
    assert max(gaps) < WATCHDOG_USEC / 1e6 / 2 + 1.0  # never near systemd's kill
    assert first_create is not None and first_create < admitted_at  # sending began early
