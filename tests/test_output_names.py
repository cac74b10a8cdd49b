"""Every recording gets its own transcript, and nothing is paid for twice: output names are
owned by one source each (numbered when the usual two are taken), a transcript sttwatch did
not write is never replaced, and a result is reused only for the very same request. Real
daemons against the fake service."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, wait_for, write_config
from fake_service import FakeService, make_fake_audio


def text_of(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def test_a_file_found_transcribed_keeps_its_transcript_from_a_later_same_stem_file(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_fake_audio(inbox / "talk.mp3", "the talk transcribed long ago")
    (inbox / "talk.txt").write_text("the talk, transcribed before\n")
    st = (inbox / "talk.mp3").stat()
    os.utime(inbox / "talk.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    d = daemon_factory(write_config(tmp_path, fake.base_url)).start()
    wait_for(lambda: any(e["event"] == "already_transcribed" for e in d.events()))
    make_fake_audio(inbox / "talk.wav", "the talk as a wav")
    wait_for(lambda: text_of(inbox / "talk.wav.txt") == "the talk as a wav")
    assert text_of(inbox / "talk.txt") == "the talk, transcribed before"
    assert d.stop() == 0
    assert list(fake.creates_by_text()) == ["the talk as a wav"]


def test_three_same_stem_recordings_get_three_transcripts(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    d = daemon_factory(write_config(tmp_path, fake.base_url)).start()
    d.wait_started()
    make_fake_audio(inbox / "talk.wav.mp3", "first the wav mp3")
    wait_for(lambda: text_of(inbox / "talk.wav.txt") == "first the wav mp3")
    make_fake_audio(inbox / "talk.mp3", "then the mp3")
    wait_for(lambda: text_of(inbox / "talk.txt") == "then the mp3")
    make_fake_audio(inbox / "talk.wav", "last the wav")
    # talk.txt and talk.wav.txt are both another's: the third takes the first numbered name.
    wait_for(lambda: text_of(inbox / "talk.wav.2.txt") == "last the wav")
    assert text_of(inbox / "talk.wav.txt") == "first the wav mp3"
    assert text_of(inbox / "talk.txt") == "then the mp3"
    assert d.stop() == 0
    taken = [e for e in d.events() if e["event"] == "output_name_taken"]
    assert [e["path"] for e in taken] == [str(inbox / "talk.wav")]


def test_a_transcript_sttwatch_did_not_write_is_never_replaced(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "notes.txt").write_text("my own notes, typed by hand\n")
    make_fake_audio(inbox / "notes.mp3", "the recorded notes")  # newer than notes.txt
    d = daemon_factory(write_config(tmp_path, fake.base_url)).start()
    wait_for(lambda: text_of(inbox / "notes.mp3.txt") == "the recorded notes")
    assert text_of(inbox / "notes.txt") == "my own notes, typed by hand"
    assert d.stop() == 0
    said = [e for e in d.events() if e["event"] == "output_name_in_use"]
    assert said and said[0]["path"] == str(inbox / "notes.mp3")


def test_the_same_bytes_under_other_options_are_sent_again(
        tmp_path: Path, fake: FakeService, daemon_factory: Callable[..., Daemon]) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "en").mkdir(parents=True)
    (inbox / "fr").mkdir()
    cfg = write_config(tmp_path, fake.base_url, output={"formats": ["txt", "json"]},
                       watch=[{"path": "./inbox/en"},
                              {"path": "./inbox/fr", "options": {"language": "fr"}}])
    d = daemon_factory(cfg).start()
    d.wait_started()
    make_fake_audio(inbox / "en" / "talk.mp3", "one recording in two folders")
    wait_for(lambda: text_of(inbox / "en" / "talk.txt") == "one recording in two folders")
    (inbox / "fr" / "talk.mp3").write_bytes((inbox / "en" / "talk.mp3").read_bytes())
    wait_for(lambda: (inbox / "fr" / "talk.json").exists())
    # An identical request is still answered from the paid result.
    (inbox / "en" / "copy.mp3").write_bytes((inbox / "en" / "talk.mp3").read_bytes())
    wait_for(lambda: (inbox / "en" / "copy.json").exists())
    assert d.stop() == 0
    creates = fake.creates()
    assert len(creates) == 2
    assert sorted(str(c.fields.get("language")) for c in creates) == ["None", "fr"]

    def language(path: Path) -> str:
        doc = json.loads(path.read_text())
        return str(doc["transcript"]["language"])
    assert language(inbox / "fr" / "talk.json") == "fr"
    assert language(inbox / "en" / "talk.json") == "en"
    assert language(inbox / "en" / "copy.json") == "en"
