"""The daemon end to end against the fake service: real folders, real files, real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from conftest import KEY, run_cli, transcript, wait_for, write_config
from fake_service import FakeService, make_fake_audio


def test_once_writes_each_transcript_beside_its_source(tmp_path: Path,
                                                       fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    inbox = tmp_path / "inbox"
    files = {inbox / "a.mp3": "alpha one", inbox / "sub" / "b.wav": "bravo two",
             inbox / "sub" / "deep" / "c.m4a": "charlie three"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_fake_audio(path, text)
    # Never input: hidden, temp and download names, our outputs, non-audio extensions.
    for name in (".hidden.mp3", "d.mp3.part", "e.wav.crdownload", "f.mp3~", ".g.mp3.Ab12Cd",
                 "notes.txt", "h.tmp", "image.png"):
        make_fake_audio(inbox / name, "ignored")

    r = run_cli("run", "--config", str(cfg), "--once")

    assert r.code == 0, r.err
    for path, text in files.items():
        assert transcript(path) == text
    assert sorted(fake.creates_by_text().elements()) == sorted(files.values())
    assert all(c.headers["authorization"] == f"Bearer {KEY}" for c in fake.creates())
    assert KEY not in r.err
    leftovers = [p.name for p in inbox.rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_second_run_submits_nothing_and_changed_file_is_redone(tmp_path: Path,
                                                               fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    a = make_fake_audio(tmp_path / "inbox" / "a.mp3", "first version")
    make_fake_audio(tmp_path / "inbox" / "b.mp3", "stays the same")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert len(fake.creates()) == 2

    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert len(fake.creates()) == 2  # nothing new

    make_fake_audio(a, "second version, longer")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert transcript(a) == "second version, longer"
    assert len(fake.creates()) == 3


def test_up_to_date_transcript_is_not_submitted_again(tmp_path: Path,
                                                      fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    a = make_fake_audio(tmp_path / "inbox" / "a.mp3", "the service would say this")
    old = time.time() - 100
    os.utime(a, (old, old))
    a.with_suffix(".txt").write_text("made by an earlier install\n")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0
    assert fake.creates() == []
    assert transcript(a) == "made by an earlier install"


def test_empty_and_undecodable_files_fail_with_reason_others_finish(
        tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    inbox = tmp_path / "inbox"
    (inbox / "empty.mp3").write_bytes(b"")
    (inbox / "noise.wav").write_bytes(b"this is not audio at all")
    good = make_fake_audio(inbox / "good.mp3", "good file")

    r = run_cli("run", "--config", str(cfg), "--once")

    assert r.code == 1
    assert transcript(good) == "good file"
    st = run_cli("status", "--config", str(cfg), "--json")
    failures = {Path(f["path"]).name: f["reason"] for f in json.loads(st.out)[
        "recent_failures"]}
    assert "empty file" in failures["empty.mp3"]
    assert "Unsupported audio format" in failures["noise.wav"]
    assert not (inbox / "noise.txt").exists()


def test_service_faults_still_end_with_every_transcript(tmp_path: Path,
                                                        fake: FakeService) -> None:
    fake.update(dialect=2, fail_next_creates_5xx=2, fail_next_fetches_5xx=3,
                fail_next_creates_429=2, retry_after=0.3, forget_ids_once=2,
                concurrency=3)
    cfg = write_config(tmp_path, fake.base_url)
    texts = [f"file number {i}" for i in range(12)]
    for i, text in enumerate(texts):
        make_fake_audio(tmp_path / "inbox" / f"f{i:02}.mp3", text)

    r = run_cli("run", "--config", str(cfg), "--once")

    assert r.code == 0, r.err
    for i, text in enumerate(texts):
        assert transcript(tmp_path / "inbox" / f"f{i:02}.mp3") == text
    events = [e["event"] for e in r.events()]
    assert "rate_limited" in events
    assert "resubmitting" in events  # the two forgotten ids were submitted again
    accepted = fake.creates_by_text()
    assert sum(accepted.values()) == len(texts) + 2


def test_failed_task_is_failed_with_the_service_reason(tmp_path: Path,
                                                       fake: FakeService) -> None:
    fake.update(fail_texts={"explode"})
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(tmp_path / "inbox" / "bad.mp3", "please explode now")
    make_fake_audio(tmp_path / "inbox" / "ok.mp3", "fine")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 1
    failed = [e for e in r.events() if e["event"] == "failed"]
    assert len(failed) == 1 and "Generation failed: explode" in failed[0]["reason"]
    assert transcript(tmp_path / "inbox" / "ok.mp3") == "fine"


def test_rejected_key_pauses_and_keeps_jobs_queued(tmp_path: Path, fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    a = make_fake_audio(tmp_path / "inbox" / "a.mp3", "wait for a good key")
    wrong = "sk-wrong-key-abcdefghijklmnop"

    r = run_cli("run", "--config", str(cfg), "--once", env={"STTWATCH_TEST_KEY": wrong})

    assert r.code == 3
    rejected = [e for e in r.events() if e["event"] == "api_key_rejected"]
    assert rejected and rejected[0]["status"] == 401 and "paused" in rejected[0]["action"]
    assert wrong not in r.err
    st = run_cli("status", "--config", str(cfg), "--json")
    counts = json.loads(st.out)["counts"]
    assert counts["seen"] == 1 and counts["failed"] == 0  # still queued, not failed

    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert transcript(a) == "wait for a good key"


def test_key_never_reaches_logs_or_state_file(tmp_path: Path, fake: FakeService) -> None:
    fake.update(fail_next_creates_5xx=1)
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "secret keeping")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0
    assert KEY not in r.err and KEY not in r.out
    for f in (tmp_path / "state").iterdir():
        assert KEY.encode() not in f.read_bytes()
    assert KEY not in (tmp_path / "inbox" / "a.txt").read_text()


def test_missing_key_for_aimlapi_is_a_clear_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == 2
    assert "STTWATCH_TEST_KEY" in r.err and "needs an API key" in r.err


def test_running_daemon_takes_copies_renames_and_slow_writes(tmp_path: Path, fake: FakeService,
                                                             daemon_factory) -> None:  # type: ignore[no-untyped-def]
    # The slow writer pauses 0.15 s between writes without closing: a settle time far above
    # that, so that only a stall of seconds could make the daemon take it half-written.
    cfg = write_config(tmp_path, fake.base_url, daemon={"settle_seconds": 5})
    inbox = tmp_path / "inbox"
    outside = tmp_path / "outside"
    outside.mkdir()
    d = daemon_factory(cfg).start()
    d.wait_started()

    src = make_fake_audio(outside / "copied.mp3", "copied in")
    shutil.copy(src, inbox / "copied.mp3")
    make_fake_audio(outside / "renamed.wav", "renamed in from outside")
    os.rename(outside / "renamed.wav", inbox / "renamed.wav")
    make_fake_audio(inbox / "download.mp3.part", "finished download")
    os.rename(inbox / "download.mp3.part", inbox / "download.mp3")
    (inbox / "sub").mkdir()
    make_fake_audio(outside / "dir-moved.m4a", "moved with its folder")
    (outside / "folder").mkdir()
    os.rename(outside / "dir-moved.m4a", outside / "folder" / "dir-moved.m4a")
    os.rename(outside / "folder", inbox / "sub" / "folder")
    with (inbox / "slow.mp3").open("wb") as fh:  # one writer, pauses shorter than settle
        payload = b"FAKEAUDIO\nwritten slowly in chunks"
        for i in range(0, len(payload), 6):
            fh.write(payload[i:i + 6])
            fh.flush()
            time.sleep(0.15)

    expect = {inbox / "copied.mp3": "copied in", inbox / "renamed.wav": "renamed in from outside",
              inbox / "download.mp3": "finished download",
              inbox / "sub" / "folder" / "dir-moved.m4a": "moved with its folder",
              inbox / "slow.mp3": "written slowly in chunks"}
    wait_for(lambda: all(transcript(p) == t for p, t in expect.items()), timeout=30)
    assert d.stop() == 0
    counts = fake.creates_by_text()
    assert all(counts[t] == 1 for t in expect.values()), counts
    assert "finished download" in counts and len(counts) == len(expect)
    assert any(e["event"] == "stopped" for e in d.events())


def test_sigterm_drains_and_restart_polls_pending_ids(tmp_path: Path, fake: FakeService,
                                                      daemon_factory) -> None:  # type: ignore[no-untyped-def]
    fake.update(task_seconds=3600)  # the service will not finish while the daemon runs
    cfg = write_config(tmp_path, fake.base_url)
    for i in range(5):
        make_fake_audio(tmp_path / "inbox" / f"t{i}.mp3", f"takes a while {i}")
    d = daemon_factory(cfg).start()
    wait_for(lambda: len(fake.creates()) == 5, timeout=20)
    assert d.stop() == 0  # it does not wait for the service (stop() gives up after 20 s)
    counts = json.loads(run_cli("status", "--config", str(cfg), "--json").out)["counts"]
    assert counts["pending"] == 5

    fake.finish_running()
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0
    assert len(fake.creates()) == 5  # the pending ids were polled, not submitted again
    for i in range(5):
        assert transcript(tmp_path / "inbox" / f"t{i}.mp3") == f"takes a while {i}"


def test_sigint_stops_the_daemon_cleanly(tmp_path: Path, fake: FakeService,
                                         daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, fake.base_url)
    d = daemon_factory(cfg).start()
    d.wait_started()
    d.signal(signal.SIGINT)
    assert d.proc is not None
    assert d.proc.wait(20) == 0  # on its own: stop() would send a SIGTERM as well
    assert any(e["event"] == "stopped" for e in d.events())
