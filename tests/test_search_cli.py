"""``sttwatch search`` as a user runs it (the real program, in a subprocess), on a real
SQLite file and a real PostgreSQL store: real speech through the daemon (trimmed uploads
too), every model family's golden result, a library of transcript files made before
sttwatch, the filters, --json, a re-transcribed and a forgotten file, and the exit statuses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import srt
import yaml
from conftest import KEY, run_cli, write_config
from fake_service import FakeConfig, FakeService, make_fake_audio
from speech import SENTENCES, speak
from stores import PG_URL, new_schema, pg_url_with_schema, require_pg

from sttwatch.store import Admission, Plan, open_store

GOLDEN = Path(__file__).parent / "golden"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


@dataclass
class Lib:
    """A config in tmp_path on one store kind, and the program run against it."""

    tmp: Path
    state: dict[str, Any]

    def config(self, base_url: str = "http://127.0.0.1:9/v1", **sections: Any) -> Path:
        path = write_config(self.tmp, base_url, **sections)
        raw = yaml.safe_load(path.read_text())
        raw["state"] = self.state  # in place of the default, not merged into it
        path.write_text(yaml.safe_dump(raw))
        return path

    def search(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sttwatch", "search", "-c",
                               str(self.tmp / "sttwatch.yaml"), *args], capture_output=True,
                              text=True, timeout=120, env={**os.environ,
                                                           "STTWATCH_TEST_KEY": KEY})

    def hits(self, *args: str) -> list[dict[str, Any]]:
        r = self.search("--json", *args)
        assert r.returncode in (0, 1), r.stderr
        found: list[dict[str, Any]] = json.loads(r.stdout)
        return found


@pytest.fixture(params=["sqlite", "postgres"])
def lib(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lib]:
    if request.param == "sqlite":
        yield Lib(tmp_path, {"path": "./state/sttwatch.db"})
        return
    require_pg()
    from sttwatch.store.postgres import PostgresStore
    schema = new_schema()
    PostgresStore(PG_URL, schema=schema).close()
    yield Lib(tmp_path, {"url": pg_url_with_schema(schema)})
    store = PostgresStore(PG_URL, schema=schema)
    store.drop_schema()
    store.close()


def seconds_of(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def spoken(folder: Path, name: str, silences: tuple[float, float, float]) -> tuple[Path, float]:
    """SENTENCES[0] and [1] spoken by espeak-ng with silences before, between and after;
    returns the WAV and where the second sentence starts in it."""
    parts = [speak(s, folder / f".{name}-{i}.wav") for i, s in enumerate(SENTENCES[:2])]
    out = folder / name
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", str(folder / ".quiet0.wav"), "trim",
                    "0", str(silences[0])], check=True)
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", str(folder / ".quiet1.wav"), "trim",
                    "0", str(silences[1])], check=True)
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", str(folder / ".quiet2.wav"), "trim",
                    "0", str(silences[2])], check=True)
    subprocess.run(["sox", str(folder / ".quiet0.wav"), str(parts[0]),
                    str(folder / ".quiet1.wav"), str(parts[1]), str(folder / ".quiet2.wav"),
                    str(out)], check=True)
    second = silences[0] + seconds_of(parts[0]) + silences[1]
    for p in [*parts, *(folder / f".quiet{i}.wav" for i in range(3))]:
        p.unlink()
    return out, second


@needs_espeak
@pytest.mark.parametrize("trim", [False, True], ids=["as_is", "trimmed"])
def test_real_speech_words_phrases_prefixes_at_their_times(lib: Lib, tmp_path: Path,
                                                           trim: bool) -> None:
    pytest.importorskip("av", reason="the fake service hears real audio with PyAV")
    text = " ".join(SENTENCES[:2])
    with FakeService(FakeConfig(key=KEY, task_seconds=0.05, speech_text=text)) as svc:
        cfg = lib.config(svc.base_url, api={"trim_silence": trim, "trim_min_silence": 3},
                         output={"formats": ["txt"]})
        wav, second = spoken(tmp_path / "inbox", "talk.wav", (20.0, 6.0, 2.0))
        assert run_cli("run", "--config", str(cfg), "--once").code == 0
    if trim:
        assert svc.creates()[-1].audio_seconds < second  # the silences were not sent

    (fox,) = lib.hits('"quick brown fox"')
    assert fox["path"] == str(wav) and 19.0 <= fox["start"] <= 21.5, fox  # speech from 20 s
    assert "[quick brown fox]" in lib.search('"quick brown fox"').stdout
    (stella,) = lib.hits("stella")
    assert second - 1.0 <= stella["start"] <= second + 2.5, (stella, second)
    assert stella["end"] > stella["start"] and "Stella" in stella["text"]
    assert [h["start"] for h in lib.hits("bri*")] == [stella["start"]]  # "bring"
    assert set(lib.hits("lazy")[0]) == {"path", "start", "end", "text", "speaker", "score",
                                        "job_id"}
    plain = lib.search("stella")
    assert plain.returncode == 0
    assert plain.stdout.splitlines()[0].startswith(f"{wav}  00:00:")

    nothing = lib.search("zebra")
    assert nothing.returncode == 1 and "no hits for zebra" in nothing.stderr
    assert nothing.stdout == ""
    bad = lib.search('"quick brown')
    assert bad.returncode == 2 and "quote is not closed" in bad.stderr


# golden result -> the model that produced it (tests/test_profiles.py's CASES)
FAMILIES = {
    "deepgram_plain": "#g1_whisper-base",
    "deepgram_speakers": "#g1_nova-2-meeting",
    "assemblyai_speakers": "aai/universal",
    "openai_text": "openai/gpt-4o-transcribe",
    "openai_segments": "openai/gpt-4o-mini-transcribe",
}


def srt_start_of(name: str, words: str) -> tuple[float, str]:
    """Where the golden srt puts the cue holding ``words`` (its start, its speaker line)."""
    for sub in srt.parse((GOLDEN / "expected" / f"{name}.srt").read_text()):
        flat = " ".join(sub.content.split())
        if words in flat:
            return sub.start.total_seconds(), flat
    raise AssertionError(f"{words!r} not in {name}.srt")


def done_job(cfg: Path, path: str, model: str, result: dict[str, Any]) -> None:
    """A finished job holding ``result``, as the daemon leaves it."""
    from sttwatch.config import load
    c = load(cfg)
    store = open_store(c.state_path, c.state_url)
    try:
        plan = Plan("aimlapi", model, {}, ("txt",), str(Path(path).parent))
        store.admit([Admission(path, 1, 1_700_000_000_000_000_000, plan)], 1.0)
        job = store.claim_submit("me", 2.0, 60.0, ["aimlapi"])
        assert job is not None
        job = store.set_pending(job, f"gen-{job.id}", 3.0, 4.0, None)
        assert job is not None
        job = store.set_fetched(job, result, 5.0, 1.0)
        assert job is not None and store.mark_done(job, 6.0)
    finally:
        store.close()


def test_every_model_familys_result_is_found_where_its_subtitles_put_it(lib: Lib) -> None:
    cfg = lib.config()
    for name, model in FAMILIES.items():
        done_job(cfg, f"/lib/{name}.mp3", model,
                 json.loads((GOLDEN / f"{name}.json").read_text()))
    r = lib.search("--reindex")
    assert r.returncode == 0 and "reindexed: 5 result(s)" in r.stdout, r.stderr
    for query, words in (('"second quarter"', "second quarter"), ("march", "March"),
                         ("afternoo*", "afternoon")):
        found = {h["path"]: h for h in lib.hits(query)}
        assert set(found) == {f"/lib/{n}.mp3" for n in FAMILIES}, query
        for name in FAMILIES:
            start, _cue = srt_start_of(name, words)
            assert found[f"/lib/{name}.mp3"]["start"] == pytest.approx(start, abs=0.002), name
    speaking = {h["path"]: h for h in lib.hits("speaker:2", "march")}
    assert set(speaking) == {"/lib/deepgram_speakers.mp3", "/lib/assemblyai_speakers.mp3"}
    for name in ("deepgram_speakers", "assemblyai_speakers"):
        start, cue = srt_start_of(name, "March")
        assert cue.startswith("Speaker 2: ")
        assert speaking[f"/lib/{name}.mp3"]["start"] == pytest.approx(start, abs=0.002)
        assert speaking[f"/lib/{name}.mp3"]["speaker"] == "Speaker 2"
    assert lib.hits("speaker:1", "march") == []


def _recording(folder: Path, stem: str, golden: str, kind: str, made: str) -> Path:
    source = make_fake_audio(folder / f"{stem}.mp3", "already transcribed")
    shutil.copy(GOLDEN / "expected" / f"{golden}.{kind}", folder / f"{stem}.{kind}")
    t = datetime.fromisoformat(made).timestamp()
    os.utime(source, (t, t))
    return source


def test_a_library_transcribed_before_is_found_after_reindex(lib: Lib, tmp_path: Path) -> None:
    lib.config(watch=[{"path": "./lib", "recursive": True}])
    meetings, lectures = tmp_path / "lib" / "meetings", tmp_path / "lib" / "lectures"
    jan = _recording(meetings, "jan", "deepgram_speakers", "srt", "2026-01-15T10:00")
    feb = _recording(meetings, "feb", "assemblyai_speakers", "vtt", "2026-02-15T10:00")
    mar = _recording(lectures, "mar", "openai_text", "txt", "2026-03-15T10:00")
    _recording(tmp_path / "lib" / ".hidden", "no", "openai_text", "srt", "2026-03-15T10:00")

    if "path" in lib.state:  # (the PostgreSQL fixture made its store already)
        assert lib.search("budget").returncode == 2  # no state yet: nothing to search
    first = lib.search("--reindex", "budget")
    assert first.returncode == 0, first.stderr
    assert "reindexed: 0 result(s) from the state, 3 transcript file(s)" in first.stderr
    found = {h["path"]: h for h in lib.hits("budget")}
    assert set(found) == {str(jan), str(feb), str(mar)}
    assert found[str(jan)]["start"] == srt_start_of("deepgram_speakers", "budget")[0]
    assert found[str(feb)]["start"] == srt_start_of("assemblyai_speakers", "budget")[0]
    assert found[str(mar)]["start"] is None  # a txt has no times
    assert "--:--:--" in lib.search("budget", "--folder", str(tmp_path / "lib/lectures")).stdout

    assert {h["path"] for h in lib.hits("budget", "--folder", str(meetings))} == {str(jan),
                                                                                  str(feb)}
    assert {h["path"] for h in lib.hits("budget", "--since", "2026-02-01")} == {str(feb),
                                                                               str(mar)}
    assert {h["path"] for h in lib.hits("budget", "--until", "2026-02-15")} == {str(jan),
                                                                               str(feb)}
    assert {h["path"] for h in lib.hits("budget", "--since", "2026-02-01",
                                        "--until", "2026-02-28")} == {str(feb)}
    assert len(lib.hits("the", "--limit", "2")) == 2
    bad = lib.search("budget", "--since", "last tuesday")
    assert bad.returncode == 2 and "cannot read the date 'last tuesday'" in bad.stderr

    # forget: its hits are gone
    forget = subprocess.run([sys.executable, "-m", "sttwatch", "forget", "-c",
                             str(tmp_path / "sttwatch.yaml"), str(jan)], capture_output=True,
                            text=True, timeout=60)
    assert forget.returncode == 1  # never a job: nothing in the state to forget ...
    assert {h["path"] for h in lib.hits("budget")} == {str(feb), str(mar)}  # ... but its hits


def test_a_retranscribed_file_replaces_its_hits_and_forget_removes_them(lib: Lib,
                                                                        fake: FakeService
                                                                        ) -> None:
    cfg = lib.config(fake.base_url)
    audio = make_fake_audio(lib.tmp / "inbox" / "memo.mp3", "meet me at the harbour")
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert [h["text"] for h in lib.hits("harbour")] == ["meet me at the harbour"]

    make_fake_audio(audio, "the meeting moved to the station after all")
    os.utime(audio, (1_800_000_000, 1_800_000_000))
    assert run_cli("run", "--config", str(cfg), "--once").code == 0
    assert lib.search("harbour").returncode == 1
    (moved,) = lib.hits('"moved to the station"')
    assert moved["path"] == str(audio) and moved["job_id"] is not None

    assert run_cli("forget", "--config", str(cfg), str(audio)).code == 0
    gone = lib.search("station")
    assert gone.returncode == 1 and "no hits for station" in gone.stderr


@pytest.mark.parametrize("query,message", [
    ('"unclosed', "quote is not closed"),
    ("a*b", "'*' goes once, at the end of a word"),
    ("--- ...", "has no letters or digits"),
    ("speaker:x*", "speaker: takes a name"),
])
def test_a_malformed_query_exits_2_with_a_clear_message(lib: Lib, query: str,
                                                        message: str) -> None:
    lib.config()
    r = lib.search("--", query)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
