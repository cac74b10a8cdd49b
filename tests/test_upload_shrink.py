"""Fewer bytes (``api.upload: compact``) and fewer billed seconds (``api.trim_silence``):
real espeak-ng speech through the real client to the fake service, which decodes what it
receives and lays the words over the speech it hears, so the times it answers follow the
audio actually uploaded; the map back to the recording's clock is checked on those."""

from __future__ import annotations

import shutil
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
import srt
from fake_service import FakeConfig, FakeService
from speech import SENTENCES, speak

from sttwatch.backends import Request, Status, TaskState
from sttwatch.backends.aimlapi import AimlApiBackend
from sttwatch.outputs import transcript_of
from sttwatch.store import Plan
from sttwatch.store.model import Admission
from sttwatch.store.sqlite import SqliteStore
from sttwatch.timeline import map_time, remap
from sttwatch.transcript_model import Span, Transcript, Word
from sttwatch.transcripts import header, write_transcripts

np = pytest.importorskip("numpy")
pytest.importorskip("av", reason="PyAV comes with sttwatch[local]")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")

KEY = "sk-test-shrink"
MODEL = "#g1_whisper-tiny"
TEXT = " ".join(SENTENCES[:2])


# --- the map, deterministic ----------------------------------------------------------------

TIMELINE = ((0.0, 59.5, 4.0), (4.0, 70.0, 2.0), (6.0, 100.0, 3.0))


def test_upload_times_map_onto_the_recordings_clock() -> None:
    assert map_time(0.0, TIMELINE) == 59.5
    assert map_time(1.25, TIMELINE) == 60.75
    assert map_time(4.5, TIMELINE) == 70.5
    assert map_time(7.0, TIMELINE) == 101.0
    # On a cut: a start belongs to the piece after it, an end to the piece before it.
    assert map_time(4.0, TIMELINE) == 70.0
    assert map_time(4.0, TIMELINE, end=True) == 63.5
    assert map_time(9.5, TIMELINE, end=True) == 103.5  # past the end: the last piece runs on


def test_every_time_of_a_transcript_is_mapped_and_the_text_kept() -> None:
    t = Transcript("hello there friend", words=(
        Word("hello", 0.5, 1.0, 0.9, "1"), Word("there", 3.5, 4.0), Word("friend", 4.0, 5.0)),
        utterances=(Span("hello there friend", 0.5, 5.0, "1"),), duration=9.0)
    got = remap(t, TIMELINE)
    assert [(w.text, w.start, w.end) for w in got.words] == [
        ("hello", 60.0, 60.5), ("there", 63.0, 63.5), ("friend", 70.0, 71.0)]
    assert got.words[0].speaker == "1" and got.words[0].confidence == 0.9
    assert (got.utterances[0].start, got.utterances[0].end) == (60.0, 71.0)
    assert got.text == t.text and got.duration == 103.0
    assert remap(t, None) is t


def test_silences_longer_than_the_limit_are_cut_with_padding_left_beside_speech() -> None:
    from sttwatch.backends.shrink import keep_ranges, timeline_of

    speech = [(60.2, 62.0), (62.5, 64.0), (70.0, 72.0), (73.0, 75.0)]
    kept = keep_ranges(speech, 140.0, min_silence=3.0, pad=0.5)
    assert kept == [(59.7, 64.5), (69.5, 75.5)]
    assert timeline_of(kept) == ((0.0, 59.7, 4.8), (4.8, 69.5, 6.0))
    # Short silences at the ends stay; no speech at all leaves nothing to cut around.
    assert keep_ranges([(1.0, 5.0)], 7.0, min_silence=3.0) == [(0.0, 7.0)]
    assert keep_ranges([], 100.0, min_silence=3.0) == []


# --- real speech through the client --------------------------------------------------------

