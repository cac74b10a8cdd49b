"""Edge cases found in review, each driven through the real daemon and the fake service."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, transcript, wait_for, write_config
from fake_service import MAGIC, FakeService, make_fake_audio

from sttwatch.watcher import CLOSE_QUIET


def test_undecodable_file_name_is_skipped_and_the_rest_goes_on(tmp_path: Path,
                                                               fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    inbox = tmp_path / "inbox"
    with open(os.path.join(os.fsencode(inbox), b"caf\xe9.mp3"), "wb") as fh:
        fh.write(MAGIC + b"latin-1 name")
    good = make_fake_audio(inbox / "good.mp3", "good name")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0, r.err
    assert transcript(good) == "good name"
    bad = [e for e in r.events() if e["event"] == "unsupported_file_name"]
    assert len(bad) == 1 and "caf" in bad[0]["path"] and "UTF-8" in bad[0]["fix"]


def test_same_stem_file_arriving_later_is_still_transcribed(tmp_path: Path,
                                                            fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    make_fake_audio(tmp_path / "inbox" / "talk.mp3", "the mp3 recording")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    wav = make_fake_audio(tmp_path / "outside" / "talk.wav", "the wav recording")
    old = time.time() - 3600  # moved in with its old mtime, older than talk.txt
    os.utime(wav, (old, old))
    os.rename(wav, tmp_path / "inbox" / "talk.wav")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert (tmp_path / "inbox" / "talk.txt").read_text().strip() == "the mp3 recording"
    assert (tmp_path / "inbox" / "talk.wav.txt").read_text().strip() == "the wav recording"


def test_reused_name_with_on_done_move_keeps_earlier_transcript(tmp_path: Path,
                                                                fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url,
                       output={"on_done": "move", "done_dir": "./done"})
    make_fake_audio(tmp_path / "inbox" / "Recording.m4a", "monday meeting")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    make_fake_audio(tmp_path / "inbox" / "Recording.m4a", "tuesday meeting")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    texts = sorted(p.read_text().strip() for p in (tmp_path / "inbox").glob("*.txt"))
    assert texts == ["monday meeting", "tuesday meeting"]
    assert len(list((tmp_path / "done").iterdir())) == 2


def test_a_file_rewritten_while_in_flight_is_not_deleted(tmp_path: Path, fake: FakeService,
                                                         daemon_factory) -> None:  # type: ignore[no-untyped-def]
    fake.update(task_seconds=1.5)
    cfg = write_config(tmp_path, fake.base_url, output={"on_done": "delete"},
                       daemon={"settle_seconds": 5})
    src = make_fake_audio(tmp_path / "inbox" / "take.mp3", "first take")
    os.utime(src, (time.time() - 60, time.time() - 60))  # there before the start: taken at once
    d = daemon_factory(cfg).start()
    wait_for(lambda: any(e["event"] == "submitted" for e in d.events()), timeout=20)
    with src.open("wb") as fh:  # the second take is still being written when the first is done
        fh.write(MAGIC + b"second")
        fh.flush()
        # After the first take is done the daemon decides about the source: wait for that.
        tidy = ("source_changed_not_disposed", "source_disposed")
        wait_for(lambda: any(e["event"] in tidy for e in d.events()), timeout=20)
        assert src.exists(), "the recording being written was disposed of"
        fh.write(b" take")
    wait_for(lambda: not src.exists(), timeout=30)  # the second take, once done, goes
    # Sources leave the folder, so names come back: the earlier transcript is kept.
    assert transcript(src) == "first take"
    assert (src.parent / "take.mp3.txt").read_text().strip() == "second take"
    assert d.stop() == 0
    assert any(e["event"] == "source_changed_not_disposed" for e in d.events())


def test_fetch_errors_past_the_deadline_end_the_job(tmp_path: Path, fake: FakeService) -> None:
    fake.update(fail_next_fetches_5xx=10_000)
    cfg = write_config(tmp_path, fake.base_url, api={"retries": 1},
                       daemon={"job_timeout_seconds": 1, "max_attempts": 1})
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "never answered")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 1
    failed = [e for e in r.events() if e["event"] == "failed"]
    assert failed and "no answer after" in failed[0]["reason"]


def test_creates_with_unknown_outcome_count_as_attempts(tmp_path: Path,
                                                        fake: FakeService) -> None:
    held = threading.Event()  # the create stays unanswered until released below
    fake.update(hold_creates=held)
    cfg = write_config(tmp_path, fake.base_url, api={"read_timeout": 0.2},
                       daemon={"max_attempts": 1})
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "slow service")
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 1
    assert [e["event"] for e in r.events()].count("create_outcome_unknown") == 1
    failed = next(e for e in r.events() if e["event"] == "failed")
    assert "the task may exist" in failed["reason"] and "after 1 attempts" in failed["reason"]
    assert fake.arrived() == 1
    held.set()
    wait_for(fake.all_answered, timeout=10)
    assert len(fake.creates()) == 1  # never sent blindly again


def test_key_with_invisible_characters_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = run_cli("run", "--config", str(cfg), "--once",
                env={"STTWATCH_TEST_KEY": "sk-abc\u200bdef0123456789"})
    assert r.code == 2
    assert "api.api_key_env" in r.err and "cannot be sent in an HTTP header" in r.err
    assert "sk-abc" not in r.err


@pytest.mark.solo  # the writer's pauses are wall time
def test_appending_writer_is_taken_once(tmp_path: Path, fake: FakeService,
                                        daemon_factory) -> None:  # type: ignore[no-untyped-def]
    """A writer appends in open/write/close rounds with pauses shorter than the quiet spell
    after a close. The pauses are the scenario, not a synchronisation: each round is timed,
    and when a stall of the machine made two rounds ``CLOSE_QUIET`` apart (the daemon may
    then rightly take the file in between), the scenario is played again on a new file."""
    cfg = write_config(tmp_path, fake.base_url, daemon={"settle_seconds": 3})
    d = daemon_factory(cfg).start()
    d.wait_started()
    for attempt in range(3):
        target = tmp_path / "inbox" / f"log{attempt}.mp3"
        chunks = [f"take{attempt}chunk{i}" for i in range(1, 6)]
        whole = " ".join(chunks)
        previous = time.monotonic()
        target.write_bytes(MAGIC + chunks[0].encode())
        apart = 0.0  # the most two rounds' writes can have been apart
        for chunk in chunks[1:]:
            time.sleep(0.4)  # the writer's pause (the daemon looks every 0.1 s)
            began = time.monotonic()
            with target.open("ab") as fh:
                fh.write(f" {chunk}".encode())
            apart = max(apart, time.monotonic() - previous)
            previous = began
        wait_for(lambda t=target: transcript(t) is not None, timeout=20)
        if apart < CLOSE_QUIET:
            assert transcript(target) == whole
            ours = {t: n for t, n in fake.creates_by_text(accepted_only=False).items()
                    if t and t.startswith(f"take{attempt}")}
            assert ours == {whole: 1}, ours
            break
    else:
        pytest.skip("the machine stalled for a second during every try: nothing was tested")
    assert d.stop() == 0


def test_reload_to_an_unusable_folder_is_refused(tmp_path: Path, fake: FakeService,
                                                 daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, fake.base_url)
    d = daemon_factory(cfg).start()
    d.wait_started()
    (tmp_path / "afile").write_text("not a folder")
    raw = yaml.safe_load(cfg.read_text())
    raw["watch"].append({"path": "./afile/sub"})
    cfg.write_text(yaml.safe_dump(raw))
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "reload_refused" for e in d.events()), timeout=10)
    make_fake_audio(tmp_path / "inbox" / "still.mp3", "still watching")
    wait_for(lambda: transcript(tmp_path / "inbox" / "still.mp3") == "still watching")
    assert d.stop() == 0


def test_half_written_temp_files_from_a_kill_are_swept(tmp_path: Path,
                                                       fake: FakeService) -> None:
    cfg = write_config(tmp_path, fake.base_url)
    inbox = tmp_path / "inbox"
    old = time.time() - 3600
    leftover = inbox / ".talk.txt.k3j_9x2a.tmp"
    young = inbox / ".memo.srt.abcdefgh.tmp"
    users = inbox / ".notes.tmp"  # not ours: never touched
    below = inbox / "2026" / ".tapes" / ".call.json.0a1b2c3d.tmp"  # any depth, hidden too
    below.parent.mkdir(parents=True)
    for p in (leftover, young, users, below):
        p.write_text("partial")
    for p in (leftover, users, below):
        os.utime(p, (old, old))
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0
    assert not leftover.exists() and not below.exists()
    assert young.exists() and users.exists()
    assert any(e["event"] == "leftover_removed" for e in r.events())


def test_a_failed_transcript_write_keeps_the_result_and_retries(
        tmp_path: Path, fake: FakeService, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    cfg = write_config(tmp_path, fake.base_url, output={"dir": "./blocker/out"})
    make_fake_audio(tmp_path / "inbox" / "a.mp3", "paid for once")
    d = daemon_factory(cfg).start()
    wait_for(lambda: any(e["event"] == "write_failed" for e in d.events()), timeout=20)
    blocker.unlink()
    out = tmp_path / "blocker" / "out" / "a.txt"
    wait_for(out.exists, timeout=30)
    assert out.read_text().strip() == "paid for once"
    assert d.stop() == 0
    assert len(fake.creates()) == 1  # the stored result was written, not bought again
