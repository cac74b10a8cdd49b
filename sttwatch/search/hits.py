"""From the pages the index ranked to hits: the cue each match is said in, its time, and the
cue's text with the matched words marked."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..store.search import IndexedCue, PageHit, fold, holds, term_at, word_spans, words
from .query import Query


@dataclass(frozen=True)
class Hit:
    path: str
    start: float | None
    end: float | None
    text: str
    marks: tuple[tuple[int, int], ...]  # character spans of ``text`` that matched
    score: float
    job_id: int | None
    speaker: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "start": self.start, "end": self.end, "text": self.text,
                "speaker": self.speaker, "score": round(self.score, 6),
                "job_id": self.job_id}


def clock(seconds: float | None) -> str:
    """00:12:34 (hours as many digits as they need); "--:--:--" for an untimed cue."""
    if seconds is None:
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def marked(text: str, marks: Sequence[tuple[int, int]], before: str = "[",
           after: str = "]") -> str:
    merged: list[list[int]] = []
    for a, b in sorted(marks):  # a phrase reads as one mark: "[second quarter]"
        if merged and (a <= merged[-1][1] or not text[merged[-1][1]:a].strip()):
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, at = [], 0
    for a, b in merged:
        out += [text[at:a], before, text[a:b], after]
        at = b
    return "".join([*out, text[at:]])


class _Spans:
    """The words of each cue, read when first asked for."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._texts = texts
        self._done: dict[int, list[tuple[str, int, int]]] = {}

    def __getitem__(self, k: int) -> list[tuple[str, int, int]]:
        if k not in self._done:
            self._done[k] = list(word_spans(self._texts[k]))
        return self._done[k]


SNIPPET = 160  # characters of a cue shown; an untimed txt paragraph can be a page long


def snippet(text: str, marks: Sequence[tuple[int, int]],
            width: int = SNIPPET) -> tuple[str, tuple[tuple[int, int], ...]]:
    """A long cue cut to ``width`` characters around its first mark, on word boundaries,
    with "…" where it was cut; the marks moved along."""
    if len(text) <= width:
        return text, tuple(marks)
    first = min(marks)[0] if marks else 0
    a = max(0, first - width // 3)
    a = text.rfind(" ", 0, a) + 1 if a > 0 else 0
    b = min(len(text), a + width)
    if b < len(text) and (cut := text.rfind(" ", a, b)) > first:
        b = cut
    head, tail = ("…" if a > 0 else ""), ("…" if b < len(text) else "")
    shift = len(head) - a
    kept = tuple((x + shift, y + shift) for x, y in marks if x >= a and y <= b)
    return head + text[a:b] + tail, kept


def _speaks(cue: IndexedCue, speakers: Sequence[str]) -> bool:
    names = set(words(cue.speaker)) if cue.speaker else set()
    return all(s in names for s in speakers)


def locate(page: PageHit, query: Query) -> list[Hit]:
    """Hits in one page, in time order: a cue (with the next one, for a phrase cut by a cue
    boundary) in which every term occurs and at least one starts. Pages whose terms are
    spread over cues farther apart give their first cue holding any term. A page that does
    not hold every term (a phrase's words not next to each other) gives none."""
    cues = page.cues
    if not holds(cues, query.terms):
        return []
    texts = [unicodedata.normalize("NFC", c.text) for c in cues]
    spans = _Spans(texts)
    probes = {w for t in query.terms for w in t.words}
    hits: list[Hit] = []
    i = 0
    while i < len(cues):
        # Most cues of a long page hold no term: a substring test skips them unread.
        folded = fold(texts[i]) if probes else ""
        if not _speaks(cues[i], query.speakers) or (
                probes and not any(w in folded for w in probes)):
            i += 1
            continue
        window = [(k, s) for k in (i, i + 1) if k < len(cues) for s in spans[k]]
        seq = [w for _k, (w, _a, _b) in window]
        found: list[tuple[int, int]] = []  # (window index, word count) of each match
        ok = True
        for term in query.terms:
            n = len(term.words)
            at = [j for j in range(len(seq)) if term_at(term, seq, j)]
            inside = [j for j in at if window[j + n - 1][0] == i]
            if not at:
                ok = False
                break
            # the next cue only for a term this cue lacks (or a phrase running into it)
            found += [(j, n) for j in (inside or at[:1])]
        starts_here = any(window[j][0] == i for j, _n in found) or not query.terms
        if not ok or not starts_here:
            i += 1
            continue
        last = max((window[j + n - 1][0] for j, n in found), default=i)
        hits.append(_hit(page, cues, texts, window, found, i, last))
        i = last + 1
    if not hits and query.terms:
        hits += _fallback(page, query, cues, texts, spans)
    return hits


def _hit(page: PageHit, cues: Sequence[IndexedCue], texts: list[str],
         window: list[tuple[int, tuple[str, int, int]]],
         found: list[tuple[int, int]], first: int, last: int) -> Hit:
    text = " ".join(texts[first:last + 1])
    offset = {k: sum(len(t) + 1 for t in texts[first:k]) for k in range(first, last + 1)}
    marks = []
    for j, n in found:
        for k, (_w, a, b) in window[j:j + n]:
            if k <= last:
                marks.append((offset[k] + a, offset[k] + b))
    return Hit(page.path, cues[first].start, cues[last].end, text, tuple(sorted(set(marks))),
               page.score, page.job_id, cues[first].speaker)


def _fallback(page: PageHit, query: Query, cues: Sequence[IndexedCue], texts: list[str],
              spans: _Spans) -> list[Hit]:
    """The terms are all in the page but farther apart than two cues: the first cue that
    holds one (of the asked speaker), so the hit still shows where to listen."""
    for k in range(len(cues)):
        seq = [w for w, _a, _b in spans[k]]
        found = [(j, len(t.words)) for t in query.terms for j in range(len(seq))
                 if term_at(t, seq, j)]
        if found and _speaks(cues[k], query.speakers):
            window = [(k, s) for s in spans[k]]
            return [_hit(page, cues, texts, window, found, k, k)]
    return []


def find_hits(pages: Sequence[PageHit], query: Query, limit: int) -> list[Hit]:
    """Best page first, then time order within a page."""
    out: list[Hit] = []
    for page in pages:
        out += locate(page, query)
        if len(out) >= limit:
            break
    return out[:limit]
