"""Network shares, on a real SSHFS mount served by a private sshd (tests/share.py)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from conftest import wait_for
from share import SshfsShare


def test_the_share_sees_the_servers_files_and_fails_like_a_dead_nas(share: SshfsShare) -> None:
    (share.served / "a.mp3").write_bytes(b"x" * 10)
    wait_for(lambda: (share.mount / "a.mp3").exists(), 10)
    assert os.stat(share.mount / "a.mp3").st_size == 10
    share.kill()
    for call in (lambda: os.listdir(share.mount), lambda: (share.mount / "a.mp3").read_bytes()):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.ENOTCONN
    share.connect()
    assert os.stat(share.mount / "a.mp3").st_size == 10


def test_a_stopped_sshfs_hangs_calls_until_it_goes_on(share: SshfsShare) -> None:
    (share.served / "b.mp3").write_bytes(b"y")
    wait_for(lambda: (share.mount / "b.mp3").exists(), 10)
    share.hang()
    done = threading.Event()

    def look() -> None:
        os.listdir(share.mount)
        done.set()

    threading.Thread(target=look, daemon=True).start()
    assert not done.wait(1.0)  # blocked, not failed
    share.resume()
    assert done.wait(15)


def test_teardown_clears_a_hung_mount(tmp_path: Path) -> None:
    from share import require_share, sshfs_share
    require_share()
    with sshfs_share(tmp_path / "s") as s:
        s.hang()
    assert str(s.mount) not in Path("/proc/self/mountinfo").read_text()
    assert s.sshd is None and s.sshfs is None
