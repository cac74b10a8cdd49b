"""The search index: a store role of its own, beside the job transitions.

A recording's transcript is kept as its cues (start, end, speaker, text), in pages of at
most ``PAGE_WORDS`` words; the engine indexes the set of each page's words, without their
positions (SQLite FTS5 ``detail=none``, PostgreSQL a Bloom filter of them), finds the pages
holding every word and ranks them; phrases are then checked here, in the page's cues read
back (``holds``), which also find and show the cue each term is said in (sttwatch/search/).
Entries are kept by the recording's path: indexing a path replaces what it had, ``forget``
drops them.

Words are cut and folded here, once, before either engine sees them (letters and digits,
accents dropped, case folded): both engines then index the same tokens, and the hits found
in the cues agree with what the engine matched, whatever language the transcript is in.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .model import Job

PAGE_WORDS = 2000  # a page's words fit in the 32 KiB zlib reaches (sttwatch/store/searchpack.py)
_WORD = re.compile(r"[^\W_]+")


def fold(word: str) -> str:
    """A word as the index keeps it: accents dropped, case folded."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def word_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """(folded word, start, end) of each word of ``text`` (NFC), for marking hits in it."""
    for m in _WORD.finditer(text):
        folded = fold(m.group())
        if folded:
            yield folded, m.start(), m.end()


def words(text: str) -> list[str]:
    return [w for w, _s, _e in word_spans(unicodedata.normalize("NFC", text))]


def page_words(cues: Sequence[IndexedCue]) -> list[str]:
    """The page's folded words in order, across its cues."""
    out: list[str] = []
    for c in cues:
        # ASCII: lowering first cuts the same words and folds them as ``words`` does
        out += _WORD.findall(c.text.lower()) if c.text.isascii() else words(c.text)
    return out


def term_at(term: Term, seq: Sequence[str], i: int) -> bool:
    """Whether ``term``'s words are ``seq``'s from ``i`` on, next to each other, in order."""
    n = len(term.words)
    if i + n > len(seq):
        return False
    if any(seq[i + k] != w for k, w in enumerate(term.words[:-1])):
        return False
    last = seq[i + n - 1]
    return last.startswith(term.words[-1]) if term.prefix else last == term.words[-1]


def _occurs(term: Term, seq: Sequence[str]) -> bool:
    first = term.words[0]
    if len(term.words) > 1:
        return any(term_at(term, seq, i) for i, w in enumerate(seq) if w == first)
    return any(w.startswith(first) for w in seq) if term.prefix else first in seq


def pairs_of(terms: Sequence[Term]) -> list[tuple[str, str]]:
    """The pairs of next words the terms need (a prefix's last word is no whole word)."""
    out = []
    for t in terms:
        whole = t.words[:-1] if t.prefix else t.words
        out += list(itertools.pairwise(whole))
    return out


def holds(cues: Sequence[IndexedCue], terms: Sequence[Term]) -> bool:
    """Whether every term occurs in the page, a phrase's words next to each other (across
    cue boundaries too): what the engine, which keeps no positions, cannot tell."""
    seq = page_words(cues)
    return all(_occurs(t, seq) for t in terms)


@dataclass(frozen=True)
class IndexedCue:
    """One cue of a transcript; ``start`` is None when the transcript had no times (txt)."""

    start: float | None
    end: float | None
    speaker: str | None
    text: str


@dataclass(frozen=True)
class IndexedTranscript:
    """What is indexed for one recording: its cues, and what filters and hits show."""

    path: str
    job_id: int | None
    model: str | None
    recorded_at: float | None  # the recording's mtime (seconds)
    cues: tuple[IndexedCue, ...]


@dataclass(frozen=True)
class Indexing:
    """A transcript indexed in the transaction that marks its job done (``mark_done``):
    one commit a file rather than two. ``failed`` hears why the index could not take it;
    the job is done all the same (``sttwatch search --reindex`` repairs the index)."""

    doc: IndexedTranscript
    failed: Callable[[str], None]


@dataclass(frozen=True)
class Term:
    """Folded words that must follow each other (one word, or a phrase); ``prefix``: the
    last one may go on."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class SearchSpec:
    """A parsed query with its filters: every term must occur in a page (a phrase's words
    next to each other), and a speaker's words in its speaker names."""

    terms: tuple[Term, ...]
    speakers: tuple[str, ...] = ()
    folder: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 20


@dataclass(frozen=True)
class PageHit:
    """A page that matched, best first, with its cues to find the hits in."""

    path: str
    job_id: int | None
    model: str | None
    recorded_at: float | None
    score: float
    cues: tuple[IndexedCue, ...]


def pages(cues: Sequence[IndexedCue]) -> list[tuple[IndexedCue, ...]]:
    """Consecutive cues in pages of at most ``PAGE_WORDS`` words (a longer cue alone)."""
    out: list[tuple[IndexedCue, ...]] = []
    cur: list[IndexedCue] = []
    n = 0
    for cue in cues:
        k = len(words(cue.text))
        if cur and n + k > PAGE_WORDS:
            out.append(tuple(cur))
            cur, n = [], 0
        cur.append(cue)
        n += k
    if cur:
        out.append(tuple(cur))
    return out


class SearchIndex(ABC):
    """Full-text search over transcripts. Thread-safe like the store that implements it."""

    @abstractmethod
    def index_transcript(self, doc: IndexedTranscript) -> None:
        """Replace the entries of ``doc.path`` with ``doc``'s cues, in one transaction."""

    @abstractmethod
    def drop_transcripts(self, paths: Iterable[str]) -> int:
        """Remove the entries of these recordings; how many recordings had some."""

    @abstractmethod
    def clear_index(self) -> None:
        """Remove every entry (before a full ``--reindex``)."""

    @abstractmethod
    def search(self, spec: SearchSpec) -> list[PageHit]:
        """At most ``spec.limit`` pages holding every term (``holds``), best first; a page
        whose stored result changed since it was indexed is left out (stale)."""

    @abstractmethod
    def indexed_paths(self) -> set[str]: ...

    @abstractmethod
    def done_with_results(self, after_id: int, limit: int) -> list[Job]:
        """Done jobs that hold a result, by id from ``after_id`` on: what a reindex reads."""

    @abstractmethod
    def index_size(self) -> dict[str, int]:
        """Recordings and pages indexed."""
