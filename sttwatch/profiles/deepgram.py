"""Deepgram's models (nova-2 and its variants, nova-3) and the Deepgram result shape, which
the endpoint also uses for whisper and the local engine imitates (shared/aimlapi-stt.md).

Times are seconds. Only ``results.channels[0].alternatives[0].transcript`` is sure to be
there; words, utterances, paragraphs and the detected language are read when present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..transcript_model import (
    Paragraph,
    Transcript,
    language_code,
    paragraphs_by_speaker,
    speaker_label,
)
from . import Profile, loose, read_spans, read_words

_ALTERNATIVE = ("results", "channels", 0, "alternatives", 0)


def _paragraphs(result: Mapping[str, Any]) -> tuple[Paragraph, ...]:
    """Deepgram nests paragraphs under the alternative; the AI/ML API docs show them under
    ``results`` (see aimlapi-stt.md), so both places are accepted."""
    for where in (("results",), _ALTERNATIVE):
        if found := loose.items(loose.get(result, *where, "paragraphs", "paragraphs")):
            break
    else:
        return ()
    out = []
    for p in found:
        texts = [t for s in loose.items(loose.get(p, "sentences")) if (t := loose.text(s, "text"))]
        if texts:
            out.append(Paragraph(" ".join(texts), speaker_label(loose.get(p, "speaker")),
                                 read_spans(loose.get(p, "sentences"), ["text"])))
    return tuple(out)


def read_deepgram(result: Mapping[str, Any]) -> Transcript | None:
    text = loose.get(result, *_ALTERNATIVE, "transcript")
    if not isinstance(text, str):
        return None
    alternative = loose.get(result, *_ALTERNATIVE)
    words = read_words(loose.get(alternative, "words"), ["punctuated_word", "word"])
    utterances = read_spans(loose.get(result, "results", "utterances"), ["transcript"])
    paragraphs = (_paragraphs(result) or paragraphs_by_speaker(utterances)
                  or (paragraphs_by_speaker(words) if any(w.speaker for w in words) else ()))
    channel = loose.get(result, "results", "channels", 0)
    language = (language_code(loose.get(channel, "detected_language"))
                or language_code(loose.get(alternative, "languages", 0))
                or language_code(loose.get(result, "metadata", "language")))
    duration = loose.number(loose.get(result, "metadata", "duration"))
    return Transcript(text.strip(), words, utterances, paragraphs, language, duration)


class DeepgramShaped(Profile):
    """Shared by the families whose results come in Deepgram's shape."""

    @staticmethod
    def read(result: Mapping[str, Any]) -> Transcript | None:
        return read_deepgram(result)


class NovaProfile(DeepgramShaped, family="deepgram"):
    """nova-2 (general, meeting, phonecall, finance, medical, video, voicemail, ...) and
    nova-3. Deepgram has no speaker-count option, so ``speakers`` only turns on ``diarize``.
    nova-3 takes ``keyterm`` where nova-2 takes ``keywords``."""

    models: ClassVar[tuple[str, ...]] = (r"(#g1_|deepgram/)?nova-[23](-[\w.-]+)?",)
    option_names: ClassVar[Mapping[str, str]] = {
        "language": "language", "detect_language": "detect_language", "diarize": "diarize",
        "keywords": "keywords"}

    def option_name(self, name: str) -> str | None:
        if name == "keywords" and re.search(r"(^|[_/])nova-3", self.model, re.IGNORECASE):
            return "keyterm"
        return super().option_name(name)
