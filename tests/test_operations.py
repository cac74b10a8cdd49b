"""Running it as a service: the notify protocol on a real datagram socket, SIGHUP reload,
and the operator commands (status, retry, forget, check) against a live daemon."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import yaml
from conftest import FAST_BEAT, KEY, run_cli, transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio

from sttwatch.check import mount_fstype


class NotifySocket:
    """Stands in for systemd: collects what the daemon sends to $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def has(self, key: str, value: str | None = None) -> bool:
        return any(key in m and (value is None or m[key] == value) for m in self.drain())


def test_notify_protocol_ready_status_watchdog_stopping(tmp_path: Path, fake: FakeService,
                                                        daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, fake.base_url)
    sd = NotifySocket(tmp_path / "notify.sock")
    d = daemon_factory(cfg, env={"NOTIFY_SOCKET": str(sd.path),
                                 "WATCHDOG_USEC": "1000000"}).start()
    wait_for(lambda: sd.has("READY", "1"), timeout=20)
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "notify me")
    wait_for(lambda: transcript(tmp_path / "inbox" / "a.mp3") is not None)
    # It keeps pinging the watchdog (the interval, half of WATCHDOG_USEC: test_notify.py).
    wait_for(lambda: sum("WATCHDOG" in m for m in sd.drain()) >= 3, timeout=20)
    wait_for(lambda: any("1 done" in m.get("STATUS", "") for m in sd.drain()), timeout=10)

    d.signal(signal.SIGHUP)
    wait_for(lambda: sd.has("RELOADING", "1"), timeout=5)
    reloading = next(m for m in sd.messages if "RELOADING" in m)
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert d.stop() == 0
    assert sd.has("STOPPING", "1")
    # READY must come before the first WATCHDOG and STOPPING last of the lifecycle messages.
    order = [k for m in sd.messages for k in m if k in ("READY", "STOPPING")]
    assert order[0] == "READY" and order[-1] == "STOPPING"


def test_sighup_adds_a_watch_folder_and_refuses_a_broken_config(
        tmp_path: Path, fake: FakeService, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, fake.base_url)
    d = daemon_factory(cfg).start()
    d.wait_started()
    make_fake_audio(tmp_path / "inbox" / "before.mp3", "before reload")
    wait_for(lambda: transcript(tmp_path / "inbox" / "before.mp3") is not None)

    raw = yaml.safe_load(cfg.read_text())
    raw["watch"].append({"path": "./second", "formats": ["txt", "srt"]})
    (tmp_path / "second").mkdir()
    cfg.write_text(yaml.safe_dump(raw))
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "reloaded" for e in d.events()), timeout=10)
    make_fake_audio(tmp_path / "second" / "new.mp3", "after reload")
    wait_for(lambda: transcript(tmp_path / "second" / "new.mp3", "srt") is not None)
    assert transcript(tmp_path / "second" / "new.mp3") == "after reload"

    cfg.write_text(cfg.read_text() + "\nbogus_key: 1\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "reload_refused" for e in d.events()), timeout=10)
    refused = next(e for e in d.events() if e["event"] == "reload_refused")
    assert "bogus_key" in refused["reason"] and str(cfg) in refused["reason"]
    make_fake_audio(tmp_path / "second" / "still.mp3", "old config still runs")
    wait_for(lambda: transcript(tmp_path / "second" / "still.mp3") == "old config still runs")
    assert d.stop() == 0


def test_status_shows_a_live_daemon_waiting_on_a_rejected_key(
        tmp_path: Path, fake: FakeService, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "queued behind a bad key")
    d = daemon_factory(cfg, env={**FAST_BEAT,
                                 "STTWATCH_TEST_KEY": "sk-revoked-key-000000000000"}).start()
    wait_for(lambda: any(e["event"] == "api_key_rejected" for e in d.events()), timeout=20)

    def status() -> dict[str, object]:
        return json.loads(run_cli("status", "--config", str(cfg), "--json").out)

    def rejected() -> bool:
        daemons = status()["daemons"]
        assert isinstance(daemons, list)
        return len(daemons) == 1 and bool(daemons[0].get("auth_rejected"))

    wait_for(rejected, timeout=10)
    info = status()
    assert info["counts"]["seen"] == 1  # type: ignore[index]
    text = run_cli("status", "--config", str(cfg)).out
    assert ": running (pid" in text and "refused the API key" in text
    assert "sk-revoked" not in text
    assert d.stop() == 0
    assert "daemon: not running" in run_cli("status", "--config", str(cfg)).out


def test_retry_and_forget_while_the_daemon_runs(tmp_path: Path, fake: FakeService,
                                                daemon_factory) -> None:  # type: ignore[no-untyped-def]
    fake.update(fail_texts={"broken"})
    cfg = write_config(tmp_path, fake.base_url)
    bad = make_fake_audio(tmp_path / "inbox" / "bad.mp3", "broken once")
    d = daemon_factory(cfg).start()
    wait_for(lambda: any(e["event"] == "failed" for e in d.events()), timeout=20)
    fake.update(fail_texts=set())
    r = run_cli("retry", "--config", str(cfg), str(bad))
    assert r.code == 0 and "retry: 1 file" in r.out
    wait_for(lambda: transcript(bad) == "broken once", timeout=20)

    r = run_cli("forget", "--config", str(cfg), str(bad))
    assert r.code == 0 and "forget: 1 file" in r.out
    assert run_cli("forget", "--config", str(cfg), str(tmp_path / "nope.mp3")).code == 1
    assert d.stop() == 0


def test_check_all_good_then_every_problem_on_its_own_line(tmp_path: Path,
                                                           fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    r = run_cli("check", "--config", str(cfg))
    assert r.code == 0, r.out
    assert "API key set" in r.out and "accepts the key" in r.out and r.out.endswith("all good\n")
    assert KEY not in r.out

    cfg = write_config(tmp_path, fake.base_url, watch=[{"path": "./missing"}])
    r = run_cli("check", "--config", str(cfg), env={"STTWATCH_TEST_KEY": "sk-bad-000000000"})
    assert r.code == 1
    problems = [line for line in r.out.splitlines() if line.startswith("problem:")]
    assert any("refused the API key" in p and "fix:" in p for p in problems)
    assert any("missing does not exist" in p and "mkdir -p" in p for p in problems)
    assert r.out.endswith("2 problem(s)\n")

    r = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert r.code == 2 and "nope.yaml" in r.err


def test_network_filesystems_are_recognised() -> None:
    mounts = ("/dev/vda / ext4 rw 0 0\nserver:/export /srv/rec nfs4 rw 0 0\n"
              "//nas/share /mnt/nas cifs rw 0 0\n")
    assert mount_fstype(Path("/srv/rec/talks"), mounts) == "nfs4"
    assert mount_fstype(Path("/mnt/nas"), mounts) == "cifs"
    assert mount_fstype(Path("/srv/record"), mounts) == "ext4"
