"""Laying a transcript out as subtitle cues and reading paragraphs.

Works on the one ``Transcript`` model (sttwatch/transcript_model.py), whatever family made
it: every timing source is optional there, so cues use the most precise one present.
``Layout`` keeps one transcript's cues and paragraphs once cut, for everything a finish
makes of them (the txt, the srt, the vtt, the search entries).
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from .transcript_model import Paragraph, Span, Transcript, speaker_name

LINE_WIDTH = 42  # common broadcast subtitle limit; longer lines cannot be read in time
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
PAUSE_SECONDS = 0.8  # a silence this long reads as a new thought, so the cue ends there
MIN_CUE_SECONDS = 1.0  # lone words would flash by; stretched only into the following silence
UNTIMED_CUE_SECONDS = 4.0  # per cue when neither timings nor the duration are known
TXT_WIDTH = 80
_SENTENCE_END = (".", "?", "!", "\u2026")
_CLAUSE_END = (",", ";", ":", "\u2014", "\u2013")  # em and en dash
_CLOSERS = "\"')]}\u00bb\u201d\u2019"  # a period inside quotes still ends the sentence


Piece = tuple[str, float, float, str | None]  # text, start, end (seconds), speaker name


def _wrap(text: str) -> list[str]:
    """Two balanced lines read faster than a full line followed by a stub."""
    if len(text) <= LINE_WIDTH:
        return [text]
    words = text.split()
    at = _balanced_split(words)
    if at is not None:
        return [" ".join(words[:at]), " ".join(words[at:])]
    return textwrap.wrap(text, LINE_WIDTH, break_long_words=False, break_on_hyphens=False)


def _balanced_split(words: Sequence[str]) -> int | None:
    """Where to split ``words`` into two lines of at most LINE_WIDTH whose longer one is
    shortest (the first such place); None when no split fits. Measured from the words'
    lengths, without building each candidate pair of lines: a cue being filled is wrapped
    again at every word it takes."""
    total = sum(map(len, words)) + len(words) - 1  # len(" ".join(words))
    best, at, left = LINE_WIDTH + 1, None, -1
    for i, word in enumerate(words[:-1], 1):
        left += len(word) + 1  # len(" ".join(words[:i]))
        longer = max(left, total - left - 1)
        if longer < best:
            best, at = longer, i
    return at


def _prefix(speaker: str | None) -> str:
    return f"{speaker}: " if speaker else ""


def _layout(text: str, speaker: str | None = None) -> list[str]:
    """Lines for ``text``, leaving room on the first for the "Speaker 1: " that srt puts
    there, so every format shares one layout."""
    prefix = _prefix(speaker)
    lines = _wrap(prefix + text)
    if prefix:
        lines[0] = lines[0][len(prefix):].strip()
        if not lines[0]:
            del lines[0]
    return lines


def _fits(words: Sequence[str], speaker: str | None) -> bool:
    return len(_wrap(_prefix(speaker) + " ".join(words))) <= MAX_LINES


def _ends(text: str, marks: tuple[str, ...]) -> bool:
    return text.rstrip(_CLOSERS).endswith(marks)


def _group_words(words: list[Piece]) -> list[Piece]:
    """Greedy grouping: sentence ends, pauses and a change of speaker close a cue; a cue that
    would overflow is cut back to its last clause mark when that leaves the first part
    reasonably full."""
    cues: list[Piece] = []
    cur: list[Piece] = []

    def close(upto: int) -> None:
        nonlocal cur
        part, cur = cur[:upto], cur[upto:]
        cues.append((" ".join(w[0] for w in part), part[0][1], max(w[2] for w in part),
                     part[0][3]))

    for word in words:
        if cur and (word[1] - cur[-1][2] > PAUSE_SECONDS or word[3] != cur[-1][3]):
            close(len(cur))
        while cur and not (_fits([w[0] for w in [*cur, word]], word[3])
                           and word[2] - cur[0][1] <= MAX_CUE_SECONDS):
            close(next((i for i in range(len(cur) - 1, 0, -1) if _ends(cur[i - 1][0], _CLAUSE_END)
                        and len(" ".join(w[0] for w in cur[:i])) >= LINE_WIDTH // 2), len(cur)))
        cur.append(word)
        if _ends(word[0], _SENTENCE_END):
            close(len(cur))
    if cur:
        close(len(cur))
    nexts = [c[1] for c in cues[1:]] + [float("inf")]
    return [(text, start, max(end, min(start + MIN_CUE_SECONDS, nxt)), who)
            for (text, start, end, who), nxt in zip(cues, nexts, strict=False)]


def _chunks(text: str, speaker: str | None) -> list[str]:
    """Fill cues greedily, but end one at a sentence end once it holds a line's worth."""
    chunks: list[str] = []
    cur: list[str] = []
    for word in text.split():
        full = bool(cur) and _ends(cur[-1], _SENTENCE_END) and len(" ".join(cur)) >= LINE_WIDTH
        if cur and (full or not _fits([*cur, word], speaker)):
            chunks.append(" ".join(cur))
            cur = []
        cur.append(word)
    return [*chunks, " ".join(cur)] if cur else chunks


