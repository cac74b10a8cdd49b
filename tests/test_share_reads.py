"""A share that hangs or dies in the middle of a read or a write (the hash, the upload, the
transcript write, the on_done move), on a real SSHFS mount (tests/share.py): the thread that
was reading gets ``ShareHung`` within the deadline, the job waits, and the rest goes on."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import KEY, Daemon, transcript, wait_for, write_config
from fake_service import MAGIC, FakeConfig, FakeService, make_fake_audio
from share import SshfsShare

from sttwatch.fsgate import FsGate, ShareHung
from sttwatch.identity import sha256_of
from sttwatch.offline import unreachable
from sttwatch.sharefile import ShareFile

pytestmark = pytest.mark.solo  # hangs a FUSE mount against a deadline

BIG = 40 << 20  # more than the socket buffers hold: an upload of it still reads the share


def _big_fake_audio(path: Path, text: str) -> Path:
    """A fake recording of BIG bytes whose transcript is ``text`` (the padding is blanks,
    which the fake service strips), written beside ``path`` and renamed into place: a slow
    write must not be taken half-done (settle_seconds is short here)."""
    head = MAGIC + text.encode() + b"\n"
    part = path.with_name(f".{path.name}.part")
    with part.open("wb") as fh:
        fh.write(head)
        left = BIG - len(head)
        while left > 0:
            fh.write(b" " * min(left, 1 << 20))
            left -= 1 << 20
    part.rename(path)
    return path


def test_a_hang_mid_hash_raises_within_the_deadline(share: SshfsShare) -> None:
    (share.served / "big.mp3").write_bytes(b"a" * (3 << 20))
    wait_for(lambda: (share.mount / "big.mp3").exists(), 10)
    gate = FsGate(deadline=1.0)
    key = str(share.mount)
    blocks: list[int] = []

    def opener(path: Path) -> Any:
        f = ShareFile(gate, key, path)
        read = f.read

        def first_then_hang(size: int | None = -1) -> bytes:
            data = read(size)
            blocks.append(len(data))
            if len(blocks) == 1:
                share.hang()  # the share stops answering between two blocks of the hash
            return data

        f.read = first_then_hang  # type: ignore[method-assign]
        return f

    try:
        with pytest.raises(ShareHung) as caught:
            sha256_of(share.mount / "big.mp3", opener)
        assert unreachable(caught.value) and gate.stuck(key)
        assert blocks[0] == 1 << 20  # it was mid-file, not at the open
        assert gate.call("/", lambda: 7) == 7  # other mounts go on
    finally:
        share.resume()
    wait_for(lambda: not gate.stuck(key), 15)
    assert sha256_of(share.mount / "big.mp3", lambda p: ShareFile(gate, key, p)) == \
        hashlib.sha256(b"a" * (3 << 20)).hexdigest()


def _flow_config(tmp_path: Path, fake: FakeService, watches: list[Path],
                 **sections: Any) -> Path:
    return write_config(
        tmp_path, fake.base_url, watch=[{"path": str(p)} for p in watches],
        api={"base_url": fake.base_url, "api_key_env": "STTWATCH_TEST_KEY", "retries": 3,
             "connect_timeout": 2, "read_timeout": 20, "upload": "as_is"},
        daemon={"settle_seconds": 0.5, "rescan_seconds": 30, "first_poll_seconds": 0.2,
                "poll_cap_seconds": 1, "share_deadline_seconds": 2}, **sections)


def _no_failures(d: Daemon) -> None:
    assert [e for e in d.events() if e["event"] == "failed"] == []
    assert [line for line in d.log.read_text().splitlines() if not line.startswith("{")] == []


def test_a_hang_mid_upload_makes_the_job_wait_and_local_work_go_on(
        tmp_path: Path, share: SshfsShare, daemon_factory: Callable[..., Daemon]) -> None:
    release = threading.Event()
    inbox = tmp_path / "inbox"
    service = FakeConfig(key=KEY, task_seconds=0.3, hold_body=release)
    with FakeService(service) as fake:
        cfg = _flow_config(tmp_path, fake, [share.mount, inbox])
        d = daemon_factory(cfg).start()
        d.wait_started()
        big = _big_fake_audio(share.served / "big.mp3", "big share file")
        try:
            # The service has the head of the body and reads no more: the upload is mid-file.
            assert service.body_held.wait(60), "the upload never started"
            share.hang()
            release.set()  # the rest of the body now has to come from the hung share
            wait_for(lambda: any(e["event"] == "source_offline" for e in d.events()), 30)
            # The submitter thread was not held: a local file is transcribed meanwhile.
            local = make_fake_audio(inbox / "local.mp3", "local during the hang")
            wait_for(lambda: transcript(local) == "local during the hang", 30)
            assert transcript(big) is None
        finally:
            share.resume()
        wait_for(lambda: transcript(big) == "big share file", 60)
        assert d.stop() == 0
    _no_failures(d)
    offline = next(e for e in d.events() if e["event"] == "source_offline")
    assert offline["path"] == str(share.mount / "big.mp3")
    # The cut-off upload made no task (the service never had the whole body): one create
    # each, the one we accept at most never needed.
    texts = fake.creates_by_text(accepted_only=False)
    assert texts["big share file"] == 1 and texts["local during the hang"] == 1, texts


def test_a_hang_during_the_transcript_write_leaves_no_partial_file(
        tmp_path: Path, share: SshfsShare, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    hold = threading.Event()
    with FakeService(FakeConfig(key=KEY, task_seconds=0.1, hold_creates=hold)) as fake:
        cfg = _flow_config(tmp_path, fake, [inbox], output={"dir": str(share.mount / "out")})
        d = daemon_factory(cfg).start()
        d.wait_started()
        make_fake_audio(inbox / "talk.mp3", "written to a share")
        out = share.served / "out" / "talk.txt"  # looked at on the server: never hangs
        wait_for(lambda: fake.arrived() >= 1, 30)
        share.hang()  # the result comes while the output share hangs
        try:
            hold.set()
            wait_for(lambda: any(e["event"] == "write_offline" for e in d.events()), 30)
            # Nothing stands under the transcript's name, torn or whole.
            assert not out.exists()
        finally:
            share.resume()
        wait_for(lambda: out.exists() and out.read_text().strip() == "written to a share", 60)
        wait_for(lambda: any(e["event"] == "done" for e in d.events()), 30)
        assert d.stop() == 0
    _no_failures(d)
    assert sorted(p.name for p in out.parent.iterdir()) == ["talk.txt"]  # no temp file left
    assert len(fake.creates()) == 1


def test_on_done_move_onto_a_dead_share_happens_when_it_is_back(
        tmp_path: Path, share: SshfsShare, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    hold = threading.Event()
    with FakeService(FakeConfig(key=KEY, task_seconds=0.1, hold_creates=hold)) as fake:
        cfg = _flow_config(tmp_path, fake, [inbox],
                           output={"on_done": "move", "done_dir": str(share.mount / "done")})
        d = daemon_factory(cfg).start()
        d.wait_started()
        src = make_fake_audio(inbox / "memo.mp3", "moved later")
        wait_for(lambda: fake.arrived() >= 1, 30)
        share.kill()  # the done folder's share dies (ENOTCONN) before the job ends
        hold.set()
        wait_for(lambda: any(e["event"] == "on_done_deferred" for e in d.events()), 30)
        assert transcript(src) == "moved later" and src.exists()
        share.connect()
        moved = share.served / "done" / "memo.mp3"
        wait_for(lambda: moved.exists() and not src.exists(), 30)
        assert moved.read_bytes().endswith(b"moved later")
        assert d.stop() == 0
    _no_failures(d)
    assert [e["action"] for e in d.events() if e["event"] == "source_disposed"] == ["move"]


def test_a_scan_of_an_unpolled_share_that_hangs_never_holds_the_caller(
        share: SshfsShare) -> None:
    from sttwatch.config import AUDIO_PATTERNS, WatchConfig
    from sttwatch.watcher import Watcher

    (share.served / "sub").mkdir()
    (share.served / "sub" / "a.mp3").write_bytes(b"x")
    cfg = WatchConfig(path=share.mount, recursive=True, patterns=AUDIO_PATTERNS, ignore=(),
                      settle_seconds=None, polling=False, model=None, options=None,
                      formats=None, backend=None)
    w = Watcher([cfg], 0.2, time.time, gate=FsGate(deadline=1.0))
    w.start()  # polling: false, as the config says: scanned, no poller
    try:
        assert w.scan() == 1 and w.watch_states() == {str(share.mount): True}
        share.hang()
        done: list[int] = []
        scanner = threading.Thread(target=lambda: done.append(w.scan()), daemon=True)
        scanner.start()
        scanner.join(15)  # the scan's first folder call waits one deadline, then gives up
        assert done == [0], "the scan was held by the hung share"
        assert w.watch_states() == {str(share.mount): False}
        assert "hung" in w.watch_notes()[str(share.mount)]
    finally:
        share.resume()
        w.stop()


def test_local_calls_run_here_and_a_share_mounted_over_a_folder_goes_to_its_worker(
        tmp_path: Path) -> None:
    """A real tmpfs and a real SSHFS mount: calls on a local folder are made on the calling
    thread (no handoff), calls on the share on its mount's worker, and a folder a share is
    mounted over goes to the worker with the very next call, before the watcher's check."""
    import io
    import subprocess

    from share import SshfsShare, require_share

    from sttwatch.config import AUDIO_PATTERNS, WatchConfig
    from sttwatch.watcher import Watcher

    require_share()  # root, as the tmpfs mount needs too
    ram, share = tmp_path / "ram", SshfsShare(tmp_path / "share")
    ram.mkdir()
    share.mount.mkdir(parents=True)  # an empty local folder until the share is mounted
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "sttwatch-test", str(ram)],
                   check=True)
    try:
        (ram / "a.mp3").write_bytes(b"ram")
        cfgs = [WatchConfig(path=p, recursive=True, patterns=AUDIO_PATTERNS, ignore=(),
                            settle_seconds=None, polling=False, model=None, options=None,
                            formats=None, backend=None) for p in (ram, share.mount)]
        w = Watcher(cfgs, 0.2, time.time, gate=FsGate(deadline=5.0))
        assert set(w.watch_states().values()) == {True}

        def on(path: Path) -> str:
            return w.call(path, lambda: threading.current_thread().name)

        here = threading.current_thread().name
        assert on(ram / "a.mp3") == here and on(share.mount / "a.mp3") == here
        with w.open(ram / "a.mp3") as f:
            assert isinstance(f, io.BufferedReader) and f.read() == b"ram"
        share.start()
        try:
            (share.served / "b.mp3").write_bytes(b"share")
            # On a worker at once: the one of the mount the folder was on, until the
            # watcher's next check sees the remount.
            assert on(share.mount / "b.mp3").startswith("fs ")
            with w.open(share.mount / "b.mp3") as f:
                assert isinstance(f, ShareFile) and f.read() == b"share"
            assert on(ram / "a.mp3") == here  # the other watch stays local
            w.healthy()  # the watcher sees the remount: the share's own mount point now
            assert w.watch_states() == {str(ram): True, str(share.mount): True}
            assert on(share.mount / "b.mp3") == f"fs {share.mount}"
        finally:
            share.stop()
        w.healthy()  # unmounted: offline, and an offline watch keeps the worker
        assert w.watch_states()[str(share.mount)] is False
        assert on(share.mount / "b.mp3").startswith("fs ")
    finally:
        subprocess.run(["umount", "-l", str(ram)], check=False)
