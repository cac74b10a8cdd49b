"""The search index in SQL, for both engines (the ``SearchIndex`` role of ``SqlStore``).

Both engines index the set of each page's words, without positions or counts: that is what
finds the pages holding every word, and positions cost more than the rest of the index
together (docs/search.md has the figures). Phrases are checked on the candidate pages' cues,
best first, until ``limit`` pages hold them (``holds``).

SQLite: a contentless FTS5 table with ``detail=none``, ranked with bm25. Its rows are removed
with FTS5's ``delete`` command, which needs the words that were indexed: they come from the
page's cues, or, for a page whose result changed since (stale), from the index itself
(``fts5vocab``, a scan of the index: rare, and only then). PostgreSQL: a Bloom filter of the
page's words (``sig``) beside the one of its pairs of next words, both tested by the server
row by row (``get_bit``, the bit numbers computed here), and a vocabulary of every word
indexed (``search_words``) that prefixes expand through: a GIN index needs its words in the
table, and they were twice the rest of the index (docs/search.md has the figures). Ranked as
bm25 without word counts ranks an AND of words: the page with fewer words first. Each page's
cues are kept beside it, their words compressed against the job's stored result
(sttwatch/store/searchpack.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from .errors import StoreError
from .model import Job
from .packing import stored_json
from .search import (
    IndexedCue,
    IndexedTranscript,
    Indexing,
    PageHit,
    SearchIndex,
    SearchSpec,
    Term,
    holds,
    page_words,
    pages,
    pairs_of,
    words,
)
from .searchpack import (
    PAIR_BITS,
    PG_PAIR_BITS,
    may_hold,
    pack_page,
    pack_pairs,
    pack_words,
    pair_probes,
    unpack_page,
    word_probes,
)

SEARCH_VERSION = 3  # the first schema version that may hold these tables
POSITIONLESS_VERSION = 5  # the one that dropped their word positions and copied cue words
BLOOM_VERSION = 6  # PostgreSQL: Bloom filters of the words instead of a GIN index over them
EXPANSIONS = 64  # a prefix of more words than this is left to the reading of the pages


NO_FTS5 = ("search needs SQLite's FTS5, which this Python's sqlite3 module lacks (the "
           "python.org, Debian and Ubuntu builds have it); everything else works without it")


def search_ddl(dialect: str, fts5: bool = True) -> list[str]:
    """``fts5``: whether this SQLite has FTS5; without it the daemon runs, unindexed."""
    if dialect == "postgres":
        return [
            """CREATE TABLE IF NOT EXISTS search_docs (
                id BIGSERIAL PRIMARY KEY, path TEXT NOT NULL, page INTEGER NOT NULL,
                job_id BIGINT, model TEXT, recorded_at DOUBLE PRECISION,
                speakers TEXT NOT NULL DEFAULT '', cues BYTEA NOT NULL, pairs BYTEA,
                sig BYTEA NOT NULL, nwords INTEGER NOT NULL)""",
            # The filters stay in the row, uncompressed (they do not compress), which a
            # search reads whole; the cues, read only for the candidates, go out of line.
            "ALTER TABLE search_docs ALTER COLUMN cues SET STORAGE EXTERNAL, ALTER COLUMN "
            "pairs SET STORAGE MAIN, ALTER COLUMN sig SET STORAGE MAIN",
            "CREATE INDEX IF NOT EXISTS search_docs_path ON search_docs(path)",
            # every word ever indexed (``clear_index`` empties it): what a prefix can be
            'CREATE TABLE IF NOT EXISTS search_words (word TEXT COLLATE "C" PRIMARY KEY)',
        ]
    return [
        """CREATE TABLE IF NOT EXISTS search_docs (
            id INTEGER PRIMARY KEY, path TEXT NOT NULL, page INTEGER NOT NULL,
            job_id INTEGER, model TEXT, recorded_at REAL,
            speakers TEXT NOT NULL DEFAULT '', cues BLOB NOT NULL, pairs BLOB)""",
        "CREATE INDEX IF NOT EXISTS search_docs_path ON search_docs(path)",
        *(["CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(body, content='', "
           "detail=none, tokenize='unicode61 remove_diacritics 0')",
           "CREATE VIRTUAL TABLE IF NOT EXISTS search_vocab USING fts5vocab(search_fts, "
           "instance)"] if fts5 else []),
    ]


def has_fts5(x: Any) -> bool:
    return bool(x.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()[0])


def body_of(cues: Sequence[IndexedCue], seq: Sequence[str] | None = None) -> str:
    """The words a page is indexed by, each once (the engines keep no counts): the same for
    the insert and FTS5's delete. ``seq``: the page's words (``page_words``), when the
    caller has cut them already."""
    return " ".join(sorted(set(page_words(cues) if seq is None else seq)))


def speakers_of(cues: Sequence[IndexedCue]) -> str:
    """The words of the page's speaker names, space-bounded for a ``LIKE '% w %'``."""
    names = {w for c in cues if c.speaker for w in words(c.speaker)}
    return f" {' '.join(sorted(names))} " if names else ""


