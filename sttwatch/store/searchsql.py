"""The search index in SQL, for both engines (the ``SearchIndex`` role of ``SqlStore``).

SQLite: a contentless FTS5 table (the words are indexed, not kept twice) ranked with bm25;
its rows are removed with FTS5's ``delete`` command, which needs the words that were
indexed, rebuilt from the page's stored cues. PostgreSQL: a ``tsvector`` column with a GIN
index, under the ``simple`` configuration (no stemming, no stop words: a library holds many
languages, and the words are folded before they get here), ranked with ``ts_rank``. The
cues of each page are stored compressed beside it, to find and show the hits.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from .errors import StoreError
from .model import Job
from .search import (
    IndexedCue,
    IndexedTranscript,
    PageHit,
    SearchIndex,
    SearchSpec,
    Term,
    pages,
    words,
)

SEARCH_VERSION = 3  # the schema version that added these tables


NO_FTS5 = ("search needs SQLite's FTS5, which this Python's sqlite3 module lacks (the "
           "python.org, Debian and Ubuntu builds have it); everything else works without it")


def search_ddl(dialect: str, fts5: bool = True) -> list[str]:
    """``fts5``: whether this SQLite has FTS5; without it the daemon runs, unindexed."""
    if dialect == "postgres":
        return [
            """CREATE TABLE IF NOT EXISTS search_docs (
                id BIGSERIAL PRIMARY KEY, path TEXT NOT NULL, page INTEGER NOT NULL,
                job_id BIGINT, model TEXT, recorded_at DOUBLE PRECISION,
                speakers TEXT NOT NULL DEFAULT '', cues BYTEA NOT NULL, tsv TSVECTOR NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS search_docs_path ON search_docs(path)",
            "CREATE INDEX IF NOT EXISTS search_docs_tsv ON search_docs USING GIN (tsv)",
        ]
    return [
        """CREATE TABLE IF NOT EXISTS search_docs (
            id INTEGER PRIMARY KEY, path TEXT NOT NULL, page INTEGER NOT NULL,
            job_id INTEGER, model TEXT, recorded_at REAL,
            speakers TEXT NOT NULL DEFAULT '', cues BLOB NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS search_docs_path ON search_docs(path)",
        *(["CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(body, content='', "
           "tokenize='unicode61 remove_diacritics 0')"] if fts5 else []),
    ]


def has_fts5(x: Any) -> bool:
    return bool(x.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()[0])


def pack_cues(cues: Sequence[IndexedCue]) -> bytes:
    """One line a cue, ``gap<TAB>length<TAB>speaker<TAB>text``, compressed. The gap (from
    the previous cue's end) and the length are milliseconds: short numbers that repeat,
    which compress far better than absolute times (empty for an untimed cue)."""
    lines, prev = [], 0
    for c in cues:
        if c.start is None or c.end is None:
            times = "\t"
        else:
            a, b = round(c.start * 1000), round(c.end * 1000)
            times, prev = f"{a - prev}\t{b - a}", b
        lines.append(f"{times}\t{' '.join((c.speaker or '').split())}\t"
                     f"{' '.join(c.text.split())}")
    return zlib.compress("\n".join(lines).encode(), 9)


def unpack_cues(blob: bytes) -> tuple[IndexedCue, ...]:
    out, prev = [], 0
    for line in zlib.decompress(bytes(blob)).decode().split("\n"):
        gap, length, speaker, text = line.split("\t", 3)
        start = end = None
        if gap:
            a = prev + int(gap)
            prev = a + int(length)
            start, end = a / 1000, prev / 1000
        out.append(IndexedCue(start, end, speaker or None, text))
    return tuple(out)


def body_of(cues: Sequence[IndexedCue]) -> str:
    """The words a page is indexed by: the same for the insert and FTS5's delete."""
    return " ".join(w for c in cues for w in words(c.text))


def speakers_of(cues: Sequence[IndexedCue]) -> str:
    """The words of the page's speaker names, space-bounded for a ``LIKE '% w %'``."""
    names = {w for c in cues if c.speaker for w in words(c.speaker)}
    return f" {' '.join(sorted(names))} " if names else ""


def fts5_query(terms: Sequence[Term]) -> str:
    """Every word is quoted (it holds letters and digits only), so no word is an operator."""
    return " AND ".join('"' + " ".join(t.words) + '"' + (" *" if t.prefix else "")
                        for t in terms)


def ts_query(terms: Sequence[Term]) -> str:
    return " & ".join("(" + " <-> ".join(f"'{w}'" for w in t.words) +
                      (":*" if t.prefix else "") + ")" for t in terms)


class SearchSql(SearchIndex):
    """Mixed into ``SqlStore``: uses its transactions, placeholder style and dialect."""

    dialect: Any

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _x(self, x: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _select(self, where: str, args: Sequence[Any] = ()) -> list[Job]:
        raise NotImplementedError

    @property
    def _pg(self) -> bool:
        return bool(self.dialect.name == "postgres")

    def _ready(self, x: Any) -> None:
        if not self._pg and x.execute("SELECT 1 FROM sqlite_master WHERE name='search_fts'"
                                      ).fetchone() is None:
            raise StoreError(NO_FTS5)

    def _drop_search(self, x: Any, path: str) -> bool:
        rows = self._x(x, "SELECT id, cues FROM search_docs WHERE path=?", (path,)).fetchall()
        if not rows:
            return False
        self._ready(x)
        if not self._pg:
            for rowid, blob in rows:
                self._x(x, "INSERT INTO search_fts(search_fts, rowid, body) VALUES "
                           "('delete', ?, ?)", (rowid, body_of(unpack_cues(blob))))
        self._x(x, "DELETE FROM search_docs WHERE path=?", (path,))
        return True

    def index_transcript(self, doc: IndexedTranscript) -> None:
        parts = [(p, pack_cues(p), body_of(p), speakers_of(p)) for p in pages(doc.cues)]
        with self._tx() as x:
            self._ready(x)
            self._drop_search(x, doc.path)
            for n, (_cues, blob, body, speakers) in enumerate(parts):
                head = (doc.path, n, doc.job_id, doc.model, doc.recorded_at, speakers, blob)
                if self._pg:
                    self._x(x, "INSERT INTO search_docs (path, page, job_id, model, "
                               "recorded_at, speakers, cues, tsv) VALUES (?, ?, ?, ?, ?, ?, ?, "
                               "to_tsvector('simple', ?))", (*head, body))
                    continue
                rowid = self._x(x, "INSERT INTO search_docs (path, page, job_id, model, "
                                   "recorded_at, speakers, cues) VALUES (?, ?, ?, ?, ?, ?, ?) "
                                   "RETURNING id", head).fetchone()[0]
                self._x(x, "INSERT INTO search_fts(rowid, body) VALUES (?, ?)", (rowid, body))

    def drop_transcripts(self, paths: Iterable[str]) -> int:
        with self._tx() as x:
            return sum(self._drop_search(x, p) for p in paths)

    def clear_index(self) -> None:
        with self._tx() as x:
            self._x(x, "DELETE FROM search_docs")
            if not self._pg:
                self._ready(x)
                self._x(x, "INSERT INTO search_fts(search_fts) VALUES ('delete-all')")

    def search(self, spec: SearchSpec) -> list[PageHit]:
        where: list[str] = []
        args: list[Any] = []
        if spec.folder is not None:
            prefix = spec.folder.rstrip("/") + "/"
            where.append("(d.path = ? OR substr(d.path, 1, ?) = ?)")
            args += [spec.folder, len(prefix), prefix]
        if spec.since is not None:
            where.append("d.recorded_at >= ?")
            args.append(spec.since)
        if spec.until is not None:
            where.append("d.recorded_at < ?")
            args.append(spec.until)
        for name in spec.speakers:  # folded words: letters and digits, nothing LIKE reads
            where.append("d.speakers LIKE ?")
            args.append(f"% {name} %")
        cols = "d.path, d.job_id, d.model, d.recorded_at, d.cues"
        if not spec.terms:
            sql = (f"SELECT {cols}, 0 FROM search_docs d WHERE {' AND '.join(where) or '1=1'} "
                   "ORDER BY d.recorded_at DESC, d.path, d.page LIMIT ?")
            args.append(spec.limit)
        elif self._pg:
            sql = (f"SELECT {cols}, ts_rank(d.tsv, q) AS score FROM search_docs d, "
                   "to_tsquery('simple', ?) q WHERE d.tsv @@ q"
                   + "".join(f" AND {w}" for w in where) +
                   " ORDER BY score DESC, d.path, d.page LIMIT ?")
            args = [ts_query(spec.terms), *args, spec.limit]
        else:
            sql = (f"SELECT {cols}, -bm25(search_fts) AS score FROM search_fts JOIN "
                   "search_docs d ON d.id = search_fts.rowid WHERE search_fts MATCH ?"
                   + "".join(f" AND {w}" for w in where) +
                   " ORDER BY bm25(search_fts), d.path, d.page LIMIT ?")
            args = [fts5_query(spec.terms), *args, spec.limit]
        with self._read() as x:
            self._ready(x)
            if self._pg and spec.terms:
                # The words live out of line (TOAST), so the table looks small and the
                # planner prefers reading it whole, unpacking every page's words: 120 ms on
                # 10,000 transcripts, against a few ms through the GIN index.
                self._x(x, "SET LOCAL enable_seqscan = off")
            rows = self._x(x, sql, args).fetchall()
        return [PageHit(str(p), None if j is None else int(j), m,
                        None if r is None else float(r), float(s), unpack_cues(c))
                for p, j, m, r, c, s in rows]

    def indexed_paths(self) -> set[str]:
        with self._read() as x:
            return {str(r[0]) for r in self._x(x, "SELECT DISTINCT path FROM search_docs"
                                               ).fetchall()}

    def done_with_results(self, after_id: int, limit: int) -> list[Job]:
        return self._select("state='done' AND result IS NOT NULL AND id > ? ORDER BY id "
                            "LIMIT ?", (after_id, limit))

    def index_size(self) -> dict[str, int]:
        with self._read() as x:
            n, pages_ = self._x(x, "SELECT COUNT(DISTINCT path), COUNT(*) FROM search_docs"
                                ).fetchone()
        return {"recordings": int(n), "pages": int(pages_)}
