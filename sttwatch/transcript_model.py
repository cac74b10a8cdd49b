"""The one transcript model every result is read into, whatever model family produced it.

Model profiles (``sttwatch/profiles/``) turn a service result into a ``Transcript``; the
writers (``outputs.py``, ``cues.py``) only ever read a ``Transcript``, so a new result shape
is a new parser and never a change to the writers. Times are seconds from the start of the
recording; a speaker is a display label ("1", "2", ... or a name the service gave).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

UNDETERMINED = "und"  # ISO 639-2 "undetermined", what players expect for an unknown language


@dataclass(frozen=True)
class Word:
    """One recognised word with its timing; ``text`` carries punctuation when the service
    gave it."""

    text: str
    start: float
    end: float
    confidence: float | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class Span:
    """A timed stretch of text: an utterance, a segment or a sentence."""

    text: str
    start: float
    end: float
    speaker: str | None = None


@dataclass(frozen=True)
class Paragraph:
    """A paragraph for reading; its sentences carry times when the service gave them."""

    text: str
    speaker: str | None = None
    sentences: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """Everything the writers use. Only ``text`` is sure to be there: every list may be empty
    and ``language`` and ``duration`` may be unknown."""

    text: str
    words: tuple[Word, ...] = ()
    utterances: tuple[Span, ...] = ()
    paragraphs: tuple[Paragraph, ...] = ()
    language: str | None = None
    duration: float | None = None

    @property
    def has_speakers(self) -> bool:
        return (any(w.speaker for w in self.words) or any(u.speaker for u in self.utterances)
                or any(p.speaker for p in self.paragraphs))

    def as_json(self) -> dict[str, Any]:
        """The normalized fields stored beside the raw result in the json output."""
        return asdict(self)


def speaker_label(raw: Any) -> str | None:
    """A display label from any family's speaker id: Deepgram counts from 0 (0 -> "1"),
    AssemblyAI uses letters ("A" -> "1"), others may say "speaker_0" or a name (kept)."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return str(raw + 1) if raw >= 0 else None
    if not isinstance(raw, str) or not raw.strip():
        return None
    name = raw.strip()
    if len(name) == 1 and "A" <= name.upper() <= "Z":
        return str(ord(name.upper()) - ord("A") + 1)
    if match := re.fullmatch(r"(?i)(?:speaker|spk)?[ _-]?(\d+)", name):
        return str(int(match.group(1)) + 1)
    return name


def speaker_name(label: str) -> str:
    """How a speaker is shown in txt, srt and vtt: "Speaker 1", or the name the service gave."""
    return f"Speaker {label}" if label.isdigit() else label


def paragraphs_by_speaker(spans: Iterable[Span | Word]) -> tuple[Paragraph, ...]:
    """Consecutive spans (or words) of one speaker read as one paragraph; the service's own
    span boundaries are kept as sentences so their times stay usable for subtitles."""
    out: list[tuple[str | None, list[Span]]] = []
    for item in spans:
        span = Span(item.text, item.start, item.end, item.speaker)
        if out and out[-1][0] == span.speaker and span.speaker is not None:
            out[-1][1].append(span)
        else:
            out.append((span.speaker, [span]))
    return tuple(Paragraph(" ".join(s.text for s in group), speaker, tuple(group))
                 for speaker, group in out)


def words_as_spans(words: Sequence[Word]) -> tuple[Span, ...]:
    return tuple(Span(w.text, w.start, w.end, w.speaker) for w in words)


# OpenAI's verbose results name the language in English ("english"); file names want codes.
_LANGUAGE_NAMES = {
    "arabic": "ar", "bulgarian": "bg", "catalan": "ca", "chinese": "zh", "croatian": "hr",
    "czech": "cs", "danish": "da", "dutch": "nl", "english": "en", "estonian": "et",
    "finnish": "fi", "french": "fr", "german": "de", "greek": "el", "hebrew": "he",
    "hindi": "hi", "hungarian": "hu", "indonesian": "id", "italian": "it", "japanese": "ja",
    "korean": "ko", "latvian": "lv", "lithuanian": "lt", "malay": "ms", "norwegian": "no",
    "persian": "fa", "polish": "pl", "portuguese": "pt", "romanian": "ro", "russian": "ru",
    "serbian": "sr", "slovak": "sk", "slovenian": "sl", "spanish": "es", "swedish": "sv",
    "thai": "th", "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "vietnamese": "vi",
    "welsh": "cy",
}


def language_code(raw: Any) -> str | None:
    """A language tag from what a service says: "en", "en_us" and "en-US" -> "en";
    "english" -> "en"; "multi" and unreadable values -> None."""
    if not isinstance(raw, str):
        return None
    value = raw.strip().lower()
    if value in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[value]
    match = re.fullmatch(r"([a-z]{2,3})(?:[-_][a-z0-9]{2,8})*", value)
    if not match or match.group(1) in ("mul", "multi", UNDETERMINED):
        return None
    return match.group(1)


def output_language(transcript: Transcript | None, configured: Any = None) -> str:
    """The value of ``{lang}`` in ``output.name``: the language the result reports, else the
    configured ``language`` option, else "und". Only the primary tag ("en"), since that is
    what media players match in ``talk.en.srt``."""
    detected = transcript.language if transcript is not None else None
    return language_code(detected) or language_code(configured) or UNDETERMINED