def _spread(text: str, start: float, end: float, speaker: str | None = None) -> list[Piece]:
    """Without word timings the best guess is that time runs in proportion to characters."""
    chunks = _chunks(text, speaker)
    marks = [0]
    for chunk in chunks:
        marks.append(marks[-1] + len(chunk) + 1)
    scale = (end - start) / marks[-1]
    return [(c, start + a * scale, start + b * scale, speaker)
            for c, a, b in zip(chunks, marks, marks[1:], strict=False)]


@dataclass(frozen=True)
class Cue:
    """A subtitle cue in whole milliseconds, so every format prints exactly the same times.
    ``speaker`` is the name to show ("Speaker 1"); ``lines`` leave room for it on the first."""

    start_ms: int
    end_ms: int
    lines: tuple[str, ...]
    speaker: str | None = None


def _name(label: str | None) -> str | None:
    return speaker_name(label) if label else None


def _timed_spans(t: Transcript) -> list[Span]:
    """Utterances (or segments), else paragraph sentences when every paragraph has them."""
    if t.utterances:
        spans = list(t.utterances)
    elif t.paragraphs and all(p.sentences for p in t.paragraphs):
        spans = [Span(s.text, s.start, s.end, s.speaker or p.speaker)
                 for p in t.paragraphs for s in p.sentences]
    else:
        return []
    return sorted(spans, key=lambda span: span.start)


def subtitle_cues(t: Transcript) -> list[Cue]:
    """Use the most precise timing source present (words, utterances, paragraph sentences,
    the duration), then force the times into a valid sequence whatever the payload claimed:
    starts non-decreasing and after the previous end where possible, positive length,
    inside [0, duration] when the duration is known."""
    if not t.text:
        return []
    duration = t.duration
    limit = int(duration * 1000) if duration and duration >= 0.002 else None
    raw = _group_words([(w.text, w.start, w.end, _name(w.speaker)) for w in t.words])
    if not raw:
        raw = [c for span in _timed_spans(t)
               for c in _spread(span.text, span.start, max(span.start, span.end),
                                _name(span.speaker))]
    if not raw:
        span = limit / 1000 if limit else UNTIMED_CUE_SECONDS * len(_chunks(t.text, None))
        raw = _spread(t.text, 0.0, span)
    cues: list[Cue] = []
    prev_start = prev_end = 0
    for text, start, end, speaker in raw:
        s = max(round(start * 1000), prev_end)
        e = max(round(end * 1000), s + 1)
        if limit is not None and e > limit:
            e = limit
            s = min(s, max(prev_start, e - 1))
        cues.append(Cue(s, e, tuple(_layout(text, speaker)), speaker))
        prev_start, prev_end = s, max(prev_end, e)
    return cues


def reading_paragraphs(t: Transcript) -> list[Paragraph]:
    """The paragraphs the service (or its utterances) gave, else the transcript as one."""
    return [p for p in t.paragraphs if p.text] or ([Paragraph(t.text)] if t.text else [])


@dataclass(frozen=True)
class Layout:
    """A transcript with its subtitle cues and reading paragraphs, each cut at the first ask
    and kept: the srt, the vtt and the search index of one finish show the same cues, and
    cutting them is the costliest part of rendering."""

    transcript: Transcript

    @functools.cached_property
    def cues(self) -> tuple[Cue, ...]:
        return tuple(subtitle_cues(self.transcript))

    @functools.cached_property
    def paragraphs(self) -> tuple[Paragraph, ...]:
        return tuple(reading_paragraphs(self.transcript))
