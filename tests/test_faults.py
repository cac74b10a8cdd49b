"""The faults of a field report, each driven through a real daemon: a key that comes back,
a name too long for the filesystem, a broken state file, a full disk under the state file.
Each test fails on the behaviour reported and passes now."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import FAST_BEAT, KEY, run_cli, tmpfs_at, transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio

from sttwatch.exitcodes import ExitCode
from sttwatch.store.sql import SCHEMA_VERSION

PROBE = 1.0  # api.probe_seconds in these tests (its least)


@pytest.mark.solo  # resumes within a bound of wall time
@pytest.mark.parametrize("arrivals", [4, 0], ids=["creates-waiting", "polls-only"])
def test_a_key_that_comes_back_resumes_within_one_probe_and_polls_wait(
        tmp_path: Path, fake: FakeService, daemon_factory, arrivals: int) -> None:  # type: ignore[no-untyped-def]
    """Finding 2: every rejected request doubled the pause, so 20 s of 401 parked 16 jobs
    in flight for minutes. Now one pause per outage, one probe per interval, polls wait."""
    fake.update(task_seconds=3.0)
    cfg = write_config(tmp_path, fake.base_url,
                       api={"max_in_flight": 16, "probe_seconds": PROBE})
    texts = {tmp_path / "inbox" / f"rec{i:02}.mp3": f"recording {i}" for i in range(16)}
    for path, text in texts.items():
        make_fake_audio(path, text)
    d = daemon_factory(cfg).start()
    wait_for(lambda: sum(fake.creates_by_text().values()) == 16, timeout=60)

    # The key is revoked with 16 jobs in flight; more files may arrive meanwhile.
    fake.update(key="sk-revoked-000000000000000000")
    later = {tmp_path / "inbox" / f"new{i}.mp3": f"arrived later {i}" for i in range(arrivals)}
    for path, text in later.items():
        make_fake_audio(path, text)
    texts.update(later)

    def rejected() -> list[float]:
        return [r.time for r in fake.records if r.status_code == 401]

    # Three probes fail after the first rejection; then the key is accepted again.
    wait_for(lambda: len(rejected()) >= 1, timeout=30)
    first = rejected()[0]
    wait_for(lambda: any(t > first + 2.5 * PROBE for t in rejected()), timeout=30)
    fake.update(key=KEY)
    back = time.monotonic()
    paused = rejected()

    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()), timeout=PROBE + 20)
    assert d.stop() == 0
    resumed = min(r.time for r in fake.records if r.time >= back and r.status_code < 300)
    print(f"\narrivals {arrivals}: pause {paused[-1] - first:.1f} s, {len(paused)} rejected "
          f"requests; resumed {resumed - back:.2f} s after the key came back, done "
          f"{max(r.time for r in fake.records) - back:.1f} s after (probe every {PROBE:g} s)")
    assert resumed - back <= PROBE + 2.0
    # One probe per interval, plus the fetches already under way (4 poll workers).
    assert len(paused) <= (paused[-1] - first) / PROBE + 1 + 4
    events = [e["event"] for e in d.events()]
    assert events.count("api_key_rejected") == 1 and events.count("api_key_accepted") == 1
    assert fake.creates_by_text() == {t: 1 for t in texts.values()}  # none twice


@pytest.mark.parametrize("size,formats", [(250, ["txt", "srt"]), (255, ["txt", "json"])])
def test_a_long_name_is_written_under_a_shortened_name_and_once_ends(
        tmp_path: Path, fake: FakeService, size: int, formats: list[str]) -> None:
    """Finding 5: a 250-byte name failed every write (the temp name adds 14 bytes) and was
    retried forever, so ``run --once`` never ended. A 255-byte ``x.mp3`` makes a 256-byte
    ``x.json``: that one must be shortened (extension kept, a hash of the full name added)."""
    cfg = write_config(tmp_path, fake.base_url, output={"formats": formats})
    inbox = tmp_path / "inbox"
    long = inbox / ("é" * 60 + "x" * (size - 124) + ".mp3")
    assert len(long.name.encode()) == size
    make_fake_audio(long, "a very long name")
    make_fake_audio(inbox / "short.mp3", "a short name")

    r = run_cli("run", "--config", str(cfg), "--once")

    assert r.code in (ExitCode.OK, ExitCode.FAILED), r.err[-2000:]
    assert transcript(inbox / "short.mp3") == "a short name"
    outputs = {p.suffix: p for p in inbox.iterdir()
               if p != long and not p.name.startswith("short.")}
    assert all(len(p.name.encode()) <= 255 for p in outputs.values())
    if r.code == ExitCode.OK:
        assert sorted(outputs) == sorted(f".{f}" for f in formats), list(outputs)
        assert outputs[".txt"].read_text().strip() == "a very long name"
        assert all("a very long name" in p.read_text() for p in outputs.values())
        assert size < 255 or "~" in outputs[".json"].name  # 256 bytes: shortened
    else:  # or failed, with its reason in a sidecar the filesystem can hold
        assert any(p.name.endswith(".sttwatch-error.json") for p in outputs.values())
    assert list(inbox.glob(".*.tmp")) == []


def _real_state_file(tmp_path: Path, fake: FakeService) -> tuple[Path, Path]:
    """A config and the state file a real run left behind (40 jobs with their results)."""
    cfg = write_config(tmp_path, fake.base_url)
    for i in range(40):
        make_fake_audio(tmp_path / "inbox" / f"old{i:02}.mp3", f"an older recording {i} " * 20)
    assert run_cli("run", "--config", str(cfg), "--once").code == ExitCode.OK
    return cfg, tmp_path / "state" / "sttwatch.db"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_state_file_stops_with_one_message_and_state_reset_is_the_way_out(
        tmp_path: Path, fake: FakeService, daemon_factory, damage: str) -> None:  # type: ignore[no-untyped-def]
    """Finding 6: a damaged state file was a raw sqlite3 traceback naming neither the file nor
    a way out, and exit 1 restarted the unit every 5 s forever."""
    cfg, db = _real_state_file(tmp_path, fake)
    data = db.read_bytes()
    db.write_bytes(b"this is not a database\n" * 200 if damage == "garbage"
                   else data[:len(data) // 2])
    broken = db.read_bytes()

    d = daemon_factory(cfg).start()
    assert d.proc is not None and d.proc.wait(30) == ExitCode.CONFIG == 2  # no restart loop
    said = [line for line in d.log.read_text().splitlines() if line.strip()]
    assert len(said) == 1 and "Traceback" not in said[0], said
    assert str(db) in said[0] and "sttwatch state reset" in said[0]

    check = run_cli("state", "check", "--config", str(cfg))
    assert check.code == ExitCode.CONFIG and "DAMAGED" in check.out
    assert "sttwatch state reset" in check.out

    reset = run_cli("state", "reset", "--config", str(cfg))
    assert reset.code == ExitCode.OK, reset.err
    aside = [p for p in db.parent.iterdir() if p.name.startswith(f"{db.name}.broken-")]
    assert [p.read_bytes() for p in aside if p.name.endswith("Z")] == [broken]  # kept
    assert f"-> {aside[0]}" in reset.out and not db.exists()

    # The next start makes a new file, sends nothing again, and takes a new recording.
    creates = sum(fake.creates_by_text().values())
    make_fake_audio(tmp_path / "inbox" / "new.mp3", "after the reset")
    assert run_cli("run", "--config", str(cfg), "--once").code == ExitCode.OK
    assert transcript(tmp_path / "inbox" / "new.mp3") == "after the reset"
    assert sum(fake.creates_by_text().values()) == creates + 1
    assert run_cli("state", "check", "--config", str(cfg)).code == ExitCode.OK


def test_state_check_and_reset_leave_a_sound_or_busy_file_alone(
        tmp_path: Path, fake: FakeService, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg, db = _real_state_file(tmp_path, fake)
    check = run_cli("state", "check", "--config", str(cfg))
    assert check.code == ExitCode.OK
    assert f"sound (schema version {SCHEMA_VERSION}, 40 jobs)" in check.out
    assert "integrity: ok" in check.out
    refused = run_cli("state", "reset", "--config", str(cfg))
    assert refused.code == ExitCode.CONFIG and "--force" in refused.err and db.exists()

    d = daemon_factory(cfg).start()
    d.wait_started()
    busy = run_cli("state", "reset", "--force", "--config", str(cfg))
    assert busy.code == ExitCode.CONFIG and "in use by a running daemon" in busy.err
    assert db.exists()
    assert d.stop() == 0
    forced = run_cli("state", "reset", "--force", "--config", str(cfg))
    assert forced.code == ExitCode.OK and not db.exists()


def test_state_check_reports_a_postgresql_store_and_its_schema_version(
        tmp_path: Path) -> None:
    from stores import PG_URL, new_schema, pg_url_with_schema, require_pg

    from sttwatch.store.postgres import PostgresStore
    require_pg()
    schema = new_schema()
    PostgresStore(PG_URL, schema=schema).close()
    try:
        cfg = write_config(tmp_path)
        raw = yaml.safe_load(cfg.read_text())
        cfg.write_text(yaml.safe_dump({**raw, "state": {"url": pg_url_with_schema(schema)}}))
        check = run_cli("state", "check", "--config", str(cfg))
        assert check.code == ExitCode.OK, check.err
        assert f"sound (schema version {SCHEMA_VERSION}, 0 jobs)" in check.out
        assert "shared PostgreSQL store is not reset" in run_cli(
            "state", "reset", "--config", str(cfg)).err
    finally:
        store = PostgresStore(PG_URL, schema=schema)
        store.drop_schema()
        store.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs for the state file: a disk that fills up for real."""
    with tmpfs_at(tmp_path / "statefs", "16m") as at:
        yield at


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_under_the_state_file_pauses_work_and_it_resumes(
        tmp_path: Path, fake: FakeService, small_disk: Path, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    """Finding 7: a full filesystem under the state file killed the daemon (exit 1 from the
    heartbeat's write, and again in shutdown). Now it waits, says so once, and goes on."""
    cfg = write_config(tmp_path, fake.base_url, state={"path": str(small_disk / "s.db")})
    inbox = tmp_path / "inbox"
    texts = {inbox / f"before{i}.mp3": f"before the disk filled {i}" for i in range(5)}
    for path, text in texts.items():
        make_fake_audio(path, text)
    d = daemon_factory(cfg, env=FAST_BEAT).start()  # a heartbeat every 0.5 s
    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()))

    def said(event: str) -> int:
        return sum(e["event"] == event for e in d.events())

    filler = fill(small_disk)
    more = {inbox / f"full{i}.mp3": f"while the disk was full {i}" for i in range(10)}
    for path, text in more.items():
        make_fake_audio(path, text)
    texts.update(more)
    wait_for(lambda: said("store_unavailable") >= 1)
    # The experiment: the disk stays full past heartbeats (three of them), whose write
    # used to end the daemon.
    time.sleep(1.5)
    assert d.proc is not None and d.proc.poll() is None  # still running
    assert said("store_unavailable") == 1  # said once, not per failed write
    filler.unlink()
    freed = time.monotonic()
    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()), timeout=60)
    print(f"\nfull disk: all written {time.monotonic() - freed:.1f} s after space was freed")
    wait_for(lambda: said("store_back") == 1)

    # Full again, and SIGTERM meanwhile: it still says 'stopped' and exits 0.
    filler = fill(small_disk)
    last = {inbox / f"last{i}.mp3": f"the last ones {i}" for i in range(5)}
    for path, text in last.items():
        make_fake_audio(path, text)
    texts.update(last)
    wait_for(lambda: said("store_unavailable") >= 2)
    assert d.stop() == 0
    assert said("stopped") == 1
    filler.unlink()
    again = daemon_factory(cfg).start()
    wait_for(lambda: all(transcript(p) == t for p, t in texts.items()), timeout=60)
    assert again.stop() == 0
    assert fake.creates_by_text() == {t: 1 for t in texts.values()}
