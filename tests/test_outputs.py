"""Output formats, checked by parsing what they produce with the real srt and webvtt libraries."""

from __future__ import annotations

import datetime
import html
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt

from sttwatch.errors import RenderError
from sttwatch.outputs import FORMATS, Format, get_format, write_atomic

SENTENCES = [
    "Good morning everyone, and welcome to the weekly engineering sync.",
    "Today we will look at the deployment pipeline, the new caching layer and the incident"
    " from Tuesday night, which took the billing service down for almost forty minutes.",
    # the 2 s pause goes before the next sentence
    "Okay, let's start with the pipeline.",
    "Builds are now twice as fast since we moved the integration tests onto the new runners"
    " and stopped rebuilding the base images on every commit.",
]
PAUSE_AFTER = len(" ".join(SENTENCES[:2]).split())  # words before the long pause


def word_payload(sentences: list[str] = SENTENCES, pause_after: int = PAUSE_AFTER,
                 pause: float = 2.0, step: float = 0.38) -> dict[str, Any]:
    """A Deepgram-shaped result with realistic word timings and one long pause."""
    words: list[dict[str, Any]] = []
    t = 0.32
    for i, token in enumerate(" ".join(sentences).split()):
        if i == pause_after:
            t += pause
        bare = re.sub(r"[^\w']", "", token).lower()
        words.append({"word": bare, "punctuated_word": token, "start": round(t, 3),
                      "end": round(t + step - 0.08, 3), "confidence": 0.97})
        t += step
    transcript = " ".join(w["punctuated_word"] for w in words)
    return {"metadata": {"request_id": "r1", "duration": round(t + 0.6, 3), "channels": 1},
            "results": {"channels": [{"alternatives": [
                {"transcript": transcript, "confidence": 0.98, "words": words}]}]}}


def plain_payload(transcript: str, duration: float | None = None, **results: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"results": {
        "channels": [{"alternatives": [{"transcript": transcript}]}], **results}}
    if duration is not None:
        payload["metadata"] = {"duration": duration}
    return payload


def transcript_text(payload: dict[str, Any]) -> str:
    return str(payload["results"]["channels"][0]["alternatives"][0]["transcript"])


def squash(text: str) -> str:
    return " ".join(text.split())


def srt_cues(payload: dict[str, Any], header: dict[str, Any] | None = None) -> list[srt.Subtitle]:
    text = get_format("srt").render(payload, header or {})
    cues = list(srt.parse(text))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    return cues


Timed = tuple[float, float, str, "str | None"]  # start, end, text, speaker


def vtt_cues(payload: dict[str, Any], header: dict[str, Any] | None = None) -> list[Timed]:
    text = get_format("vtt").render(payload, header or {})
    assert text.startswith("WEBVTT\n\n") or text == "WEBVTT\n"
    captions = webvtt.from_string(text, strict=True).captions
    return [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000,
             html.unescape(c.text), c.voice) for c in captions]


def spoken_cues(payload: dict[str, Any], header: dict[str, Any] | None = None) -> list[Timed]:
    """The cues of both subtitle formats, which must agree exactly: srt's "Speaker 1: "
    prefix and vtt's voice span name the same speaker."""
    from_srt: list[Timed] = []
    for c in srt_cues(payload, header):
        match = re.match(r"(Speaker \d+|[^\n:]+): ", c.content)
        speaker = match.group(1) if match else None
        body = c.content[match.end():] if match else c.content
        from_srt.append((c.start.total_seconds(), c.end.total_seconds(), body, speaker))
    assert from_srt == vtt_cues(payload, header)
    return from_srt


def timeline(payload: dict[str, Any]) -> list[tuple[float, float, str]]:
    return [(start, end, text) for start, end, text, _ in spoken_cues(payload)]


def check_valid(cues: list[tuple[float, float, str]], duration: float | None) -> None:
    previous_start = previous_end = 0.0
    for start, end, text in cues:
        assert start >= previous_start and start >= previous_end - 1e-9
        assert end > start
        if duration is not None:
            assert end <= duration + 1e-9
        lines = text.split("\n")
        assert 1 <= len(lines) <= 2
        assert all(0 < len(line) <= 42 for line in lines), lines
        previous_start, previous_end = start, end


def joined(cues: list[tuple[float, float, str]] | list[Timed]) -> str:
    return squash(" ".join(cue[2].replace("\n", " ") for cue in cues))


