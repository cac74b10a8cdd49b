"""Model profiles: lookup, option mapping, and every family's result rendered in all four
formats. Golden results live in tests/golden/*.json, their expected renderings in
tests/golden/expected/ (rewrite them with STTWATCH_UPDATE_GOLDEN=1 after a deliberate change,
then read the diff). Subtitles are parsed with the real srt and webvtt libraries."""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import srt
import structlog
import webvtt
from conftest import write_config
from fake_service import FakeConfig, FakeService, make_fake_audio

from sttwatch.backends import Request, TaskState
from sttwatch.backends.aimlapi import AimlApiBackend
from sttwatch.config import load
from sttwatch.errors import ConfigError, RenderError
from sttwatch.outputs import get_format, language_of, render_all, transcript_of
from sttwatch.profiles import PassThrough, Profile, profile_for
from sttwatch.transcript_model import output_language, speaker_label
from sttwatch.transcripts import Placement, up_to_date

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("STTWATCH_UPDATE_GOLDEN") == "1"
KEY = "sk-profiles-test-key"
FORMATS = ("txt", "json", "srt", "vtt")

# golden file -> (model that produced it, speakers expected, language, duration known)
CASES = {
    "deepgram_plain": ("#g1_whisper-base", False, "en", True),
    "deepgram_speakers": ("#g1_nova-2-meeting", True, "en", True),
    "assemblyai_speakers": ("aai/universal", True, "en", True),
    "openai_text": ("openai/gpt-4o-transcribe", False, None, False),
    "openai_segments": ("openai/gpt-4o-mini-transcribe", False, "en", True),
}


def golden(name: str) -> dict[str, Any]:
    result = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(result, dict)
    return result


def squash(text: str) -> str:
    return " ".join(text.split())


Cue = tuple[float, float, str, "str | None"]  # start, end, text, speaker


def parsed_cues(srt_text: str, vtt_text: str) -> list[Cue]:
    """Both subtitle files read by their libraries; they must agree cue for cue, srt's
    "Speaker 1: " prefix naming the speaker vtt's voice span names."""
    from_srt: list[Cue] = []
    subs = list(srt.parse(srt_text))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    for sub in subs:
        match = re.match(r"(Speaker \d+): ", sub.content)
        from_srt.append((sub.start.total_seconds(), sub.end.total_seconds(),
                         sub.content[match.end():] if match else sub.content,
                         match.group(1) if match else None))
    assert vtt_text.startswith("WEBVTT\n\n")
    from_vtt = [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000,
                 html.unescape(c.text), c.voice)
                for c in webvtt.from_string(vtt_text, strict=True).captions]
    assert from_srt == from_vtt
    return from_srt


# --- lookup ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "family", "field"), [
    ("#g1_whisper-tiny", "whisper", "audio"),
    ("whisper-large", "whisper", "audio"),
    ("#g1_whisper-large-v3", "whisper", "audio"),
    ("#g1_nova-2-phonecall", "deepgram", "audio"),
    ("#g1_nova-2-general", "deepgram", "audio"),
    ("nova-3", "deepgram", "audio"),
    ("nova-3-medical", "deepgram", "audio"),
    ("aai/universal", "assemblyai", "audio"),
    ("aai/slam-1", "assemblyai", "audio"),
    ("openai/gpt-4o-transcribe", "openai", "file"),
    ("openai/gpt-4o-mini-transcribe", "openai", "file"),
    ("some-vendor/new-model", "pass-through", "audio"),
])
def test_profile_for_names_the_family_and_file_field(model: str, family: str, field: str) -> None:
    profile = profile_for(model)
    assert (profile.family, profile.file_field, profile.model) == (family, field, model)


def test_local_engine_models_get_the_local_profile() -> None:
    for model in ("tiny.en", "large-v3", "/models/whisper-ct2"):
        assert profile_for(model, "local").family == "local"


def test_unknown_model_passes_through_with_one_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        first = profile_for("vendor/unheard-of-1")
        again = profile_for("vendor/unheard-of-1")
    assert isinstance(first, PassThrough) and again is first
    assert [e["event"] for e in logs] == ["unknown_model_passed_through"]
    assert logs[0]["model"] == "vendor/unheard-of-1"
    options = {"language": "de", "diarize": True, "keywords": "a, b", "odd": 1}
    assert first.create_fields(options) == options  # untranslated, untouched


