"""OpenAI's transcription models: ``openai/gpt-4o-transcribe``, ``openai/gpt-4o-mini-
transcribe`` (and ``openai/whisper-1``). Their schema takes the file in ``file``, not
``audio``. Options: ``language`` (ISO 639-1) and ``prompt``; generic ``keywords`` become a
prompt naming them. Language detection is automatic; no diarization.

Result shape: ``{"text": ...}``, in the verbose form also ``language`` (an English name such
as "english"), ``duration``, ``words`` and ``segments`` (times in seconds; a diarizing model
adds ``speaker`` to segments).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..transcript_model import Transcript, language_code, paragraphs_by_speaker
from . import AUTOMATIC, Profile, keyword_list, loose, read_spans, read_words


def read_openai(result: Mapping[str, Any]) -> Transcript | None:
    text = result.get("text")
    if not isinstance(text, str) or "results" in result:
        return None
    words = read_words(result.get("words"), ["word", "text"])
    segments = read_spans(result.get("segments"), ["text"])
    paragraphs = paragraphs_by_speaker(segments) if any(s.speaker for s in segments) else ()
    duration = loose.number(result.get("duration"))
    if duration is None and loose.get(result, "usage", "type") == "duration":
        duration = loose.number(loose.get(result, "usage", "seconds"))
    return Transcript(" ".join(text.split()), words, segments, paragraphs,
                      language_code(result.get("language")), duration)


class OpenAiProfile(Profile, family="openai"):
    models: ClassVar[tuple[str, ...]] = (r"(openai/)?gpt-4o(-mini)?-transcribe[\w.-]*",
                                         r"openai/whisper-1")
    file_field: ClassVar[str] = "file"
    looseness: ClassVar[int] = 2
    option_names: ClassVar[Mapping[str, str]] = {
        "language": "language", "detect_language": AUTOMATIC, "keywords": "prompt"}

    @staticmethod
    def read(result: Mapping[str, Any]) -> Transcript | None:
        return read_openai(result)

    def convert(self, name: str, value: Any) -> Any:
        if name == "keywords":  # the prompt is the only way to steer its vocabulary
            return "Vocabulary: " + ", ".join(keyword_list(value)) + "."
        if name == "language":
            return language_code(value) or value
        return value
