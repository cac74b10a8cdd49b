"""Calls on a mount's worker with a deadline: one stuck call per mount at most."""

from __future__ import annotations

import errno
import io
import os
import threading
import time
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


def _mountinfo(tmp_path: Path, *mounts: tuple[str, str]) -> Path:
    table = tmp_path / f"mountinfo-{'-'.join(t for _p, t in mounts)}"
    table.write_text("".join(f"{20 + i} 1 0:{i} / {point} rw,relatime - {fstype} src rw\n"
                             for i, (point, fstype) in enumerate(mounts)))
    return table


def test_only_known_local_filesystems_are_called_directly(tmp_path: Path) -> None:
    from sttwatch.mounts import MountTable

    table = MountTable(_mountinfo(tmp_path, ("/", "ext4"), ("/mnt/nas", "nfs4"),
                                  ("/mnt/nas/disk", "xfs"), ("/mnt/ssh", "fuse.sshfs"),
                                  ("/mnt/odd", "newfs"), ("/ram", "tmpfs"),
                                  ("/mnt/ntfs", "fuseblk")))
    assert table.local(Path("/home/a.mp3")) and table.local(Path("/ram/x/a.mp3"))
    assert table.local(Path("/"))
    for share in ("/mnt/nas/a.mp3", "/mnt/ssh/a.mp3", "/mnt/odd/a.mp3", "/mnt/ntfs/a.mp3",
                  "/mnt/nas", "/mnt/nas/disk/a.mp3"):  # the last: reached through the share
        assert not table.local(Path(share)), share
    assert table.lookup(Path("/mnt/nas/disk/a")) is not None
    assert str(table.lookup(Path("/mnt/nas/x")).point) == "/mnt/nas"  # type: ignore[union-attr]
    unknown = MountTable(tmp_path / "no-such-table")
    assert not unknown.local(Path("/home/a.mp3")) and unknown.lookup(Path("/home")) is None


def test_a_call_runs_on_the_worker_unless_its_folder_is_known_local(tmp_path: Path) -> None:
    from sttwatch.config import AUDIO_PATTERNS, WatchConfig
    from sttwatch.mounts import MountTable
    from sttwatch.watcher import Watcher

    (tmp_path / "a.mp3").write_bytes(b"x")
    cfg = WatchConfig(path=tmp_path, recursive=True, patterns=AUDIO_PATTERNS, ignore=(),
                      settle_seconds=None, polling=False, model=None, options=None,
                      formats=None, backend=None)
    me = threading.get_ident()
    for table, here in ((MountTable(_mountinfo(tmp_path, ("/", "ext4"))), True),
                        (MountTable(_mountinfo(tmp_path, ("/", "newfs"))), False),
                        (MountTable(tmp_path / "no-such-table"), False)):
        w = Watcher([cfg], 0.2, time.time, mounts=table)
        assert w.watch_states() == {str(tmp_path): True}
        assert (w.call(tmp_path / "a.mp3", threading.get_ident) == me) is here
        with w.open(tmp_path / "a.mp3") as f:
            assert f.read() == b"x" and isinstance(f, io.BufferedReader) is here


def test_the_mount_table_is_read_again_only_when_asked_or_changed(tmp_path: Path) -> None:
    from sttwatch.mounts import MountTable

    info = _mountinfo(tmp_path, ("/", "ext4"))
    table = MountTable(info)  # a plain file: never flagged as changed, as a kernel would
    assert table.local(Path("/mnt/nas/a.mp3"))
    info.write_text(info.read_text() + "30 1 0:9 / /mnt/nas rw - nfs4 srv:/x rw\n")
    assert table.local(Path("/mnt/nas/a.mp3"))  # cached: no read per question
    table.read_again()
    assert not table.local(Path("/mnt/nas/a.mp3"))
