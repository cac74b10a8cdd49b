"""Video libraries: the upload carries the speech (one audio track, the folder's language),
not the film; films already subtitled and recordings without speech are not paid for.

Real films are made with ffmpeg and espeak-ng at test time; the fake service keeps every
upload so that ffprobe can say what was sent."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiwer
import pytest
from conftest import KEY, run_cli, write_config
from fake_service import FakeConfig, FakeService
from media import (
    audio_bytes,
    duration,
    faint_noise,
    film,
    long_quiet_film,
    packet_sizes,
    quieter,
    speak,
    speak_fr,
    srt_file,
    streams,
)
from speech import ALSA, PARAGRAPH, SENTENCES

pytest.importorskip("av", reason="PyAV comes with sttwatch[local]")
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "espeak-ng", "sox")),
    reason="needs ffmpeg, espeak-ng and sox (scripts/test.sh installs them)")

FRENCH = "Bonjour à tous. Ceci est la piste française du film, elle ne doit pas être envoyée."


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """``transcribe`` sets the log level to warning for the whole process: later tests that
    capture info events must not inherit it."""
    import structlog
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("voices")
    return {"en": speak(PARAGRAPH, d / "en.wav"), "short": speak(SENTENCES[0], d / "s.wav"),
            "fr": speak_fr(FRENCH, d / "fr.wav")}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[FakeService]:
    kept = tmp_path / "uploads"
    kept.mkdir()
    with FakeService(FakeConfig(key=KEY, task_seconds=0.05, speech_text=PARAGRAPH,
                                keep_uploads=kept)) as service:
        yield service


def library(tmp_path: Path, base_url: str, **watch: Any) -> Path:
    return write_config(tmp_path, base_url, watch=[{
        "path": "./inbox", "options": {"language": "en"},
        "formats": ["txt", "srt", "vtt", "json"], **watch}])


def status(cfg: Path) -> dict[str, Any]:
    r = run_cli("status", "--config", str(cfg), "--json")
    assert r.code == 0, r.err
    return dict(json.loads(r.out))


def notes(cfg: Path) -> dict[str, str]:
    return {Path(n["path"]).name: n["note"] for n in status(cfg)["recent_notes"]}


def once(cfg: Path) -> None:
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code == 0, r.err[-3000:]


def sent(svc: FakeService) -> dict[str, Path]:
    """What each accepted create carried, by the name the upload went under."""
    return {Path(c.filename or "").stem: c.upload for c in svc.creates()
            if c.status_code < 300 and c.upload is not None}


def test_a_film_is_sent_as_its_audio_track_in_the_folders_language(
        tmp_path: Path, svc: FakeService, voices: dict[str, Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    one = film(inbox / "talk.mkv", [(voices["en"], "eng")], seconds=30)
    # French first and flagged default; English second: the folder asks for English.
    two = film(inbox / "dubbed.mkv", [(voices["fr"], "fra"), (voices["short"], "eng")],
               seconds=12, size="640x360", default=0)
    cfg = library(tmp_path, svc.base_url)
    once(cfg)

    uploads = sent(svc)
    assert set(uploads) == {"talk", "dubbed"} and len(svc.creates()) == 2
    for name, source in (("talk", one), ("dubbed", two)):
        got = streams(uploads[name])
        assert [s["codec_type"] for s in got] == ["audio"], got  # no video, one track
        assert got[0]["codec_name"] == "aac"  # copied, not re-encoded
        assert abs(duration(uploads[name]) - duration(source)) < 0.5
    # At most twice the bytes of the film's own audio (the goal), and far from the film.
    assert uploads["talk"].stat().st_size <= 2 * audio_bytes(one)
    assert uploads["talk"].stat().st_size * 5 < one.stat().st_size
    # The English track of the two went, packet for packet; and the fake heard its speech
    # where that track speaks, which ends in the first ~3 s (the French one is longer).
    assert packet_sizes(uploads["dubbed"]) == packet_sizes(two, "a:1") != packet_sizes(two)
    en_record = next(c for c in svc.creates() if (c.filename or "").startswith("dubbed"))
    assert en_record.filename == "dubbed.m4a"
    doc = json.loads((inbox / "dubbed.json").read_text())
    assert doc["sttwatch"]["audio_stream"] == {"index": 2, "language": "eng"}
    words = doc["result"]["results"]["channels"][0]["alternatives"][0]["words"]
    assert words and words[-1]["end"] < 3.5, words[-1]
    assert (inbox / "talk.txt").read_text().strip()


def test_upload_as_is_sends_the_film_unchanged(tmp_path: Path, svc: FakeService,
                                               voices: dict[str, Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    one = film(inbox / "talk.mkv", [(voices["short"], "eng")], seconds=5, size="320x240")
    cfg = write_config(tmp_path, svc.base_url, api={"upload": "as_is"})
    once(cfg)
    (upload,) = sent(svc).values()
    assert upload.read_bytes() == one.read_bytes()


def test_films_already_subtitled_are_not_sent(tmp_path: Path, svc: FakeService,
                                              voices: dict[str, Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sub = srt_file(tmp_path / "sub.srt")
    film(inbox / "embedded.mkv", [(voices["short"], "eng")], seconds=4, size="320x240",
         subtitles=[(sub, "eng")])
    film(inbox / "beside.mkv", [(voices["short"], "eng")], seconds=4, size="320x240")
    srt_file(inbox / "beside.en.srt")
    # Subtitles in another language do not count for an English folder.
    film(inbox / "german.mkv", [(voices["short"], "eng")], seconds=4, size="320x240",
         subtitles=[(sub, "ger")])
    cfg = library(tmp_path, svc.base_url, skip_subtitled=True)
    once(cfg)

    assert set(sent(svc)) == {"german"} and len(svc.creates()) == 1
    got = notes(cfg)
    assert got["embedded.mkv"] == "already subtitled (embedded subtitle stream 2 (eng))"
    assert got["beside.mkv"] == "already subtitled (beside.en.srt)"
    assert "german.mkv" not in got
    assert status(cfg)["counts"].get("done") == 3
    for stem in ("embedded", "beside"):
        assert not list(inbox.glob(f"{stem}.txt")) and not list(inbox.glob(f"{stem}.json"))
    text = run_cli("status", "--config", str(cfg)).out
    assert "beside.mkv: already subtitled (beside.en.srt)" in text
    # A copy of it without the sidecar has no subtitles: it is sent, not taken for the same.
    (inbox / "copy").mkdir()
    shutil.copy(inbox / "beside.mkv", inbox / "copy" / "beside.mkv")
    once(cfg)
    assert len(svc.creates()) == 2 and (inbox / "copy" / "beside.txt").read_text().strip()


def test_a_sidecar_arriving_after_the_video_but_before_its_create_counts(
        tmp_path: Path, svc: FakeService, voices: dict[str, Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    film(inbox / "late.mkv", [(voices["short"], "eng")], seconds=4, size="320x240")
    # First run: the service is unreachable, so the film is admitted and waits.
    down = write_config(tmp_path, "http://127.0.0.1:9/v1", api={"retries": 1},
                        daemon={"once_timeout": 1}, watch=[{
                            "path": "./inbox", "options": {"language": "en"},
                            "skip_subtitled": True}])
    assert run_cli("run", "--config", str(down), "--once").code == 5
    assert status(down)["counts"].get("seen") == 1
    srt_file(inbox / "late.srt")  # no language in the name: it counts for any
    cfg = library(tmp_path, svc.base_url, skip_subtitled=True)
    once(cfg)
    assert svc.creates() == []
    assert notes(cfg) == {"late.mkv": "already subtitled (late.srt)"}


def test_without_skip_subtitled_a_subtitled_film_is_sent(tmp_path: Path, svc: FakeService,
                                                         voices: dict[str, Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    film(inbox / "beside.mkv", [(voices["short"], "eng")], seconds=4, size="320x240")
    srt_file(inbox / "beside.en.srt")
    once(library(tmp_path, svc.base_url))
    assert set(sent(svc)) == {"beside"}


def test_no_speech_is_not_billed_and_ends_with_empty_transcripts(
        tmp_path: Path, svc: FakeService, voices: dict[str, Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    faint_noise(inbox / "room.wav")
    # Real speech, even quiet, is still sent: espeak-ng at a low volume and a human voice.
    quieter(voices["short"], inbox / "whisper.wav", 0.02)
    shutil.copy(ALSA / "Front_Center.wav", inbox / "human.wav")
    cfg = library(tmp_path, svc.base_url)
    once(cfg)

    assert sorted(sent(svc)) == ["human", "whisper"] and len(svc.creates()) == 2
    assert notes(cfg) == {"room.wav": "no speech"}
    assert (inbox / "room.txt").read_text() == ""
    for fmt in ("srt", "vtt"):
        body = (inbox / f"room.{fmt}").read_text()
        assert "-->" not in body, body
    doc = json.loads((inbox / "room.json").read_text())
    assert doc["result"]["metadata"]["no_speech"] is True
    assert doc["result"]["results"]["channels"][0]["alternatives"][0]["transcript"] == ""


def test_each_recording_is_probed_once_for_the_screen_the_upload_and_the_header(
        tmp_path: Path, svc: FakeService, voices: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both screens, the upload's track and the json header's take one probe per file
    (media.Probes): a film was opened four times with skip_subtitled, a recording three."""
    from collections import Counter

    from sttwatch.backends import local, media, shrink

    probed: Counter[str] = Counter()
    real = media.probe

    def counting(path: Path, opener: Any = None) -> media.MediaInfo | None:
        probed[Path(path).name] += 1
        return real(path, opener)

    for module in (media, shrink, local):
        monkeypatch.setattr(module, "probe", counting)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    film(inbox / "dubbed.mkv", [(voices["fr"], "fra"), (voices["short"], "eng")],
         seconds=6, size="320x240", default=0)
    film(inbox / "beside.mkv", [(voices["short"], "eng")], seconds=4, size="320x240")
    srt_file(inbox / "beside.en.srt")
    faint_noise(inbox / "room.wav", seconds=10)
    shutil.copy(voices["short"], inbox / "talk.wav")
    cfg = library(tmp_path, svc.base_url, skip_subtitled=True)
    once(cfg)

    assert probed == {"dubbed.mkv": 1, "beside.mkv": 1, "room.wav": 1, "talk.wav": 1}
    assert sorted(sent(svc)) == ["dubbed", "talk"]
    assert notes(cfg) == {"beside.mkv": "already subtitled (beside.en.srt)",
                          "room.wav": "no speech"}
    assert packet_sizes(sent(svc)["dubbed"]) == packet_sizes(inbox / "dubbed.mkv", "a:1")
    doc = json.loads((inbox / "dubbed.json").read_text())
    assert doc["sttwatch"]["audio_stream"] == {"index": 2, "language": "eng"}
    assert "audio_stream" not in json.loads((inbox / "talk.json").read_text())["sttwatch"]
    assert json.loads((inbox / "room.json").read_text())["result"]["metadata"]["no_speech"]


