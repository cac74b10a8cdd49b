"""Times in a trimmed upload, mapped back onto the recording's own timeline.

With ``api.trim_silence`` the service hears only the speech: the kept stretches of the
recording, butted together. The map from the upload's clock to the recording's is a list of
pieces ``(upload_start, source_start, length)``, contiguous and in order on the upload side.
It is stored on the job (it must outlive a restart between create and fetch) and applied in
one place, when a stored result is read into a ``Transcript`` for the writers; the raw result
stays as the service sent it.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .transcript_model import Paragraph, Span, Transcript, Word

Piece = tuple[float, float, float]  # (start in the upload, start in the source, length)
Timeline = tuple[Piece, ...]


def to_text(timeline: Timeline | None) -> str | None:
    """The map as the job row stores it."""
    return json.dumps([list(p) for p in timeline]) if timeline else None


def from_text(text: str | None) -> Timeline | None:
    return parse(json.loads(text)) if text else None


def parse(raw: Any) -> Timeline | None:
    """A map from its JSON form (a list of 3-number lists); None for none or an empty one."""
    if not raw:
        return None
    return tuple((float(a), float(b), float(c)) for a, b, c in raw)


def map_time(t: float, timeline: Sequence[Piece], *, end: bool = False) -> float:
    """The source time of upload time ``t``. A time exactly on a cut belongs to the piece
    before it when it ends something (``end``) and to the piece after it when it starts
    something, so a word ending at a cut is not stretched over the silence cut there."""
    starts = [p[0] for p in timeline]
    i = (bisect.bisect_left(starts, t) if end else bisect.bisect_right(starts, t)) - 1
    i = min(max(i, 0), len(timeline) - 1)
    up, src, length = timeline[i]
    return round(src + min(max(t - up, 0.0), length) if i < len(timeline) - 1 else
                 src + max(t - up, 0.0), 3)


def _span(s: Span, timeline: Timeline) -> Span:
    return replace(s, start=map_time(s.start, timeline), end=map_time(s.end, timeline, end=True))


def _word(w: Word, timeline: Timeline) -> Word:
    return replace(w, start=map_time(w.start, timeline), end=map_time(w.end, timeline, end=True))


def remap(transcript: Transcript, timeline: Timeline | None) -> Transcript:
    """Every time in ``transcript`` on the recording's clock; its duration is the
    recording's."""
    if not timeline:
        return transcript
    _up, src, length = timeline[-1]
    duration = transcript.duration
    if duration is not None:
        duration = round(max(src + length, map_time(duration, timeline, end=True)), 3)
    return replace(
        transcript,
        words=tuple(_word(w, timeline) for w in transcript.words),
        utterances=tuple(_span(u, timeline) for u in transcript.utterances),
        paragraphs=tuple(Paragraph(p.text, p.speaker,
                                   tuple(_span(s, timeline) for s in p.sentences))
                         for p in transcript.paragraphs),
        duration=duration)


def kept_seconds(timeline: Timeline) -> float:
    return sum(p[2] for p in timeline)
