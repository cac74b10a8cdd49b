"""The search index's store contract, on a real SQLite file and a real PostgreSQL server:
indexing, ranking, phrases, prefixes, filters, replacement, forget, and a store made by an
older sttwatch getting the index by migration."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from stores import PG_URL, STORE_KINDS, contract_store

from sttwatch.search.hits import find_hits, marked
from sttwatch.search.query import parse
from sttwatch.store import Admission, Plan, State
from sttwatch.store.packing import pack
from sttwatch.store.search import IndexedCue, IndexedTranscript, Indexing, SearchSpec, words
from sttwatch.store.searchpack import pack_cues, unpack_page
from sttwatch.store.sql import SCHEMA_VERSION, SqlStore
from sttwatch.store.sqlite import SqliteStore

PLAN = Plan("aimlapi", "#g1_nova-2", {}, ("txt",), "/lib")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    with contract_store(request.param, tmp_path) as s:
        yield s


def doc(path: str, *cues: tuple[float, str], speaker: str | None = None, when: float = 1e9,
        job_id: int | None = 1) -> IndexedTranscript:
    return IndexedTranscript(path, job_id, "m", when,
                             tuple(IndexedCue(t, t + 2.0, speaker, text) for t, text in cues))


def query(store: SqlStore, text: str, **filters: object) -> list[tuple[str, float | None, str]]:
    q = parse(text)
    pages = store.search(SearchSpec(q.terms, q.speakers, **filters))  # type: ignore[arg-type]
    return [(h.path, h.start, marked(h.text, h.marks)) for h in find_hits(pages, q, 20)]


def library(store: SqlStore) -> None:
    store.index_transcript(doc("/lib/a/move.mp3", (0.0, "Good morning everyone."),
                               (754.5, "We decided the move to Lisbon in March."),
                               (760.0, "The Lisbon office opens in June.")))
    store.index_transcript(doc("/lib/b/lecture.mp3", (12.0, "Entropy is a measure of disorder."),
                               (3600.0, "Once more: entropy never decreases."), when=2e9))
    store.index_transcript(doc("/lib/b/café.mp3", (5.0, "Un café crème, s'il vous plaît.")))


def test_words_phrases_and_prefixes_with_their_times(store: SqlStore) -> None:
    library(store)
    assert query(store, "lisbon march") == [
        ("/lib/a/move.mp3", 754.5, "We decided the move to [Lisbon] in [March].")]
    assert query(store, '"the move to lisbon"') == [
        ("/lib/a/move.mp3", 754.5, "We decided [the move to Lisbon] in March.")]
    assert query(store, "entrop*") == [
        ("/lib/b/lecture.mp3", 12.0, "[Entropy] is a measure of disorder."),
        ("/lib/b/lecture.mp3", 3600.0, "Once more: [entropy] never decreases.")]
    assert query(store, "CAFE creme") == [
        ("/lib/b/café.mp3", 5.0, "Un [café crème], s'il vous plaît.")]
    assert query(store, '"move lisbon"') == []  # not next to each other
    assert query(store, "lisbon zebra") == []  # every word must occur


def test_a_phrase_cut_by_a_cue_boundary_is_found(store: SqlStore) -> None:
    store.index_transcript(doc("/lib/q.mp3", (3.0, "Let's start with the budget for the"),
                               (6.0, "second quarter, shall we?")))
    assert query(store, '"for the second quarter"') == [
        ("/lib/q.mp3", 3.0, "Let's start with the budget [for the second quarter], shall we?")]


def test_best_first(store: SqlStore) -> None:
    store.index_transcript(doc("/lib/once.mp3", (1.0, "budget"), *(
        (float(i), f"filler words number {i}") for i in range(2, 60))))
    store.index_transcript(doc("/lib/often.mp3", (1.0, "budget budget budget review"),
                               (4.0, "the budget again")))
    found = query(store, "budget")
    assert [p for p, _t, _x in found][:2] == ["/lib/often.mp3", "/lib/often.mp3"]
    assert found[-1][0] == "/lib/once.mp3"


def test_folder_and_recording_date_filters(store: SqlStore) -> None:
    library(store)
    store.index_transcript(doc("/lib/bb/other.mp3", (1.0, "entropy elsewhere")))
    assert {p for p, _t, _x in query(store, "entropy", folder="/lib/b")} == {"/lib/b/lecture.mp3"}
    assert query(store, "entropy", folder="/lib/a") == []
    assert {p for p, _t, _x in query(store, "entropy", since=1.5e9)} == {"/lib/b/lecture.mp3"}
    assert {p for p, _t, _x in query(store, "entropy", until=1.5e9)} == {"/lib/bb/other.mp3"}


def test_speakers_are_searchable(store: SqlStore) -> None:
    store.index_transcript(IndexedTranscript("/lib/call.mp3", 7, "m", 1e9, (
        IndexedCue(0.5, 3.0, "Speaker 1", "Let's start with the budget."),
        IndexedCue(8.3, 10.0, "Speaker 2", "The budget for March is in."),
        IndexedCue(12.0, 14.0, "Alice Martin", "And the budget for April?"))))
    assert [t for _p, t, _x in query(store, "speaker:2 budget")] == [8.3]
    assert [t for _p, t, _x in query(store, "speaker:alice budget")] == [12.0]
    assert [t for _p, t, _x in query(store, 'speaker:"alice martin"')] == [12.0]
    assert query(store, "speaker:3 budget") == []


def test_reindexing_a_path_replaces_and_forget_removes(store: SqlStore) -> None:
    (job,) = store.admit([Admission("/lib/a/move.mp3", 1, 1, PLAN)], 1.0)
    library(store)
    store.index_transcript(doc("/lib/a/move.mp3", (9.0, "A new take: we stay in Porto."),
                               job_id=job.id))
    assert query(store, "lisbon") == []
    assert query(store, "porto") == [("/lib/a/move.mp3", 9.0, "A new take: we stay in [Porto].")]
    assert store.forget(["/lib/a/move.mp3"]) == 1
    assert query(store, "porto") == []
    assert store.index_size() == {"recordings": 2, "pages": 2}
    assert store.drop_transcripts(["/lib/b/lecture.mp3", "/nowhere"]) == 1
    assert query(store, "entropy") == []
    store.clear_index()
    assert query(store, "café") == []
    assert store.indexed_paths() == set()


def test_long_transcripts_are_paged_and_found_everywhere(store: SqlStore) -> None:
    cues = [(float(i), f"word{i} filler text here and there") for i in range(1500)]
    store.index_transcript(doc("/lib/long.mp3", *cues))
    assert store.index_size()["pages"] >= 4
    assert query(store, "word1499") == [("/lib/long.mp3", 1499.0,
                                          "[word1499] filler text here and there")]
    assert query(store, '"word7 filler"') == [("/lib/long.mp3", 7.0,
                                                "[word7 filler] text here and there")]


def test_untimed_cues(store: SqlStore) -> None:
    store.index_transcript(IndexedTranscript("/lib/t.mp3", None, None, None, (
        IndexedCue(None, None, None, "Only text, no times."),)))
    assert query(store, "times") == [("/lib/t.mp3", None, "Only text, no [times].")]


def test_a_version_2_state_file_gets_the_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    for table in ("search_docs", "search_fts"):
        db.execute(f"DROP TABLE {table}")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        store.index_transcript(doc("/lib/x.mp3", (1.0, "migrated fine")))
        assert query(store, "migrated") == [("/lib/x.mp3", 1.0, "[migrated] fine")]
    finally:
        store.close()
    assert SCHEMA_VERSION >= 3


def test_a_phrase_is_its_words_next_to_each_other(store: SqlStore) -> None:
    store.index_transcript(doc("/lib/apart.mp3", (1.0, "The second item on the budget"),
                               (9.0, "is the quarter we lost.")))
    store.index_transcript(doc("/lib/next.mp3", (2.0, "Then the budget for the second"),
                               (4.0, "quarter.")))
    # every word is in both pages; only one has them next to each other, in this order
    assert query(store, 'budget "second quarter"') == [
        ("/lib/next.mp3", 2.0, "Then the [budget] for the [second quarter].")]
    assert query(store, '"quarter second"') == []
    assert query(store, '"second item on"') == [
        ("/lib/apart.mp3", 1.0, "The [second item on] the budget")]


def held_result(store: SqlStore, path: str, text: str) -> int:
    """A job whose stored result says ``text`` (written as a finished job's is)."""
    (job,) = store.admit([Admission(path, 1, 1, PLAN)], 1.0)
    said = text.split()
    result = {"results": {"words": [{"word": w.lower(), "punctuated_word": w} for w in said],
                          "transcript": text}}
    with store._tx() as x:
        store._x(x, "UPDATE jobs SET result=?, state='done' WHERE id=?",
                 (pack(result)[0], job.id))
    return job.id


def fts_sound(store: SqlStore) -> None:
    if isinstance(store, SqliteStore):  # FTS5's own check of the index against itself
        store._db.execute("INSERT INTO search_fts(search_fts) VALUES ('integrity-check')")


def test_cues_are_read_back_through_the_jobs_result(store: SqlStore) -> None:
    text = "We decided the move to Lisbon in March. The Lisbon office opens in June."
    job_id = held_result(store, "/lib/move.mp3", text)
    store.index_transcript(doc("/lib/move.mp3", (754.5, text[:39]), (760.0, text[40:]),
                               job_id=job_id))
    with store._tx() as x:
        (blob,) = store._x(x, "SELECT cues FROM search_docs").fetchall()
    assert bytes(blob[0])[:1] == b"R"  # the words are the result's, not a copy
    assert query(store, '"move to lisbon"') == [
        ("/lib/move.mp3", 754.5, "We decided the [move to Lisbon] in March.")]
    # a retry rewrote the result: the page is stale, left out until indexed again, and
    # replacing or forgetting it still removes its words
    held = pack({"results": {"transcript": "Something else entirely."}})[0]
    with store._tx() as x:
        store._x(x, "UPDATE jobs SET result=? WHERE id=?", (held, job_id))
    assert query(store, "lisbon") == []
    store.index_transcript(doc("/lib/move.mp3", (1.0, "Something else entirely."),
                               job_id=job_id))
    fts_sound(store)
    assert query(store, "lisbon") == []
    assert query(store, "else") == [("/lib/move.mp3", 1.0, "Something [else] entirely.")]
    with store._tx() as x:
        store._x(x, "UPDATE jobs SET result=? WHERE id=?", (pack({"x": 1})[0], job_id))
    assert store.forget(["/lib/move.mp3"]) == 1
    fts_sound(store)
    assert store.index_size() == {"recordings": 0, "pages": 0}


def as_version_4(store: SqlStore) -> None:
    """Turn the index back into what schema 4 kept: the cues whole beside word positions."""
    with store._tx() as x:
        rows = store._x(x, "SELECT id, job_id, cues FROM search_docs").fetchall()
        full = {}
        for rowid, job_id, blob in rows:
            source = store._result_json(x, job_id)
            cues = unpack_page(blob, source)
            assert cues is not None
            full[rowid] = " ".join(w for c in cues for w in words(c.text))
            store._x(x, "UPDATE search_docs SET cues=? WHERE id=?", (pack_cues(cues), rowid))
        store._x(x, "ALTER TABLE search_docs DROP COLUMN pairs")
        if not isinstance(store, SqliteStore):
            store._x(x, "DROP TABLE search_words")
            store._x(x, "ALTER TABLE search_docs DROP COLUMN sig, DROP COLUMN nwords, "
                        "ADD COLUMN tsv TSVECTOR")
            for rowid, body in full.items():
                store._x(x, "UPDATE search_docs SET tsv=to_tsvector('simple', ?) WHERE id=?",
                         (body, rowid))
            store._x(x, "CREATE INDEX search_docs_tsv ON search_docs USING GIN (tsv)")
        else:
            for table in ("search_vocab", "search_fts"):
                store._x(x, f"DROP TABLE {table}")
            store._x(x, "CREATE VIRTUAL TABLE search_fts USING fts5(body, content='', "
                        "tokenize='unicode61 remove_diacritics 0')")
            for rowid, body in full.items():
                store._x(x, "INSERT INTO search_fts(rowid, body) VALUES (?, ?)", (rowid, body))
        store._x(x, "UPDATE meta SET value='4' WHERE key='schema_version'")


def test_a_version_4_index_is_rebuilt_without_positions(store: SqlStore,
                                                          tmp_path: Path) -> None:
    text = "We decided the move to Lisbon in March."
    job_id = held_result(store, "/lib/a/move.mp3", text)
    store.index_transcript(doc("/lib/a/move.mp3", (754.5, text), job_id=job_id))
    library(store)  # and pages with no result behind them
    as_version_4(store)
    if isinstance(store, SqliteStore):
        store.close()
        store = SqliteStore(store.path)
    else:
        from sttwatch.store.postgres import PostgresStore
        store = PostgresStore(PG_URL, schema=store._schema)  # type: ignore[attr-defined]
    try:
        with store._tx() as x:
            version = store._x(x, "SELECT value FROM meta WHERE key='schema_version'"
                               ).fetchone()[0]
            kinds = {bytes(r[0])[:1] for r in store._x(x, "SELECT cues FROM search_docs")}
        assert int(version) == SCHEMA_VERSION == 6
        assert kinds == {b"R", b"P"}
        fts_sound(store)
        assert query(store, '"move to lisbon"') == [
            ("/lib/a/move.mp3", 754.5, "We decided the [move to Lisbon] in March.")]
        assert query(store, "entrop*")[0][:2] == ("/lib/b/lecture.mp3", 12.0)
        assert store.drop_transcripts(["/lib/a/move.mp3"]) == 1
        fts_sound(store)
    finally:
        store.close()


def as_version_5(store: SqlStore) -> None:
    """Turn PostgreSQL's index back into what schema 5 kept: each page's words as text with
    a GIN index over their tsvector, and no filters of them nor vocabulary."""
    with store._tx() as x:
        full = {}
        for rowid, job_id, blob in store._x(x, "SELECT id, job_id, cues FROM search_docs"
                                            ).fetchall():
            cues = unpack_page(blob, store._result_json(x, job_id))
            assert cues is not None
            full[rowid] = " ".join(sorted({w for c in cues for w in words(c.text)}))
        store._x(x, "DROP TABLE search_words")
        store._x(x, "ALTER TABLE search_docs DROP COLUMN sig, ADD COLUMN words TEXT NOT NULL "
                    "DEFAULT ''")
        for rowid, body in full.items():
            store._x(x, "UPDATE search_docs SET words=?, nwords=? WHERE id=?",
                     (body, len(body.split()), rowid))
        store._x(x, "CREATE INDEX search_docs_words ON search_docs USING GIN "
                    "(to_tsvector('simple', words))")
        store._x(x, "UPDATE meta SET value='5' WHERE key='schema_version'")


def test_a_version_5_postgres_index_becomes_filters(tmp_path: Path) -> None:
    from sttwatch.store.postgres import PostgresStore
    with contract_store("postgres", tmp_path) as store:
        text = "We decided the move to Lisbon in March."
        job_id = held_result(store, "/lib/a/move.mp3", text)
        store.index_transcript(doc("/lib/a/move.mp3", (754.5, text), job_id=job_id))
        library(store)
        as_version_5(store)
        upgraded = PostgresStore(PG_URL, schema=store._schema)  # type: ignore[attr-defined]
        try:
            with upgraded._tx() as x:
                version = upgraded._x(x, "SELECT value FROM meta WHERE key='schema_version'"
                                      ).fetchone()[0]
                gone = upgraded._x(x, "SELECT to_regclass('search_docs_words') IS NULL"
                                   ).fetchone()[0]
            assert int(version) == SCHEMA_VERSION and gone
            assert query(upgraded, '"move to lisbon"') == [
                ("/lib/a/move.mp3", 754.5, "We decided the [move to Lisbon] in March.")]
            assert query(upgraded, "entrop*")[0][:2] == ("/lib/b/lecture.mp3", 12.0)
            assert query(upgraded, "lisbonne") == []
            # a re-transcription and a forget still replace and remove its entries
            upgraded.index_transcript(doc("/lib/a/move.mp3", (3.0, "Porto after all.")))
            assert query(upgraded, "lisbon") == []
            assert query(upgraded, "porto") == [("/lib/a/move.mp3", 3.0, "[Porto] after all.")]
            assert upgraded.forget(["/lib/a/move.mp3"]) == 1
            assert query(upgraded, "porto") == []
        finally:
            upgraded.close()
def test_a_job_is_indexed_in_the_commit_that_marks_it_done(store: SqlStore) -> None:
    """The finisher's one transaction: done and searchable together; an index that cannot
    take the entries costs only them (told to ``failed``), never the done job."""
    failures: list[str] = []
    text = "The budget review moves to Thursday."
    for path in ("/lib/kept.mp3", "/lib/unindexed.mp3"):
        job_id = held_result(store, path, text)
        with store._tx() as x:
            store._x(x, "UPDATE jobs SET state='fetched' WHERE id=?", (job_id,))
        if path == "/lib/unindexed.mp3":  # the index is broken under the store
            with store._tx() as x:
                store._x(x, "DROP TABLE search_fts" if isinstance(store, SqliteStore) else
                            "ALTER TABLE search_docs RENAME TO search_docs_away")
        job = store.get(path)
        assert job is not None
        entry = Indexing(doc(path, (3.0, text), job_id=job_id), failures.append)
        assert store.mark_done(job, 10.0, index=entry)
        assert store.get(path).state is State.DONE  # type: ignore[union-attr]
        if path == "/lib/kept.mp3":
            assert query(store, "thursday") == [
                ("/lib/kept.mp3", 3.0, "The budget review moves to [Thursday].")]
            assert failures == []
    assert len(failures) == 1 and failures[0]