def test_word_timed_cues_are_valid_and_keep_every_word() -> None:
    payload = word_payload()
    cues = timeline(payload)
    assert len(cues) >= 6
    check_valid(cues, payload["metadata"]["duration"])
    assert joined(cues) == squash(transcript_text(payload))
    assert all(end - start <= 7.0 + 1e-9 for start, end, _ in cues)


def test_long_pause_splits_cues() -> None:
    payload = word_payload()
    words = payload["results"]["channels"][0]["alternatives"][0]["words"]
    before, after = words[PAUSE_AFTER - 1], words[PAUSE_AFTER]
    assert after["start"] - before["end"] > 1.9
    cues = timeline(payload)
    assert not any(s < before["end"] and e > after["start"] for s, e, _ in cues)
    assert any(text.replace("\n", " ").endswith(before["punctuated_word"]) for _, _, text in cues)


def test_pause_without_punctuation_still_splits() -> None:
    payload = word_payload(["one two three four five six seven eight"], pause_after=4, pause=1.5)
    texts = [squash(t) for _, _, t in timeline(payload)]
    assert texts == ["one two three four", "five six seven eight"]


def test_sentence_ends_close_cues() -> None:
    payload = word_payload(["Yes.", "No way!", "Are you sure?", "Absolutely, I am sure."])
    texts = [squash(t) for _, _, t in timeline(payload)]
    assert texts == ["Yes.", "No way!", "Are you sure?", "Absolutely, I am sure."]
    # and in the long payload no cue carries a sentence end before its last word
    for _, _, text in timeline(word_payload()):
        assert not re.search(r"[.?!]\s", text.replace("\n", " ")), text


def test_fast_unpunctuated_speech_respects_time_and_line_limits() -> None:
    long = " ".join(["extraordinarily"] * 20 + ["go"] * 60)
    payload = word_payload([long], pause_after=-1, step=0.2)
    cues = timeline(payload)
    check_valid(cues, payload["metadata"]["duration"])
    assert joined(cues) == squash(long)
    assert all(end - start <= 7.0 + 1e-9 for start, end, _ in cues)


def test_word_falls_back_to_bare_word_and_times_are_clamped() -> None:
    words = [{"word": "hello", "start": 0.0, "end": 0.0},
             {"word": "again", "start": 0.0, "end": 0.2},
             {"word": "there", "punctuated_word": "there.", "start": 2.5, "end": 9.0}]
    payload = plain_payload("hello again there.", duration=3.0)
    payload["results"]["channels"][0]["alternatives"][0]["words"] = words
    cues = timeline(payload)
    check_valid(cues, 3.0)
    assert joined(cues) == "hello again there."


def test_utterances_fallback() -> None:
    utterances = [{"start": 0.3, "end": 2.1, "transcript": "Hi there.", "speaker": 0},
                  {"start": 2.4, "end": 30.0, "transcript": " ".join(["blah"] * 40), "speaker": 1}]
    payload = plain_payload("Hi there. " + " ".join(["blah"] * 40), 31.0, utterances=utterances)
    cues = timeline(payload)
    check_valid(cues, 31.0)
    assert cues[0] == (0.3, 2.1, "Hi there.")
    assert cues[1][0] == 2.4 and cues[-1][1] == 30.0 and len(cues) > 2
    assert joined(cues) == squash(transcript_text(payload))
    speakers = [who for *_, who in spoken_cues(payload)]
    assert speakers == ["Speaker 1"] + ["Speaker 2"] * (len(cues) - 1)


def test_paragraph_sentences_fallback() -> None:
    paragraphs = {"paragraphs": [
        {"sentences": [{"text": "First one.", "start": 0.5, "end": 1.5},
                       {"text": "Second one.", "start": 1.6, "end": 2.9}]},
        {"sentences": [{"text": "New paragraph.", "start": 4.0, "end": 5.0}]}]}
    payload = plain_payload("First one. Second one. New paragraph.", 6.0, paragraphs=paragraphs)
    assert [c[:2] for c in timeline(payload)] == [(0.5, 1.5), (1.6, 2.9), (4.0, 5.0)]