def speech_wav(path: Path, tmp: Path, *, rate: int = 44100, channels: int = 2,
               silences: tuple[float, ...] = (0.0, 0.0)) -> tuple[Path, float]:
    """SENTENCES[:2] spoken, with ``silences`` (seconds) before, between and after them, as
    a PCM WAV at ``rate`` and ``channels``; returns the path and the seconds of speech."""
    parts = []
    for i, sentence in enumerate(SENTENCES[:2]):
        with wave.open(str(speak(sentence, tmp / f"s{i}.wav")), "rb") as w:
            src_rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        n = int(len(pcm) * rate / src_rate)
        parts.append(np.interp(np.arange(n) * src_rate / rate, np.arange(len(pcm)),
                               pcm).astype(np.int16))
    speech = sum(len(p) for p in parts) / rate
    quiet = [np.zeros(int(s * rate), np.int16) for s in silences]
    pieces = [quiet[0]]
    for i, p in enumerate(parts):
        pieces += [p, quiet[i + 1] if i + 1 < len(quiet) else quiet[-1]]
    mono = np.concatenate(pieces)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(mono, channels).tobytes())
    return path, speech


@pytest.fixture
def svc() -> Iterator[FakeService]:
    with FakeService(FakeConfig(key=KEY, task_seconds=0.05, speech_text=TEXT)) as service:
        yield service


def client(svc: FakeService, **shrink: object) -> AimlApiBackend:
    return AimlApiBackend(svc.base_url, KEY, MODEL, connect_timeout=2.0, read_timeout=10.0,
                          retries=1, **shrink)  # type: ignore[arg-type]


def finished(backend: AimlApiBackend, gen_id: str) -> Status:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = backend.fetch(gen_id)
        if status.state is not TaskState.RUNNING:
            assert status.state is TaskState.DONE, status.error
            return status
        time.sleep(0.02)
    raise AssertionError("the task did not finish")