def test_skip_no_speech_false_sends_everything(tmp_path: Path, svc: FakeService) -> None:
    (tmp_path / "inbox").mkdir()
    faint_noise(tmp_path / "inbox" / "room.wav")
    cfg = write_config(tmp_path, svc.base_url, api={"skip_no_speech": False})
    r = run_cli("run", "--config", str(cfg), "--once")
    assert r.code in (0, 1), r.err[-2000:]  # the fake hears nothing it knows: its verdict
    assert len(svc.creates()) == 1
    assert "room.wav" not in notes(cfg)


def test_the_local_engine_skips_the_model_for_no_speech(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    (tmp_path / "inbox").mkdir()
    faint_noise(tmp_path / "inbox" / "room.wav", seconds=20)
    cfg = write_config(tmp_path, backend="local", watch=[
        {"path": "./inbox", "formats": ["txt", "json"]}])
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == 0, r.err[-2000:]
    assert notes(cfg) == {"room.wav": "no speech"}
    assert (tmp_path / "inbox" / "room.txt").read_text() == ""
    assert not any(e["event"] == "submitted" for e in r.events())


CHILD = """
import resource, sys
from pathlib import Path
from sttwatch.backends.shrink import prepared
from sttwatch.screen import hears_speech
path = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
heard = hears_speech(path, "en")
with prepared(path, mode="audio", trim=False, min_silence=3.0, language="en") as up:
    size = up.path.stat().st_size
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT", heard, size, (after - before) // 1024)
"""


def _checked_and_copied(path: Path) -> tuple[str, int, int]:
    """In a child process: the no-speech check, then the copy; (heard, bytes, MB of RSS
    the two added)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    _, heard, sent, grew = next(line for line in out if line.startswith("RESULT")).split()
    return heard, int(sent), int(grew)


def test_a_long_film_is_checked_and_copied_in_flat_memory(tmp_path: Path) -> None:
    """30 min of audio held whole would be 115 MB as float32 at 16 kHz (600 MB at the
    track's 44.1 kHz stereo); the check and the copy go piece by piece, so a long film
    costs about what a short one does (the allocator's high-water mark moves a little)."""
    pytest.importorskip("faster_whisper")
    long = long_quiet_film(tmp_path / "long.mkv", minutes=30)
    short = long_quiet_film(tmp_path / "short.mkv", minutes=0.5)
    heard, size, grew_long = _checked_and_copied(long)
    _, _, grew_short = _checked_and_copied(short)
    assert heard == "False"
    assert size <= 1.05 * audio_bytes(long) + 100_000
    assert grew_long - grew_short < 70, (grew_short, grew_long)


def test_the_local_engine_hears_the_folders_track(tmp_path: Path,
                                                  voices: dict[str, Path]) -> None:
    pytest.importorskip("faster_whisper")
    two = film(tmp_path / "dubbed.mkv", [(voices["fr"], "fra"), (voices["en"], "eng")],
               seconds=30, size="320x240", default=0)
    cfg = write_config(tmp_path, local={"language": "en"})
    r = run_cli("transcribe", "--config", str(cfg), "--backend", "local", str(two), env={})
    assert r.code == 0, r.err[-2000:]
    wer = jiwer.wer(_words(PARAGRAPH), _words(r.out))
    assert wer < 0.4, (wer, r.out)  # the French track heard by tiny.en is ~1.0


def _words(text: str) -> str:
    import re
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def test_the_track_is_the_folders_language_else_the_default_else_the_first() -> None:
    from sttwatch.backends.media import MediaInfo, Track, choose_audio, same_language

    def info(*tracks: tuple[str | None, bool]) -> MediaInfo:
        return MediaInfo("matroska,webm", (Track(0, "video", "h264", None, True), *(
            Track(i + 1, "audio", "aac", lang, default)
            for i, (lang, default) in enumerate(tracks))))

    def pick(media: MediaInfo, language: str | None) -> int | None:
        track = choose_audio(media, language)
        return None if track is None else track.index

    dubbed = info(("fre", True), ("ger", False), ("eng", False))
    assert (pick(dubbed, "en"), pick(dubbed, "de"), pick(dubbed, "fra")) == (3, 2, 1)
    assert pick(dubbed, "ja") == pick(dubbed, None) == 1  # the default
    assert pick(info(("und", False), ("eng", False)), "fr") == 1  # the first
    assert choose_audio(info(), "en") is None
    assert same_language("eng", "en") and same_language("EN-us", "eng")
    assert not same_language("und", None) and not same_language(None, "en")