def test_malformed_timings_fall_back_and_stay_valid() -> None:
    payload = word_payload()
    words = payload["results"]["channels"][0]["alternatives"][0]["words"]
    words[5]["start"] = "soon"  # one bad word: word timings are unusable, not half-used
    overlapping = [{"start": 5.0, "end": 9.0, "transcript": "Second speaker talks."},
                   {"start": 1.0, "end": 6.0, "transcript": "First speaker\nstarts earlier."},
                   {"start": float("nan"), "end": 1, "transcript": "bad"}]
    cues = timeline(payload)
    check_valid(cues, payload["metadata"]["duration"])
    assert cues[0][0] == 0.0 and cues[-1][1] == payload["metadata"]["duration"]
    assert joined(cues) == squash(transcript_text(payload))
    payload["results"]["utterances"] = overlapping[:2]
    cues = timeline(payload)
    check_valid(cues, payload["metadata"]["duration"])
    assert [squash(t) for _, _, t in cues] == ["First speaker starts earlier.",
                                               "Second speaker talks."]
    payload["results"]["utterances"] = overlapping  # NaN start: utterances ignored as a whole
    assert len(timeline(payload)) > 2
    payload["metadata"]["duration"] = float("inf")
    payload["results"]["utterances"] = [{"start": 0, "end": float("inf"), "transcript": "x"}]
    check_valid(timeline(payload), None)


@pytest.mark.parametrize("duration", [12.5, None])
def test_no_timings_short_transcript_is_one_cue(duration: float | None) -> None:
    payload = plain_payload("  Just a short note to self about the groceries.  ", duration)
    cues = timeline(payload)
    check_valid(cues, duration)
    assert len(cues) == 1
    assert cues[0][0] == 0.0 and (cues[0][1] == duration if duration else cues[0][1] > 1)
    assert cues[0][2] == "Just a short note to\nself about the groceries."  # balanced lines


def test_no_timings_long_transcript_is_spread_over_duration() -> None:
    text = " ".join(SENTENCES * 3)
    cues = timeline(plain_payload(text, 95.0))
    check_valid(cues, 95.0)
    assert len(cues) > 5 and cues[0][0] == 0.0 and cues[-1][1] == 95.0
    assert joined(cues) == squash(text)
    lengths = [end - start for start, end, _ in cues]
    assert max(lengths) < 2 * min(lengths)


def test_vtt_escapes_markup() -> None:
    text = "<b>Tom & Jerry</b> -> cats > dogs"
    rendered = get_format("vtt").render(plain_payload(text, 4.0), {})
    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt; -&gt; cats &gt; dogs" in rendered
    body = rendered.split("\n", 3)[3]
    assert "<" not in body and "-->" not in body
    assert joined(vtt_cues(plain_payload(text, 4.0))) == text
    assert srt_cues(plain_payload(text, 4.0))[0].content == text


@pytest.mark.parametrize("transcript", ["", "   "])
def test_empty_transcript_gives_files_without_cues(transcript: str) -> None:
    payload = word_payload(["x"])
    payload["results"]["channels"][0]["alternatives"][0]["transcript"] = transcript
    assert get_format("srt").render(payload, {}) == ""
    assert list(srt.parse(get_format("srt").render(payload, {}))) == []
    assert get_format("vtt").render(payload, {}) == "WEBVTT\n"
    assert len(webvtt.from_string("WEBVTT\n", strict=True)) == 0
    assert get_format("txt").render(payload, {}) == ""


@pytest.mark.parametrize("bad", [{}, {"results": {}}, {"results": {"channels": []}},
                                 plain_payload(None)])  # type: ignore[arg-type]
def test_missing_transcript_is_a_clear_error(bad: dict[str, Any]) -> None:
    for kind in ("txt", "srt", "vtt"):
        with pytest.raises(RenderError, match="no transcript in any known shape"):
            get_format(kind).render(bad, {"model": "#g1_whisper-tiny"})
    # the json output keeps the unreadable result, with the reason
    kept = json.loads(get_format("json").render(bad, {"model": "#g1_whisper-tiny"}))
    assert kept["result"] == bad and kept["transcript"] is None
    assert "no transcript" in kept["render_error"]


def test_txt_wraps_plain_transcript() -> None:
    text = " ".join(SENTENCES)
    out = get_format("txt").render(word_payload(), {})
    assert out.endswith("\n") and "\n\n" not in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert squash(out) == squash(text)