@needs_espeak
def test_compact_sends_over_20x_fewer_bytes_of_a_wav_with_the_same_speech(
        svc: FakeService, tmp_path: Path) -> None:
    wav, _ = speech_wav(tmp_path / "talk.wav", tmp_path)
    with wave.open(str(wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    as_is, compact = client(svc), client(svc, compact=True)
    for backend in (as_is, compact):
        created = backend.create(Request(job_id=1, model=MODEL, path=wav))
        assert created.timeline is None
        words = finished(backend, created.generation_id).result
        assert words is not None and words["results"]["channels"][0]["alternatives"][0][
            "transcript"] == TEXT
        backend.close()
    full, small = svc.creates()
    assert full.filename == "talk.wav" and small.filename == "talk.ogg"
    assert full.body_bytes > wav.stat().st_size
    assert full.body_bytes / small.body_bytes >= 20, (full.body_bytes, small.body_bytes)
    # The service heard all of it, at the same length.
    assert small.audio_seconds == pytest.approx(seconds, abs=0.1)
    # The temporary file is gone.
    assert not list(Path(tempfile.gettempdir()).glob("sttwatch-upload-*/talk.ogg"))


@needs_espeak
def test_a_file_already_compact_goes_as_it_is(svc: FakeService, tmp_path: Path) -> None:
    from sttwatch.backends.shrink import encode

    wav, _ = speech_wav(tmp_path / "talk.wav", tmp_path)
    opus = tmp_path / "talk.opus"
    encode(wav, opus, opus=True)
    backend = client(svc, compact=True)
    backend.create(Request(job_id=1, model=MODEL, path=opus))
    backend.close()
    (record,) = svc.creates()
    assert record.filename == "talk.opus"
    assert opus.stat().st_size < record.body_bytes < opus.stat().st_size + 2000


def cue_times(text: str) -> list[tuple[float, float]]:
    return [(c.start.total_seconds(), c.end.total_seconds()) for c in srt.parse(text)]


@needs_espeak
@pytest.mark.parametrize("compact", [False, True], ids=["flac", "opus"])
def test_trimmed_upload_is_the_speech_and_its_cues_land_where_the_untrimmed_ones_do(
        svc: FakeService, tmp_path: Path, compact: bool) -> None:
    wav, speech = speech_wav(tmp_path / "padded.wav", tmp_path, rate=16000, channels=1,
                             silences=(60.0, 8.0, 60.0))
    plan = Plan("aimlapi", MODEL, {}, ("srt", "json"), str(tmp_path))
    state = tmp_path / "state.db"

    # Untrimmed: the reference cues.
    plain = client(svc)
    gen = plain.create(Request(job_id=1, model=MODEL, path=wav)).generation_id
    reference = finished(plain, gen).result
    assert reference is not None
    plain.close()

    # Trimmed: the map goes into the store with the id, as the submitter puts it there ...
    store = SqliteStore(state)
    (job,) = store.admit([Admission(str(wav), 1, 1, plan, ("{stem}.{format}",))], 1.0)
    job = store.claim_submit("me", 2.0, 60.0, ["aimlapi"])
    assert job is not None
    trimmed = client(svc, trim_silence=True, compact=compact)
    created = trimmed.create(Request(job_id=job.id, model=MODEL, path=wav))
    assert created.timeline is not None and len(created.timeline) == 2
    assert store.set_pending(job, created.generation_id, 3.0, 4.0, None,
                             timeline=created.timeline)
    store.close()
    uploaded = svc.creates()[-1].audio_seconds
    assert uploaded is not None and uploaded < speech + 3.0  # was speech + 128 s
    # ... and after a restart the result is stored and written on the recording's clock.
    store = SqliteStore(state)
    (claimed,) = store.claim_poll("me", 5.0, 60.0, 10, [], ["aimlapi"])
    result = finished(trimmed, claimed.generation_id).result
    assert result is not None
    trimmed.close()
    done = store.set_fetched(claimed, result, 6.0, 1.0)
    assert done is not None and done.timeline == created.timeline
    out = tmp_path / "out"
    hdr = header(done, "aimlapi", MODEL, 7.0)
    write_transcripts([out / "t.srt", out / "t.json"], ["srt", "json"], result, hdr)
    store.close()
    write_transcripts([out / "r.srt"], ["srt"], reference, {"model": MODEL})

    got, want = (cue_times((out / n).read_text()) for n in ("t.srt", "r.srt"))
    assert got and len(got) == len(want)
    assert max(abs(a - b) for g, w in zip(got, want, strict=True)
               for a, b in zip(g, w, strict=True)) <= 0.2, (got, want)
    assert got[0][0] > 59.0  # the first words are where the speech starts, after the silence
    words = transcript_of(result, hdr).words
    ref_words = transcript_of(reference, {"model": MODEL}).words
    assert max(abs(a.start - b.start) for a, b in zip(words, ref_words, strict=True)) <= 0.2
    assert '"timeline"' in (out / "t.json").read_text()  # the raw result and its map kept


@needs_espeak
def test_without_pyav_compact_sends_the_file_as_it_is_with_one_warning(
        svc: FakeService, tmp_path: Path) -> None:
    """The API-only install has no PyAV: ``av`` cannot be imported in the child process."""
    import subprocess
    import sys

    wav, _ = speech_wav(tmp_path / "talk.wav", tmp_path)
    code = (
        "import sys; sys.modules['av'] = None\n"
        "from pathlib import Path\n"
        "from sttwatch.backends import Request\n"
        "from sttwatch.backends.aimlapi import AimlApiBackend\n"
        f"b = AimlApiBackend({svc.base_url!r}, {KEY!r}, {MODEL!r}, compact=True, "
        "trim_silence=True, retries=1)\n"
        "for i in range(2):\n"
        f"    b.create(Request(job_id=i, model={MODEL!r}, path=Path({str(wav)!r})))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    log = r.stdout + r.stderr
    assert log.count("upload_not_shrunk") == 1 and "sttwatch[local]" in log
    assert [c.filename for c in svc.creates()] == ["talk.wav", "talk.wav"]
    assert all(c.body_bytes > wav.stat().st_size for c in svc.creates())
