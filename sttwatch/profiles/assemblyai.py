"""AssemblyAI's models: ``aai/universal`` and ``aai/slam-1``.

Result shape (AssemblyAI's transcript object): ``text``, ``words`` and ``utterances`` with
``start``/``end`` in **milliseconds** and letter speakers ("A", "B"), ``language_code``
("en_us"), ``audio_duration`` in whole seconds. slam-1 takes ``keyterms_prompt`` where
universal takes ``word_boost``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..transcript_model import Paragraph, Transcript, language_code, paragraphs_by_speaker
from . import Profile, loose, read_spans, read_words

MS = 0.001
_MARKERS = ("audio_duration", "language_code", "utterances", "speech_model", "audio_url",
            "acoustic_model", "language_detection")


def read_assemblyai(result: Mapping[str, Any]) -> Transcript | None:
    text = result.get("text")
    first_word = loose.get(result, "words", 0)
    if not isinstance(text, str) or not (any(k in result for k in _MARKERS)
                                         or loose.text(first_word, "text")):
        return None
    words = read_words(result.get("words"), ["text"], MS)
    utterances = read_spans(result.get("utterances"), ["text"], MS)
    sections = read_spans(result.get("paragraphs"), ["text"], MS)  # the /paragraphs answer
    paragraphs = (tuple(Paragraph(s.text, s.speaker, (s,)) for s in sections)
                  or paragraphs_by_speaker(utterances)
                  or (paragraphs_by_speaker(words) if any(w.speaker for w in words) else ()))
    # audio_duration is whole seconds: never let it cut off the last word.
    ends = [w.end for w in words] + [u.end for u in utterances]
    duration = loose.number(result.get("audio_duration"))
    if duration is not None and ends:
        duration = max(duration, *ends)
    return Transcript(text.strip(), words, utterances, paragraphs,
                      language_code(result.get("language_code")), duration)


class AssemblyAiProfile(Profile, family="assemblyai"):
    models: ClassVar[tuple[str, ...]] = (r"(aai|assemblyai)/[\w.-]+",)
    looseness: ClassVar[int] = 1
    option_names: ClassVar[Mapping[str, str]] = {
        "language": "language_code", "detect_language": "language_detection",
        "diarize": "speaker_labels", "speakers": "speakers_expected", "keywords": "word_boost"}

    @staticmethod
    def read(result: Mapping[str, Any]) -> Transcript | None:
        return read_assemblyai(result)

    def option_name(self, name: str) -> str | None:
        if name == "keywords" and re.search(r"slam-1", self.model, re.IGNORECASE):
            return "keyterms_prompt"
        return super().option_name(name)

    def convert(self, name: str, value: Any) -> Any:
        if name == "speakers":
            return int(value)
        return super().convert(name, value)