def test_txt_paragraphs_and_utterances() -> None:
    paragraphs = {"paragraphs": [
        {"sentences": [{"text": "First one.", "start": 0.5, "end": 1.5},
                       {"text": "Second one.", "start": 1.6, "end": 2.9}]},
        {"sentences": [{"text": "New paragraph."}]}]}
    payload = plain_payload("First one. Second one. New paragraph.", paragraphs=paragraphs)
    assert get_format("txt").render(payload, {}) == "First one. Second one.\n\nNew paragraph.\n"
    utterances = [{"start": 0, "end": 1, "transcript": "Hello."},
                  {"start": 1, "end": 2, "transcript": "Hi, who is this?"}]
    payload = plain_payload("Hello. Hi, who is this?", utterances=utterances)
    assert get_format("txt").render(payload, {}) == "Hello.\n\nHi, who is this?\n"
    for u, speaker in zip(utterances, (0, 1), strict=True):
        u["speaker"] = speaker
    assert get_format("txt").render(payload, {}) == (
        "Speaker 1: Hello.\n\nSpeaker 2: Hi, who is this?\n")


def test_json_round_trips_with_header() -> None:
    payload = word_payload()
    payload["results"]["channels"][0]["alternatives"][0]["transcript"] += " Ça va, 東京."
    header = {"source": "/data/in/talk.mp3", "size": 12345, "sha256": "ab" * 32,
              "backend": "aimlapi", "model": "#g1_whisper-tiny", "generation_id": "g-1",
              "submitted": "2024-05-01T10:00:00+00:00", "cost": {"usd": 0.0021}}
    out = get_format("json").render(payload, header)
    assert out.endswith("}\n") and "東京" in out and '\n  "sttwatch": {' in out
    body = json.loads(out)
    assert (body["sttwatch"], body["result"]) == (header, payload)
    assert body["transcript"]["text"] == transcript_text(payload)
    assert body["transcript"]["words"][0] == {"text": "Good", "start": 0.32, "end": 0.62,
                                              "confidence": 0.97, "speaker": None}
    odd = {"source": Path("/x/y.wav"), "when": datetime.datetime(2024, 5, 1, 10, 0)}
    assert json.loads(get_format("json").render({}, odd))["sttwatch"] == {
        "source": "/x/y.wav", "when": "2024-05-01T10:00:00"}


def test_registry() -> None:
    assert {"txt", "json", "srt", "vtt"} <= set(FORMATS)
    for kind, cls in FORMATS.items():
        assert cls.kind == kind and cls.suffix == "." + kind and cls.__doc__
        assert isinstance(get_format(kind), Format)
    with pytest.raises(ValueError, match=r"'docx'.*json, srt, txt, vtt"):
        get_format("docx")
    with pytest.raises(TypeError):
        FORMATS["x"] = Format  # type: ignore[index]
    with pytest.raises(ValueError, match="already registered"):
        type("Again", (Format,), {}, kind="txt")


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "talk.srt"
    write_atomic(target, "first\n")
    assert target.read_text(encoding="utf-8") == "first\n"
    assert target.stat().st_mode & 0o777 == 0o644
    inode = target.stat().st_ino
    write_atomic(target, "zweite Fassung \u2014 \u00fc\n")
    assert target.read_text(encoding="utf-8") == "zweite Fassung \u2014 \u00fc\n"
    assert target.stat().st_ino != inode  # replaced, not rewritten in place
    assert os.listdir(tmp_path) == ["talk.srt"]


def test_written_vtt_parses_from_file(tmp_path: Path) -> None:
    target = tmp_path / "talk.vtt"
    write_atomic(target, get_format("vtt").render(word_payload(), {}))
    parsed = webvtt.read(str(target))
    text = " ".join(html.unescape(c.text) for c in parsed.captions)
    assert squash(text) == squash(" ".join(SENTENCES))


def test_write_atomic_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "inside").write_text("x")
    with pytest.raises(OSError):  # a non-empty directory where the file should go
        write_atomic(tmp_path / "busy", "text")
    with pytest.raises(UnicodeEncodeError):  # fails after the temp file exists
        write_atomic(tmp_path / "bad.txt", "lone surrogate \ud800")
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "out.txt", "text")
    existing = tmp_path / "keep.txt"
    existing.write_text("old")

    def broken_replace(src: str, dst: Path) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr("sttwatch.outputs.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(existing, "new")
    assert existing.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["busy", "keep.txt"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_write_atomic_read_only_directory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            write_atomic(folder / "out.txt", "text")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)
