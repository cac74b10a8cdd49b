"""Reading a finished result loosely, and laying its text out as subtitle cues.

Results follow the Deepgram-shaped payload of shared/aimlapi-stt.md: only
``results.channels[0].alternatives[0].transcript`` is guaranteed, so every richer field
(words, utterances, paragraphs, metadata.duration) is read loosely and skipped when malformed.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

Segment = tuple[str, float, float]  # text, start, end (seconds)


def _get(obj: Any, *path: str | int) -> Any:
    """Walk a loosely-typed payload, yielding None instead of raising on any wrong shape."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, Sequence) or isinstance(obj, str) or len(obj) <= key:
                return None
        elif not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    """Timings come from JSON, so booleans, strings, NaN and infinities must not pass."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _text(item: Any, *keys: str) -> str | None:
    """The first non-blank string among ``keys``, inner whitespace collapsed to one space."""
    for key in keys:
        value = _get(item, key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return None


def transcript_text(result: Mapping[str, Any]) -> str:
    """Return the one field the service guarantees; without it the payload is not a result."""
    text = _get(result, "results", "channels", 0, "alternatives", 0, "transcript")
    if not isinstance(text, str):
        raise ValueError("result has no results.channels[0].alternatives[0].transcript string")
    return text.strip()


def _paragraphs(result: Mapping[str, Any]) -> list[Any]:
    """Deepgram nests paragraphs under the alternative; the AI/ML API docs show them under
    ``results`` (see aimlapi-stt.md), so both places are accepted."""
    for where in (("results",), ("results", "channels", 0, "alternatives", 0)):
        if found := _list(_get(result, *where, "paragraphs", "paragraphs")):
            return found
    return []


def _segments(items: Any, *keys: str) -> list[Segment]:
    """All-or-nothing: one untimed entry would turn every later cue time into a guess."""
    out = []
    for item in _list(items):
        start, end = _number(_get(item, "start")), _number(_get(item, "end"))
        if start is None or end is None:
            return []
        if text := _text(item, *keys):
            out.append((text, start, end))
    return out


def _layout(text: str) -> list[str]:
    """Two balanced lines read faster than a full line followed by a stub."""
    if len(text) <= LINE_WIDTH:
        return [text]
    words = text.split()
    splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    fitting = [s for s in splits if max(map(len, s)) <= LINE_WIDTH]
    if fitting:
        return list(min(fitting, key=lambda s: max(map(len, s))))
    return textwrap.wrap(text, LINE_WIDTH, break_long_words=False, break_on_hyphens=False)


def _fits(words: Sequence[str]) -> bool:
    return len(_layout(" ".join(words))) <= MAX_LINES


def _ends(text: str, marks: tuple[str, ...]) -> bool:
    return text.rstrip(_CLOSERS).endswith(marks)


def _group_words(words: list[Segment]) -> list[Segment]:
    """Greedy grouping: sentence ends and pauses close a cue; a cue that would overflow is cut
    back to its last clause mark when that leaves the first part reasonably full."""
    cues: list[Segment] = []
    cur: list[Segment] = []

    def close(upto: int) -> None:
        nonlocal cur
        part, cur = cur[:upto], cur[upto:]
        cues.append((" ".join(w[0] for w in part), part[0][1], max(w[2] for w in part)))

    for word in words:
        if cur and word[1] - cur[-1][2] > PAUSE_SECONDS:
            close(len(cur))
        while cur and not (_fits([w[0] for w in [*cur, word]])
                           and word[2] - cur[0][1] <= MAX_CUE_SECONDS):
            close(next((i for i in range(len(cur) - 1, 0, -1) if _ends(cur[i - 1][0], _CLAUSE_END)
                        and len(" ".join(w[0] for w in cur[:i])) >= LINE_WIDTH // 2), len(cur)))
        cur.append(word)
        if _ends(word[0], _SENTENCE_END):
            close(len(cur))
    if cur:
        close(len(cur))
    nexts = [c[1] for c in cues[1:]] + [float("inf")]
    return [(text, start, max(end, min(start + MIN_CUE_SECONDS, nxt)))
            for (text, start, end), nxt in zip(cues, nexts, strict=False)]


def _chunks(text: str) -> list[str]:
    """Fill cues greedily, but end one at a sentence end once it holds a line's worth."""
    chunks: list[str] = []
    cur: list[str] = []
    for word in text.split():
        full = bool(cur) and _ends(cur[-1], _SENTENCE_END) and len(" ".join(cur)) >= LINE_WIDTH
        if cur and (full or not _fits([*cur, word])):
            chunks.append(" ".join(cur))
            cur = []
        cur.append(word)
    return [*chunks, " ".join(cur)] if cur else chunks


def _spread(text: str, start: float, end: float) -> list[Segment]:
    """Without word timings the best guess is that time runs in proportion to characters."""
    chunks = _chunks(text)
    marks = [0]
    for chunk in chunks:
        marks.append(marks[-1] + len(chunk) + 1)
    scale = (end - start) / marks[-1]
    return [(c, start + a * scale, start + b * scale)
            for c, a, b in zip(chunks, marks, marks[1:], strict=False)]


@dataclass(frozen=True)
class Cue:
    """A subtitle cue in whole milliseconds, so every format prints exactly the same times."""

    start_ms: int
    end_ms: int
    lines: tuple[str, ...]


def subtitle_cues(result: Mapping[str, Any]) -> list[Cue]:
    """Use the most precise timing source present (words, utterances, paragraph sentences,
    the duration), then force the times into a valid sequence whatever the payload claimed:
    starts non-decreasing and after the previous end where possible, positive length,
    inside [0, duration] when the duration is known."""
    transcript = transcript_text(result)
    if not transcript:
        return []
    duration = _number(_get(result, "metadata", "duration"))
    limit = int(duration * 1000) if duration and duration >= 0.002 else None
    alternative = _get(result, "results", "channels", 0, "alternatives", 0)
    raw = _group_words(_segments(_get(alternative, "words"), "punctuated_word", "word"))
    if not raw:
        timed = [_segments(_get(p, "sentences"), "text") for p in _paragraphs(result)]
        segments = _segments(_get(result, "results", "utterances"), "transcript") or (
            [s for group in timed for s in group] if all(timed) else [])
        segments.sort(key=lambda seg: seg[1])
        raw = [c for text, s, e in segments for c in _spread(text, s, max(s, e))]
    if not raw:
        span = limit / 1000 if limit else UNTIMED_CUE_SECONDS * len(_chunks(transcript))
        raw = _spread(transcript, 0.0, span)
    cues: list[Cue] = []
    prev_start = prev_end = 0
    for text, start, end in raw:
        s = max(round(start * 1000), prev_end)
        e = max(round(end * 1000), s + 1)
        if limit is not None and e > limit:
            e = limit
            s = min(s, max(prev_start, e - 1))
        cues.append(Cue(s, e, tuple(_layout(text))))
        prev_start, prev_end = s, max(prev_end, e)
    return cues


def paragraph_texts(result: Mapping[str, Any]) -> list[str]:
    """The paragraphs (or utterances) the service found, else the transcript as one."""
    transcript = transcript_text(result)
    paragraphs = [" ".join(t for s in _list(_get(p, "sentences")) if (t := _text(s, "text")))
                  for p in _paragraphs(result)]
    utterances = [_text(u, "transcript") for u in _list(_get(result, "results", "utterances"))]
    return [p for p in paragraphs if p] or [u for u in utterances if u] or [transcript]