def test_registering_a_family_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        type("Again", (Profile,), {}, family="openai")


# --- options -----------------------------------------------------------------------------------

GENERIC = {"language": "en", "detect_language": True, "diarize": True, "speakers": 3,
           "keywords": ["sttwatch", "Kubernetes"]}


@pytest.mark.parametrize(("model", "expected"), [
    ("#g1_whisper-small", {"language": "en", "detect_language": True, "diarize": True,
                           "keywords": ["sttwatch", "Kubernetes"]}),
    ("#g1_nova-2-meeting", {"language": "en", "detect_language": True, "diarize": True,
                            "keywords": ["sttwatch", "Kubernetes"]}),
    ("nova-3", {"language": "en", "detect_language": True, "diarize": True,
                "keyterm": ["sttwatch", "Kubernetes"]}),
    ("aai/universal", {"language_code": "en", "language_detection": True,
                       "speaker_labels": True, "speakers_expected": 3,
                       "word_boost": ["sttwatch", "Kubernetes"]}),
    ("aai/slam-1", {"language_code": "en", "language_detection": True,
                    "speaker_labels": True, "speakers_expected": 3,
                    "keyterms_prompt": ["sttwatch", "Kubernetes"]}),
    ("openai/gpt-4o-transcribe", {"language": "en",
                                  "prompt": "Vocabulary: sttwatch, Kubernetes."}),
])
def test_generic_options_map_to_the_models_names(model: str, expected: dict[str, Any]) -> None:
    assert profile_for(model).create_fields(GENERIC) == expected


def test_own_names_pass_unchanged_and_win_over_generic_ones() -> None:
    aai = profile_for("aai/universal")
    fields = aai.create_fields({"language": "en", "language_code": "de", "punctuate": True,
                                "keywords": "a, b ,, c"})
    assert fields == {"language_code": "de", "punctuate": True, "word_boost": ["a", "b", "c"]}
    assert profile_for("#g1_nova-2-video").create_fields(
        {"smart_format": True, "paragraphs": True, "utterances": False}) == {
        "smart_format": True, "paragraphs": True, "utterances": False}


def test_speaker_count_turns_diarization_on_and_unsupported_options_warn_once() -> None:
    nova = profile_for("#g1_nova-2-voicemail")
    with structlog.testing.capture_logs() as logs:
        assert nova.create_fields({"speakers": 2}) == {"diarize": True}
        assert nova.create_fields({"speakers": 2}) == {"diarize": True}
    assert [(e["event"], e["option"]) for e in logs] == [("option_not_supported", "speakers")]
    assert nova.unsupported({"speakers": 2, "language": "en"}) == ["speakers"]
    assert profile_for("openai/gpt-4o-transcribe").unsupported(GENERIC) == ["diarize",
                                                                            "speakers"]


# --- results -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_results_render_in_all_four_formats(name: str) -> None:
    model, speakers, language, timed = CASES[name]
    result = golden(name)
    header = {"source": f"/in/{name}.wav", "backend": "aimlapi", "model": model}
    texts = dict(zip(FORMATS, render_all(FORMATS, result, header), strict=True))
    transcript = transcript_of(result, header)
    assert transcript.text and transcript.language == language

    for kind in ("txt", "srt", "vtt"):  # the exact renderings, reviewed when they change
        expected = GOLDEN / "expected" / f"{name}.{kind}"
        if UPDATE:
            expected.parent.mkdir(exist_ok=True)
            expected.write_text(texts[kind], encoding="utf-8")
        assert texts[kind] == expected.read_text(encoding="utf-8"), f"{name}.{kind} changed"

    cues = parsed_cues(texts["srt"], texts["vtt"])
    assert len(cues) >= 4
    assert squash(" ".join(text for _, _, text, _ in cues)) == squash(transcript.text)
    bound = transcript.duration if timed else None
    previous_end = 0.0
    for start, end, text, _ in cues:
        assert previous_end - 1e-9 <= start < end
        assert bound is None or end <= bound + 1e-9
        assert all(line.strip() for line in text.split("\n"))
        previous_end = end
    assert all(len(line) <= 42 for _, _, text, who in cues for line in
               ((f"{who}: " if who else "") + text).split("\n"))  # srt's lines, prefix included
    voices = {who for *_, who in cues}
    txt = texts["txt"]
    if speakers:
        assert voices == {"Speaker 1", "Speaker 2"}
        assert txt.startswith("Speaker 1: ") and "\n\nSpeaker 2: " in txt
        assert squash(re.sub(r"Speaker \d+: ", "", txt)) == squash(transcript.text)
    else:
        assert voices == {None} and "Speaker" not in txt
        assert squash(txt) == squash(transcript.text)

    body = json.loads(texts["json"])
    assert body["result"] == result and body["sttwatch"] == header
    assert body["transcript"]["text"] == transcript.text
    assert body["transcript"]["language"] == language


