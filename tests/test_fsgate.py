"""Calls on a mount's worker with a deadline: one stuck call per mount at most."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from conftest import wait_for

from sttwatch.fsgate import FsGate, ShareHung
from sttwatch.offline import unreachable


def test_a_call_past_its_deadline_hangs_only_its_mount() -> None:
    gate = FsGate(deadline=0.3)
    release = threading.Event()
    started: list[str] = []

    def stuck() -> int:
        started.append("stuck")
        release.wait(60)
        return 1

    with pytest.raises(ShareHung) as caught:
        gate.call("/mnt/nas", stuck, "/mnt/nas/a.mp3")
    assert caught.value.errno == errno.ETIMEDOUT and unreachable(caught.value)
    assert gate.stuck("/mnt/nas")
    # Refused at once while stuck: the function is never even queued.
    with pytest.raises(ShareHung):
        gate.call("/mnt/nas", lambda: started.append("second") or 2)
    assert started == ["stuck"]
    assert gate.call("/", lambda: 3) == 3  # another mount goes on
    release.set()
    wait_for(lambda: not gate.stuck("/mnt/nas"), 10)
    assert gate.call("/mnt/nas", lambda: 4) == 4


def test_errors_come_back_to_the_caller() -> None:
    gate = FsGate(deadline=5)

    def fails() -> None:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    with pytest.raises(OSError) as caught:
        gate.call("/mnt/nas", fails)
    assert caught.value.errno == errno.ENOTCONN and not gate.stuck("/mnt/nas")


def test_a_share_file_reads_like_a_file_a_block_at_a_time(tmp_path: Path) -> None:
    from sttwatch.sharefile import ShareFile

    data = bytes(range(256)) * 1000  # 256,000 bytes
    (tmp_path / "a.bin").write_bytes(data)
    gate = FsGate(deadline=5)
    with ShareFile(gate, "/", tmp_path / "a.bin", block=10_000) as f:
        assert f.read(8192) == data[:8192]
        assert f.read(15_000) == data[8192:23_192]  # across blocks: never short mid-file
        assert f.tell() == 23_192
        assert f.seek(0, os.SEEK_END) == len(data)
        assert f.read(10) == b""
        f.seek(100)
        assert f.read() == data[100:]
    assert f.closed
