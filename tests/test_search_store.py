"""The search index's store contract, on a real SQLite file and a real PostgreSQL server:
indexing, ranking, phrases, prefixes, filters, replacement, forget, and a store made by an
older sttwatch getting the index by migration."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from stores import STORE_KINDS, contract_store

from sttwatch.search.hits import find_hits, marked
from sttwatch.search.query import parse
from sttwatch.store import Admission, Plan
from sttwatch.store.search import IndexedCue, IndexedTranscript, SearchSpec
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