def test_assemblyai_milliseconds_become_seconds() -> None:
    result = golden("assemblyai_speakers")
    t = profile_for("aai/slam-1").parse(result)
    first, last = result["words"][0], result["words"][-1]
    assert (t.words[0].start, t.words[0].end) == (first["start"] / 1000, first["end"] / 1000)
    assert t.words[-1].end == last["end"] / 1000
    assert t.words[0].speaker == "1" and {u.speaker for u in t.utterances} == {"1", "2"}
    # audio_duration is whole seconds, rounded down here: it must not cut off the last word
    assert result["audio_duration"] < t.words[-1].end
    assert t.duration == t.words[-1].end


def test_deepgram_speakers_keep_paragraphs_and_utterances() -> None:
    t = profile_for("#g1_nova-2-meeting").parse(golden("deepgram_speakers"))
    assert [p.speaker for p in t.paragraphs] == ["1", "2", "1", "2"]
    assert [u.speaker for u in t.utterances] == ["1", "2", "1", "2"]
    assert all(w.confidence is not None and w.speaker for w in t.words)


def test_a_text_only_result_never_fails_the_job_whatever_the_model() -> None:
    """The bug this replaces: ``{"text": ...}`` failed after being billed."""
    for model in ("#g1_whisper-tiny", "aai/universal", "vendor/x", ""):
        txt = get_format("txt").render({"text": "Hello there."}, {"model": model})
        assert txt == "Hello there.\n"


@pytest.mark.parametrize("bad", [{}, {"status": "completed"}, {"text": None}, {"results": {}},
                                 ["not", "an", "object"]])
def test_an_unreadable_result_raises_render_error(bad: Any) -> None:
    with pytest.raises(RenderError, match=r"no transcript|not an object"):
        render_all(("txt", "srt"), bad, {"model": "aai/universal"})


def test_language_for_output_names() -> None:
    header = {"model": "x"}
    assert output_language(transcript_of(golden("openai_segments"), header)) == "en"
    assert output_language(transcript_of(golden("assemblyai_speakers"), header)) == "en"
    text_only = transcript_of(golden("openai_text"), header)
    assert output_language(text_only) == "und"
    assert output_language(text_only, configured="de-AT") == "de"
    assert output_language(None, configured="multi") == "und"


@pytest.mark.parametrize(("raw", "label"), [(0, "1"), (3, "4"), ("A", "1"), ("b", "2"),
                                            ("speaker_0", "1"), ("Alice", "Alice"),
                                            (None, None), (True, None), ("", None)])
def test_speaker_labels(raw: Any, label: str | None) -> None:
    assert speaker_label(raw) == label


# --- through the fake service ------------------------------------------------------------------

@pytest.fixture
def svc() -> Iterator[FakeService]:
    with FakeService(FakeConfig(key=KEY, task_seconds=0.02)) as service:
        yield service


