"""Network shares, on a real SSHFS mount served by a private sshd (tests/share.py)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_BEAT, KEY, Daemon, run_cli, transcript, wait_for, write_config
from fake_service import FakeConfig, FakeService, make_fake_audio
from share import SshfsShare

from sttwatch.mounts import Mount, mount_of, parse_mountinfo

# Hung FUSE mounts and bounds on wall time: alone under pytest-xdist (tests/conftest.py).
pytestmark = pytest.mark.solo


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


def _share_config(tmp_path: Path, share: SshfsShare, fake: FakeService, *extra: Path,
                  **sections: Any) -> Path:
    watches = [{"path": str(share.mount)}, *({"path": str(p)} for p in extra)]
    return write_config(tmp_path, fake.base_url, watch=watches, **sections)


def test_a_share_is_polled_without_a_setting_and_says_so(
        tmp_path: Path, share: SshfsShare, fake: FakeService,
        daemon_factory: Callable[..., Daemon]) -> None:
    cfg = _share_config(tmp_path, share, fake)
    d = daemon_factory(cfg, env=FAST_BEAT).start()
    d.wait_started()
    wait_for(lambda: any(e["event"] == "watch_polled" for e in d.events()), 20)
    files = [share.served / f"rec{i}.mp3" for i in range(5)]
    for i, f in enumerate(files):
        make_fake_audio(f, f"share file {i}")  # written on the server, as another host does
    wait_for(lambda: all(transcript(f) == f"share file {i}" for i, f in enumerate(files)), 60)
    polled = [e for e in d.events() if e["event"] == "watch_polled"]
    assert len(polled) == 1 and polled[0]["fstype"] == "fuse.sshfs"
    # ``status`` reads the heartbeat, written once a beat: the note is there within one.
    wait_for(lambda: f"watch {share.mount}: polled" in run_cli("status", "--config",
                                                                 str(cfg)).out, 30)
    r = run_cli("status", "--config", str(cfg))
    assert r.code == 0 and f"watch {share.mount}: polled" in r.out, r.out
    assert d.stop() == 0
    assert len(fake.creates()) == 5
    assert [line for line in d.log.read_text().splitlines() if not line.startswith("{")] == []


def test_the_mount_table_names_a_shares_filesystem(share: SshfsShare) -> None:
    found = mount_of(share.mount / "sub" / "deeper")
    assert found is not None and found.point == share.mount and found.network
    assert found.fstype == "fuse.sshfs"
    local = mount_of(share.served)
    assert local is not None and not local.network
    line = r"36 35 98:0 /x /mnt/my\040nas rw,noatime shared:1 master:2 - nfs4 srv:/x rw"
    assert parse_mountinfo(line) == [Mount(Path("/mnt/my nas"), "nfs4")]


def _counts(cfg: Path) -> dict[str, int]:
    r = run_cli("status", "--config", str(cfg), "--json")
    assert r.code == 0, r.err
    return dict(json.loads(r.out)["counts"])


def test_a_dead_share_makes_jobs_wait_and_they_finish_when_it_is_back(
        tmp_path: Path, share: SshfsShare, daemon_factory: Callable[..., Daemon]) -> None:
    with FakeService(FakeConfig(key=KEY, task_seconds=2.0)) as fake:
        cfg = _share_config(tmp_path, share, fake, api={
            "base_url": fake.base_url, "api_key_env": "STTWATCH_TEST_KEY", "retries": 3,
            "connect_timeout": 2, "read_timeout": 10, "max_in_flight": 2})
        d = daemon_factory(cfg).start()
        d.wait_started()
        wait_for(lambda: any(e["event"] == "watch_polled" for e in d.events()), 20)
        files = [share.served / f"rec{i}.mp3" for i in range(8)]
        for i, f in enumerate(files):
            make_fake_audio(f, f"dead share file {i}")
        wait_for(lambda: len(fake.creates()) >= 2, 60)  # two in flight, the rest queued
        share.kill()  # the connection dies; the mount stays (ENOTCONN)
        wait_for(lambda: any(e["event"] == "watch_offline" for e in d.events()), 20)
        # The two in flight finish at the service and are fetched; their transcripts wait.
        wait_for(lambda: _counts(cfg).get("fetched", 0) >= 1, 60)
        counts = _counts(cfg)
        assert counts.get("failed", 0) == 0 and counts.get("seen", 0) >= 1, counts
        share.connect()
        wait_for(lambda: all(transcript(f) == f"dead share file {i}"
                             for i, f in enumerate(files)), 90)
        assert d.stop() == 0
    events = d.events()
    assert [e for e in events if e["event"] == "failed"] == []
    assert _counts(cfg).get("failed", 0) == 0
    texts = fake.creates_by_text()
    assert sorted(texts) == sorted(f"dead share file {i}" for i in range(8))
    # A create cut off by the failure may be the one duplicate we accept; no more.
    assert sum(texts.values()) <= 9, texts
    assert any(e["event"] == "watch_online" for e in events[events.index(
        next(e for e in events if e["event"] == "watch_offline")):])
    assert [line for line in d.log.read_text().splitlines() if not line.startswith("{")] == []


class Pings:
    """A stand-in for systemd's notify socket: records when each WATCHDOG=1 arrives."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.times: list[float] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in msg:
                self.times.append(time.monotonic())

    def longest_gap(self, since: float) -> float:
        stamps = [since] + [t for t in self.times if t >= since] + [time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(stamps))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _files_open_under(d: Daemon, folder: Path) -> list[str]:
    """What the daemon has open below ``folder`` (from /proc, as root)."""
    assert d.proc is not None
    fds = Path(f"/proc/{d.proc.pid}/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target == str(folder) or target.startswith(f"{folder}/"):
            found.append(target)
    return found


def _hung(d: Daemon) -> bool:
    return any(e["event"] == "watch_offline" and "hung" in e.get("reason", "")
               for e in d.events())


def test_a_hung_share_never_stops_the_daemon(
        tmp_path: Path, share: SshfsShare, fake: FakeService,
        daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    cfg = _share_config(tmp_path, share, fake, inbox,
                        daemon={"settle_seconds": 0.5, "rescan_seconds": 30,
                                "first_poll_seconds": 0.2, "poll_cap_seconds": 2,
                                "share_deadline_seconds": 2})
    pings = Pings(tmp_path / "n.sock")
    try:
        d = daemon_factory(cfg, env={"NOTIFY_SOCKET": pings.path,
                                     "WATCHDOG_USEC": "10000000"}).start()
        d.wait_started()
        before = make_fake_audio(share.served / "before.mp3", "before the hang")
        wait_for(lambda: transcript(before) == "before the hang", 60)
        share.hang()
        hung_at = time.monotonic()
        wait_for(lambda: _hung(d), 30)
        # A local folder keeps working while the share hangs.
        local = [make_fake_audio(inbox / f"local{i}.mp3", f"local file {i}") for i in range(2)]
        during = make_fake_audio(share.served / "during.mp3", "written during the hang")
        wait_for(lambda: all(transcript(p) == f"local file {i}" for i, p in enumerate(local)),
                 60)
        # status answers from the store, and says the share is hung.
        answer: list[Any] = []
        asker = threading.Thread(target=lambda: answer.append(
            run_cli("status", "--config", str(cfg))), daemon=True)
        asker.start()
        asker.join(10)
        assert answer, "status did not answer within 10 s during the hang"
        assert answer[0].code == 0 and "hung" in answer[0].out, answer[0].out
        # systemd's watchdog (WatchdogSec=10 s here) would not have killed it.
        assert pings.longest_gap(hung_at) < 10.0, pings.times
        assert len([e for e in d.events() if e["event"] == "watch_offline"]) == 1
        share.resume()
        wait_for(lambda: transcript(during) == "written during the hang", 60)
        assert d.stop() == 0
    finally:
        share.resume()
        pings.close()
    assert [e for e in d.events() if e["event"] == "failed"] == []
    assert sorted(fake.creates_by_text()) == sorted(
        ["before the hang", "local file 0", "local file 1", "written during the hang"])


def test_sigterm_during_a_hang_exits_in_time(
        tmp_path: Path, share: SshfsShare, fake: FakeService,
        daemon_factory: Callable[..., Daemon]) -> None:
    cfg = _share_config(tmp_path, share, fake,
                        daemon={"settle_seconds": 0.5, "share_deadline_seconds": 2})
    d = daemon_factory(cfg).start()
    d.wait_started()
    queued = make_fake_audio(share.served / "queued.mp3", "queued")
    wait_for(lambda: transcript(queued) == "queued", 60)
    # The hang comes once the daemon has no file open on the share: a process that holds
    # one cannot exit until the share answers (the kernel's close of a FUSE file waits for
    # the file server, uninterruptibly), whatever the process does; that is the unit's
    # SIGKILL and a stuck D state, not a stop in time, and the daemon cannot prevent it.
    wait_for(lambda: any(e["event"] == "done" for e in d.events()), 30)
    wait_for(lambda: not _files_open_under(d, share.mount), 30)
    share.hang()
    try:
        wait_for(lambda: _hung(d), 30)
        assert d.stop(timeout=30) == 0  # the unit's TimeoutStopSec is larger
    finally:
        share.resume()
