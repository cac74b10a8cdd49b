"""The offline engine with real recognition: whisper-tiny on espeak-ng speech and on the
human recordings Debian's alsa-utils ships."""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jiwer
import pytest
from conftest import run_cli, transcript, wait_for, write_config
from speech import ALSA, SENTENCES, speak

pytestmark = pytest.mark.model


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def test_human_recording_front_center() -> None:
    r = run_cli("transcribe", "--backend", "local", str(ALSA / "Front_Center.wav"), env={})
    assert r.code == 0, r.err
    assert words(r.out) == "front center"


def test_espeak_sentences_are_recognised(tmp_path: Path) -> None:
    paths = [speak(s, tmp_path / f"s{i}.wav") for i, s in enumerate(SENTENCES)]
    r = run_cli("transcribe", "--backend", "local", "--format", "json",
                *map(str, paths[:2]), env={})
    assert r.code == 0, r.err
    docs = [json.loads(chunk) for chunk in re.split(r"(?<=\n})\n(?=\{)", r.out.strip())]
    assert len(docs) == 2
    for doc, sentence in zip(docs, SENTENCES[:2], strict=True):
        result = doc["result"]
        alt = result["results"]["channels"][0]["alternatives"][0]
        assert jiwer.wer(words(sentence), words(alt["transcript"])) < 0.25
        assert alt["words"] and all(w["end"] >= w["start"] >= 0 for w in alt["words"])
        assert 0 < alt["words"][-1]["end"] <= result["metadata"]["duration"] + 0.5
        assert result["results"]["channels"][0]["detected_language"] == "en"
        assert doc["sttwatch"]["backend"] == "local"


def test_subtitles_from_local_timings(tmp_path: Path) -> None:
    import srt
    wav = speak(SENTENCES[1], tmp_path / "long.wav")
    r = run_cli("transcribe", "--backend", "local", "--format", "srt", str(wav), env={})
    assert r.code == 0, r.err
    cues = list(srt.parse(r.out))
    assert cues and cues[0].start.total_seconds() >= 0
    assert all(a.start <= b.start for a, b in itertools.pairwise(cues))
    assert jiwer.wer(words(SENTENCES[1]), words(" ".join(c.content for c in cues))) < 0.25


def test_undecodable_file_fails_with_decoder_reason(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, backend="local")
    inbox = tmp_path / "inbox"
    (inbox / "broken.wav").write_bytes(b"RIFF\x00\x00garbage, not a wave file at all")
    speak("one two three", inbox / "good.wav")
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == 1, r.err
    failed = [e for e in r.events() if e["event"] == "failed"]
    assert len(failed) == 1 and failed[0]["path"].endswith("broken.wav")
    assert "cannot transcribe" in failed[0]["reason"] and len(failed[0]["reason"]) > 20
    assert words(transcript(inbox / "good.wav") or "") == "one two three"


def test_auto_backend_without_key_is_local(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, backend="auto")
    speak("hello from the local engine", tmp_path / "inbox" / "hi.wav")
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == 0, r.err
    started = next(e for e in r.events() if e["event"] == "starting")
    assert started["backend"] == "local"
    assert "local engine" in words(transcript(tmp_path / "inbox" / "hi.wav") or "")