def finished(backend: AimlApiBackend, gen_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = backend.fetch(gen_id)
        if status.state is TaskState.DONE:
            assert status.result is not None
            return status.result
        time.sleep(0.02)
    raise AssertionError("the task did not finish")


SPOKEN = "Hello and welcome. Thanks, glad to be here. Shall we begin?"


@pytest.mark.parametrize(("shape", "model", "speakers"), [
    ("deepgram", "#g1_nova-2-meeting", 2), ("deepgram", "#g1_whisper-tiny", 0),
    ("assemblyai", "aai/universal", 2), ("openai", "openai/gpt-4o-transcribe", 0),
    ("openai_segments", "openai/gpt-4o-mini-transcribe", 0),
])
def test_each_shape_from_the_service_renders(tmp_path: Path, svc: FakeService, shape: str,
                                             model: str, speakers: int) -> None:
    svc.update(result_shape=shape, speakers=speakers)
    backend = AimlApiBackend(svc.base_url, KEY, model, retries=1)
    try:
        created = backend.create(Request(1, model, path=make_fake_audio(tmp_path / "a.wav",
                                                                       SPOKEN)))
        result = finished(backend, created.generation_id)
    finally:
        backend.close()
    header = {"model": model, "backend": "aimlapi"}
    txt, srt_text, vtt_text = render_all(("txt", "srt", "vtt"), result, header)
    cues = parsed_cues(srt_text, vtt_text)
    assert squash(" ".join(c[2] for c in cues)) == SPOKEN
    if speakers:
        assert [c[3] for c in cues] == ["Speaker 1", "Speaker 2", "Speaker 1"]
        assert txt == ("Speaker 1: Hello and welcome.\n\nSpeaker 2: Thanks, glad to be here."
                       "\n\nSpeaker 1: Shall we begin?\n")
    else:
        assert squash(txt) == SPOKEN


def test_the_fake_takes_the_file_in_file_as_well_as_audio(svc: FakeService) -> None:
    for field in ("file", "audio"):
        resp = requests.post(f"{svc.base_url}/stt/create", timeout=5,
                             headers={"Authorization": f"Bearer {KEY}"},
                             data={"model": "openai/gpt-4o-transcribe"},
                             files={field: ("a.wav", b"FAKEAUDIO\nhi there", "audio/wav")})
        assert resp.status_code == 201, resp.text
    assert [(r.file_field, r.text) for r in svc.creates()] == [("file", "hi there"),
                                                              ("audio", "hi there")]


def test_openai_profile_sends_file_and_mapped_options_through_the_client(
        tmp_path: Path, svc: FakeService) -> None:
    model = "openai/gpt-4o-transcribe"
    backend = AimlApiBackend(svc.base_url, KEY, model, retries=1)
    try:
        backend.create(Request(2, model, path=make_fake_audio(tmp_path / "b.wav", "hi"),
                               options={"language": "en", "diarize": True,
                                        "keywords": ["sttwatch"]}))
    finally:
        backend.close()
    (record,) = svc.creates()
    assert record.file_field == "file"
    assert record.fields == {"model": model, "language": "en",
                             "prompt": "Vocabulary: sttwatch."}




# --- {lang} in output.name ---------------------------------------------------------------------

def test_lang_in_output_name_is_accepted_and_filled(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path, output={"name": "{stem}.{lang}.{format}",
                                              "formats": ["srt", "txt"]}))
    inbox = tmp_path / "inbox"
    source = make_fake_audio(inbox / "talk.mp3", "hi")
    place = Placement(source, inbox, cfg.output.formats, cfg.output)
    key = place.keys()[0]
    assert key == str(inbox / "talk.{lang}.{format}")  # known before the result is
    result = golden("assemblyai_speakers")
    lang = language_of(result, {"model": "aai/universal"})
    assert [p.name for p in place.paths(key, lang)] == ["talk.en.srt", "talk.en.txt"]
    assert not up_to_date(place, source.stat().st_mtime_ns)
    for path in place.paths(key, lang):
        path.write_text("x")
    assert up_to_date(place, source.stat().st_mtime_ns)  # whatever language it was
    assert place.on_disk(key)  # in any language
    assert next(k for k in place.all_keys() if not place.on_disk(k)) == str(
        inbox / "talk.mp3.{lang}.{format}")
    (inbox / "talk.en.txt").unlink()
    (inbox / "talk.mp3.de.txt").write_text("not ours: a longer name that only looks alike")
    assert not up_to_date(place, source.stat().st_mtime_ns)
    assert [p.name for p in place.paths(key)] == ["talk.und.srt", "talk.und.txt"]


def test_language_of_an_unreadable_result_falls_back() -> None:
    assert language_of({"odd": 1}, {"model": "aai/universal"}, "pt_BR") == "pt"
    assert language_of({"odd": 1}, {"model": "aai/universal"}) == "und"


def test_bad_lang_templates_are_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\{stem\}, \{name\}, \{lang\} and \{format\}"):
        load(write_config(tmp_path, output={"name": "{stem}.{language}.{format}"}))