def fts5_query(terms: Sequence[Term]) -> str:
    """Every word is quoted (it holds letters and digits only), so no word is an operator;
    a phrase asks for its words (``detail=none`` has no phrases), ``holds`` does the rest."""
    return " AND ".join(f'"{w}"' + (" *" if t.prefix and k == len(t.words) - 1 else "")
                        for t in terms for k, w in enumerate(t.words))


def bloom_test(column: str, probes: Sequence[int]) -> str:
    """SQL true when every probe's bit is set in the row's filter (``get_bit`` counts a
    bytea's bits as ``searchpack._bloom`` sets them). The probes are numbers made here."""
    return " AND ".join(f"get_bit({column}, mod({int(p)}, 8 * length({column}))::int) = 1"
                        for p in probes)


class SearchSql(SearchIndex):
    """Mixed into ``SqlStore``: uses its transactions, placeholder style and dialect."""

    dialect: Any

    def _tx(self, durable: bool = True) -> AbstractContextManager[Any]:
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

    def _result_json(self, x: Any, job_id: int | None) -> bytes | None:
        """The decompressed stored result of the job a page was read from, if it has one."""
        if job_id is None:
            return None
        row = self._x(x, "SELECT result FROM jobs WHERE id=?", (job_id,)).fetchone()
        return stored_json(str(row[0])) if row and row[0] else None

    def _drop_search(self, x: Any, path: str) -> bool:
        rows = self._x(x, "SELECT id, job_id, cues FROM search_docs WHERE path=?",
                       (path,)).fetchall()
        if not rows:
            return False
        self._ready(x)
        if not self._pg:
            self._unindex(x, rows)
        self._x(x, "DELETE FROM search_docs WHERE path=?", (path,))
        return True

    def _unindex(self, x: Any, rows: Sequence[Any]) -> None:
        """FTS5's delete for these pages, with the words each was indexed by."""
        lost = []
        for rowid, job_id, blob in rows:
            cues = unpack_page(blob, self._result_json(x, job_id))
            if cues is None:
                lost.append(int(rowid))
                continue
            self._x(x, "INSERT INTO search_fts(search_fts, rowid, body) VALUES "
                       "('delete', ?, ?)", (rowid, body_of(cues)))
        if lost:  # stale pages: their words, from the index itself (one scan of it)
            found: dict[int, list[str]] = {r: [] for r in lost}
            for doc, term in self._x(x, "SELECT doc, term FROM search_vocab WHERE doc IN "
                                        f"({', '.join('?' * len(lost))})", lost).fetchall():
                found[int(doc)].append(str(term))
            for rowid, terms in found.items():
                self._x(x, "INSERT INTO search_fts(search_fts, rowid, body) VALUES "
                           "('delete', ?, ?)", (rowid, " ".join(terms)))

    def _add_words(self, x: Any, found: Iterable[str]) -> None:
        """PostgreSQL's vocabulary: new words only, in order (two indexers adding the same
        words wait for each other instead of deadlocking)."""
        self._x(x, "INSERT INTO search_words (word) SELECT unnest(?::text[]) ON CONFLICT "
                   "DO NOTHING", (sorted(set(found)),))

    def index_transcript(self, doc: IndexedTranscript) -> None:
        with self._tx() as x:
            self._index_in(x, doc)

    def _index_parts(self, index: Indexing) -> list[tuple[str, Any, Any, Any]] | None:
        """The pages to write, made before the write lock is taken; None (and
        ``index.failed`` told) when they cannot be."""
        try:
            return self._parts(index.doc)
        except Exception as exc:  # the index must never cost a transcript
            index.failed(f"{type(exc).__name__}: {exc}")
            return None

    def _index_within(self, x: Any, index: Indexing,
                      parts: list[tuple[str, Any, Any, Any]]) -> None:
        """Index inside another transaction (a job marked done), behind a savepoint: a
        failure undoes only the index's part and goes to ``index.failed``, never costing the
        transition it rides with."""
        self._x(x, "SAVEPOINT index_doc")
        try:
            self._index_in(x, index.doc, parts)
        except Exception as exc:  # the index must never cost a transcript
            self._x(x, "ROLLBACK TO SAVEPOINT index_doc")
            index.failed(f"{type(exc).__name__}: {exc}")
        self._x(x, "RELEASE SAVEPOINT index_doc")

    def _parts(self, doc: IndexedTranscript) -> list[tuple[str, Any, Any, Any]]:
        bits = PG_PAIR_BITS if self._pg else PAIR_BITS
        parts = []
        for p in pages(doc.cues):
            seq = page_words(p)  # cut once, for the body and the filter of its pairs
            parts.append((body_of(p, seq), speakers_of(p), p, pack_pairs(seq, bits)))
        return parts

    def _index_in(self, x: Any, doc: IndexedTranscript,
                  parts: list[tuple[str, Any, Any, Any]] | None = None) -> None:
        if parts is None:
            parts = self._parts(doc)
        self._ready(x)
        self._drop_search(x, doc.path)
        source = self._result_json(x, doc.job_id)
        for n, (body, speakers, cues, pairs) in enumerate(parts):
            head = (doc.path, n, doc.job_id, doc.model, doc.recorded_at, speakers,
                    pack_page(cues, source), pairs)
            if self._pg:
                found = body.split()
                self._x(x, "INSERT INTO search_docs (path, page, job_id, model, "
                           "recorded_at, speakers, cues, pairs, sig, nwords) VALUES (?, ?, "
                           "?, ?, ?, ?, ?, ?, ?, ?)", (*head, pack_words(found), len(found)))
                continue
            rowid = self._x(x, "INSERT INTO search_docs (path, page, job_id, model, "
                               "recorded_at, speakers, cues, pairs) VALUES (?, ?, ?, ?, ?, ?, "
                               "?, ?) RETURNING id", head).fetchone()[0]
            self._x(x, "INSERT INTO search_fts(rowid, body) VALUES (?, ?)", (rowid, body))
        if self._pg and parts:
            self._add_words(x, (w for body, *_rest in parts for w in body.split()))

    def _migrate_search_to_5(self, x: Any) -> None:
        """Version 5: the index keeps no word positions, and a page's words are compressed
        against its job's stored result. Every page is read in its version-4 form and
        indexed again (SQLite: a new FTS5 table; PostgreSQL: a GIN index over the words)."""
        there = ("SELECT to_regclass('search_docs') IS NOT NULL" if self._pg else
                 "SELECT COUNT(*) FROM sqlite_master WHERE name='search_docs'")
        if not self._x(x, there).fetchone()[0]:
            return
        rows = self._x(x, "SELECT id, job_id, cues FROM search_docs").fetchall()
        self._x(x, f"ALTER TABLE search_docs ADD COLUMN pairs {'BYTEA' if self._pg else 'BLOB'}")
        if not self._pg:
            self._x(x, "DROP TABLE IF EXISTS search_fts")
            for stmt in search_ddl("sqlite", has_fts5(x)):
                self._x(x, stmt)
        else:  # the tsvector column and its index go; the words replace them
            self._x(x, "DROP INDEX IF EXISTS search_docs_tsv")
            self._x(x, "ALTER TABLE search_docs DROP COLUMN IF EXISTS tsv")
            self._x(x, "ALTER TABLE search_docs ADD COLUMN IF NOT EXISTS words TEXT NOT NULL "
                       "DEFAULT ''")
            self._x(x, "ALTER TABLE search_docs ADD COLUMN IF NOT EXISTS nwords INTEGER NOT "
                       "NULL DEFAULT 0")
        fts = not self._pg and has_fts5(x)
        for rowid, job_id, blob in rows:
            cues = unpack_page(blob, None)  # the version-4 form: the cues themselves
            assert cues is not None
            self._x(x, "UPDATE search_docs SET cues=?, pairs=? WHERE id=?",
                    (pack_page(cues, self._result_json(x, job_id)),
                     pack_pairs(page_words(cues)), rowid))
            body = body_of(cues)
            if fts:
                self._x(x, "INSERT INTO search_fts(rowid, body) VALUES (?, ?)", (rowid, body))
            elif self._pg:
                self._x(x, "UPDATE search_docs SET words=?, nwords=? WHERE id=?",
                        (body, len(body.split()), rowid))

    def _migrate_search_to_6(self, x: Any) -> None:
        """Version 6: PostgreSQL's index becomes Bloom filters of each page's words and a
        vocabulary, made from the words version 5 kept (SQLite's index is unchanged). The
        rows the update leaves behind are vacuumed as usual; ``VACUUM FULL search_docs``
        gives their room back to the disk at once."""
        if not self._pg or not self._x(x, "SELECT to_regclass('search_docs') IS NOT NULL"
                                       ).fetchone()[0]:
            return
        rows = self._x(x, "SELECT id, words FROM search_docs").fetchall()
        self._x(x, "DROP INDEX IF EXISTS search_docs_words")
        self._x(x, "ALTER TABLE search_docs DROP COLUMN IF EXISTS words, ADD COLUMN IF NOT "
                   "EXISTS sig BYTEA NOT NULL DEFAULT ''::bytea")
        self._x(x, "ALTER TABLE search_docs ALTER COLUMN sig DROP DEFAULT")
        self._x(x, 'CREATE TABLE IF NOT EXISTS search_words (word TEXT COLLATE "C" PRIMARY '
                   'KEY)')
        vocabulary: set[str] = set()
        for rowid, body in rows:
            found = str(body).split()
            vocabulary.update(found)
            self._x(x, "UPDATE search_docs SET sig=?, nwords=? WHERE id=?",
                    (pack_words(found), len(found), rowid))
        self._add_words(x, vocabulary)

    def drop_transcripts(self, paths: Iterable[str]) -> int:
        with self._tx() as x:
            return sum(self._drop_search(x, p) for p in paths)

    def clear_index(self) -> None:
        with self._tx() as x:
            self._x(x, "DELETE FROM search_docs")
            if self._pg:
                self._x(x, "DELETE FROM search_words")
            else:
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
        # A phrase is checked on the pages' cues: the engine can only give every page with
        # its words, best first, to be read until ``limit`` of them hold it.
        phrases = any(len(t.words) > 1 for t in spec.terms)
        # PostgreSQL's filters let through a few pages without the words: read on too
        limit = "" if phrases or (self._pg and spec.terms) else " LIMIT ?"
        tail = [] if limit == "" else [spec.limit]
        if not spec.terms:
            sql = (f"SELECT d.id, 0 FROM search_docs d WHERE {' AND '.join(where) or '1=1'} "
                   f"ORDER BY d.recorded_at DESC, d.path, d.page{limit}")
            args += tail
        elif self._pg:
            # bm25 with no word counts, as SQLite's: the shorter page first
            sql = ("SELECT d.id, 1.0 / (1 + d.nwords) AS score FROM search_docs d WHERE "
                   + " AND ".join([*where, "{tests}"]) +
                   f" ORDER BY d.nwords, d.path, d.page{limit}")
            args += tail
        else:
            sql = ("SELECT d.id, -bm25(search_fts) AS score FROM search_fts JOIN "
                   "search_docs d ON d.id = search_fts.rowid WHERE search_fts MATCH ?"
                   + "".join(f" AND {w}" for w in where) +
                   f" ORDER BY bm25(search_fts), d.path, d.page{limit}")
            args = [fts5_query(spec.terms), *args, *tail]
        out: list[PageHit] = []
        with self._read() as x:
            self._ready(x)
            if self._pg and spec.terms:
                tests = self._bloom_tests(x, spec.terms)
                if tests is None:
                    return []
                sql = sql.replace("{tests}", tests)
            ranked = [(int(i), float(s)) for i, s in self._x(x, sql, args).fetchall()]
            sources: dict[int, bytes | None] = {}
            at, step = 0, max(spec.limit, 20)
            while at < len(ranked) and len(out) < spec.limit:
                out += self._read_pages(x, ranked[at:at + step], spec, sources)
                at += step
                # as many as the pages read so far say the rest of the hits need, and a few
                rate = max(len(out) / at, 0.001)
                step = min(2000, max(10, int((spec.limit - len(out)) / rate * 1.25) + 4))
        return out[:spec.limit]

    def _bloom_tests(self, x: Any, terms: Sequence[Term]) -> str | None:
        """PostgreSQL: the SQL that passes the pages whose filters may hold every term's
        words and pairs of next words; None when a word was never indexed (no hits)."""
        whole = sorted({w for t in terms for w in (t.words[:-1] if t.prefix else t.words)})
        if whole and self._x(x, "SELECT COUNT(*) FROM search_words WHERE word = ANY(?)",
                             (whole,)).fetchone()[0] < len(whole):
            return None
        tests = [bloom_test("d.sig", word_probes(w)) for w in whole]
        for t in terms:
            if not t.prefix:
                continue
            # folded words are letters and digits: nothing in them that LIKE reads
            found = [str(r[0]) for r in self._x(
                x, "SELECT word FROM search_words WHERE word LIKE ? ORDER BY word LIMIT ?",
                (t.words[-1] + "%", EXPANSIONS + 1)).fetchall()]
            if not found:
                return None
            if len(found) <= EXPANSIONS:  # more: the pages read tell
                tests.append("(" + " OR ".join(f"({bloom_test('d.sig', word_probes(w))})"
                                               for w in found) + ")")
        tests += [f"(d.pairs IS NULL OR ({bloom_test('d.pairs', pair_probes(a, b))}))"
                  for a, b in pairs_of(terms)]
        return " AND ".join(tests) or "1=1"

    def _read_pages(self, x: Any, ranked: Sequence[tuple[int, float]], spec: SearchSpec,
                    sources: dict[int, bytes | None]) -> list[PageHit]:
        """These pages, in this order, with their cues; those holding every term only."""
        ids = [i for i, _s in ranked]
        need = pairs_of(spec.terms)
        rows = {int(r[0]): r for r in self._x(
            x, "SELECT id, path, job_id, model, recorded_at, cues, pairs FROM search_docs "
               f"WHERE id IN ({', '.join('?' * len(ids))})", ids).fetchall()}
        out = []
        kept = [r for r in (rows[i] for i in ids)
                if not (need and r[6] is not None and not may_hold(bytes(r[6]), need))]
        # the results these pages' words are packed against, in one read
        missing = sorted({int(r[2]) for r in kept if r[2] is not None} - set(sources))
        if missing:
            sources.update(dict.fromkeys(missing))
            for job_id, result in self._x(x, "SELECT id, result FROM jobs WHERE id IN "
                                             f"({', '.join('?' * len(missing))})",
                                          missing).fetchall():
                sources[int(job_id)] = stored_json(str(result)) if result else None
        scores = dict(ranked)
        for rowid, path, job_id, model, recorded_at, blob, _pairs in kept:
            score = scores[int(rowid)]
            job = None if job_id is None else int(job_id)
            cues = unpack_page(blob, None if job is None else sources[job])
            if cues is None or not holds(cues, spec.terms):
                continue
            out.append(PageHit(str(path), job, model,
                               None if recorded_at is None else float(recorded_at), score,
                               cues))
        return out

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