def test_local_url_is_downloaded_first(tmp_path: Path) -> None:
    speak(SENTENCES[3], tmp_path / "web" / "clip.wav")
    handler = partial(QuietHandler, directory=str(tmp_path / "web"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.wav"
        r = run_cli("transcribe", "--backend", "local", url, env={})
    finally:
        server.shutdown()
    assert r.code == 0, r.err
    assert jiwer.wer(words(SENTENCES[3]), words(r.out)) < 0.25


def test_missing_extra_names_the_install_command(tmp_path: Path) -> None:
    import subprocess
    wav = str(ALSA / "Front_Center.wav")
    code = ("import sys; sys.modules['faster_whisper'] = None\n"
            "from sttwatch.cli import main\n"
            f"sys.exit(main(['transcribe', '--backend', 'local', {wav!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={})
    assert p.returncode == 2
    assert "pip install 'sttwatch[local]'" in p.stderr


@pytest.mark.slow
def test_daemon_local_survives_kill_9(tmp_path: Path, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, backend="local")
    inbox = tmp_path / "inbox"
    expected = {inbox / f"s{i}.wav": s for i, s in enumerate(SENTENCES)}
    d = daemon_factory(cfg, env={"STTWATCH_TEST_KEY": ""}).start()
    d.wait_started()
    for path, text in expected.items():
        speak(text, path)
    wait_for(lambda: any(transcript(p) for p in expected), timeout=60)
    d.kill()
    done_before = sum(1 for p in expected if transcript(p))
    assert done_before < len(expected), "the kill came too late to test anything"
    again = daemon_factory(cfg, env={"STTWATCH_TEST_KEY": ""}).start()
    wait_for(lambda: all(transcript(p) for p in expected), timeout=120)
    assert again.stop() == 0
    for path, text in expected.items():
        assert jiwer.wer(words(text), words(transcript(path) or "")) < 0.3, path


def test_long_file_is_transcribed_in_pieces_with_absolute_times(tmp_path: Path) -> None:
    text = " ".join(SENTENCES * 4)
    wav = speak(text, tmp_path / "long.wav", speed=170)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("local:\n  chunk_seconds: 30\n")
    r = run_cli("transcribe", "--config", str(cfg), "--backend", "local", "--format", "json",
                str(wav), env={})
    assert r.code == 0, r.err
    result = json.loads(r.out)["result"]
    alt = result["results"]["channels"][0]["alternatives"][0]
    duration = result["metadata"]["duration"]
    assert duration > 65  # so at least two pieces were needed
    assert jiwer.wer(words(text), words(alt["transcript"])) < 0.2
    starts = [w["start"] for w in alt["words"]]
    assert starts == sorted(starts)
    assert duration - 10 < alt["words"][-1]["end"] <= duration + 0.5


def test_compressed_formats_people_actually_drop(tmp_path: Path) -> None:
    import shutil
    import subprocess
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed (apt-get install ffmpeg)"
    wav = speak(SENTENCES[0], tmp_path / "src.wav")
    cfg = write_config(tmp_path, backend="local")
    inbox = tmp_path / "inbox"
    for name in ("talk.mp3", "memo.m4a", "voice.ogg", "clip.webm"):
        subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(wav), str(inbox / name)],
                       check=True)
    r = run_cli("run", "--config", str(cfg), "--once", env={})
    assert r.code == 0, r.err
    for name in ("talk.mp3", "memo.m4a", "voice.ogg", "clip.webm"):
        got = transcript(inbox / name) or ""
        assert jiwer.wer(words(SENTENCES[0]), words(got)) < 0.25, (name, got)


def test_one_daemon_two_backends_by_folder(tmp_path: Path) -> None:
    from conftest import KEY
    from fake_service import FakeConfig, FakeService, make_fake_audio
    with FakeService(FakeConfig(key=KEY, task_seconds=0.2)) as svc:
        (tmp_path / "offline").mkdir()
        cfg = write_config(tmp_path, svc.base_url, output={"formats": ["txt", "json"]},
                           watch=[{"path": "./inbox"},
                                  {"path": "./offline", "backend": "local"}])
        make_fake_audio(tmp_path / "inbox" / "remote.mp3", "sent to the service")
        speak("one two three", tmp_path / "offline" / "here.wav")
        r = run_cli("run", "--config", str(cfg), "--once")
        assert r.code == 0, r.err
        assert [c.text for c in svc.creates()] == ["sent to the service"]
    remote = json.loads((tmp_path / "inbox" / "remote.json").read_text())
    here = json.loads((tmp_path / "offline" / "here.json").read_text())
    assert remote["sttwatch"]["backend"] == "aimlapi"
    assert here["sttwatch"]["backend"] == "local"
    assert words(transcript(tmp_path / "offline" / "here.wav") or "") == "one two three"


def test_translate_needs_a_multilingual_model() -> None:
    from sttwatch.backends.local import LocalBackend, LocalSettings
    from sttwatch.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match=r"translate needs a multilingual model.*"
                                                 r"tiny\.en"):
        LocalBackend(LocalSettings(task="translate", workers=1))


def test_vad_filter_skips_a_long_silence_and_keeps_the_words_times(tmp_path: Path) -> None:
    """Half a minute of silence before the speech: the words are found, at their place."""
    import subprocess

    from sttwatch.backends.local import LocalBackend, LocalSettings
    wav = speak(SENTENCES[0], tmp_path / "s.wav")
    padded = tmp_path / "padded.wav"
    subprocess.run(["sox", str(wav), str(padded), "pad", "30", "5"], check=True)
    engine = LocalBackend(LocalSettings(vad_filter=True, workers=1))
    try:
        result = engine.transcribe(padded, "t", {})
    finally:
        engine.close()
    alt = result["results"]["channels"][0]["alternatives"][0]
    assert jiwer.wer(words(SENTENCES[0]), words(alt["transcript"])) < 0.25
    assert 29.5 < alt["words"][0]["start"] < 31.0
