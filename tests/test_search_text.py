"""The pure parts of search: how a query reads, times and snippets as printed, cues packed
and read back, and the subtitle and text files a reindex reads."""

from __future__ import annotations

import itertools
import json

import pytest

from sttwatch.search.entries import subtitle_file_cues, text_file_cues
from sttwatch.search.hits import clock, marked, snippet
from sttwatch.search.query import QueryError, parse
from sttwatch.store.search import IndexedCue, Term, page_words, pairs_of, words
from sttwatch.store.searchpack import (
    may_have,
    may_hold,
    pack_cues,
    pack_page,
    pack_pairs,
    pack_words,
    unpack_cues,
    unpack_page,
)
from sttwatch.store.searchsql import bloom_test, body_of, fts5_query


def test_queries_read_as_words_phrases_prefixes_and_speakers() -> None:
    q = parse('Budget "Second  Quarter" afternoo* speaker:"Alice Martin" Café')
    assert q.terms == (Term(("budget",)), Term(("second", "quarter")),
                       Term(("afternoo",), True), Term(("cafe",)))
    assert q.speakers == ("alice", "martin")
    assert parse("can't").terms == (Term(("can", "t")),)  # as the index cuts it
    # the engines keep no positions: a phrase asks them for its words, checked after
    assert fts5_query(q.terms) == '"budget" AND "second" AND "quarter" AND "afternoo" * AND ' \
        '"cafe"'
    # PostgreSQL: the filter's bits, numbered here, tested by the server
    assert bloom_test("d.sig", [7, 2 ** 34]) == (
        "get_bit(d.sig, mod(7, 8 * length(d.sig))::int) = 1 AND "
        "get_bit(d.sig, mod(17179869184, 8 * length(d.sig))::int) = 1")


@pytest.mark.parametrize("bad", ['"open', "a*b", "**", "", "  ", "-- ...", "speaker:x*",
                                 '""', "bud-*"])
def test_what_cannot_be_read_is_refused(bad: str) -> None:
    with pytest.raises(QueryError):
        parse(bad)


def test_words_fold_case_and_accents_whatever_the_script() -> None:
    assert words("Ærøskøbing, CAFÉ; naïve—Straße 42") == ["ærøskøbing", "cafe", "naive",
                                                          "strasse", "42"]
    assert words("Привет, мир") == ["привет", "мир"]


def test_times_and_marks_as_printed() -> None:
    assert [clock(t) for t in (0.0, 754.5, 3599.99, 36_000.0, None)] == [
        "00:00:00", "00:12:34", "00:59:59", "10:00:00", "--:--:--"]
    assert marked("the second quarter ends", [(4, 10), (11, 18)]) == \
        "the [second quarter] ends"
    long = "word " * 60 + "target" + " tail" * 60
    text, marks = snippet(long, [(300, 306)])
    assert len(text) <= 162 and text.startswith("…") and text.endswith("…")
    assert marked(text, marks).count("[target]") == 1


def test_cues_pack_and_read_back_exactly() -> None:
    cues = (IndexedCue(0.52, 3.19, "Speaker 1", "Good  morning,\tall."),
            IndexedCue(3.49, 6.5, None, "Let's start."), IndexedCue(None, None, None, "Untimed"),
            IndexedCue(7654.321, 7655.0, "Alice", "Later."))
    assert unpack_cues(pack_cues(cues)) == (
        IndexedCue(0.52, 3.19, "Speaker 1", "Good morning, all."), cues[1], cues[2], cues[3])


def test_subtitle_and_text_files() -> None:
    srt = "1\n00:00:00,520 --> 00:00:03,190\nSpeaker 1: Good morning,\nand thanks.\n\n" \
          "2\r\n01:02:03,004 --> 01:02:04,000\r\nNote: no speaker here.\r\n"
    assert subtitle_file_cues(srt, vtt=False) == (
        IndexedCue(0.52, 3.19, "Speaker 1", "Good morning, and thanks."),
        IndexedCue(3723.004, 3724.0, None, "Note: no speaker here."))
    vtt = "WEBVTT\n\nNOTE a comment\n\n00:03.490 --> 00:06.500\n<v Speaker 2>Budget &amp; " \
          "<i>plan</i>\n"
    assert subtitle_file_cues(vtt, vtt=True) == (
        IndexedCue(3.49, 6.5, "Speaker 2", "Budget & plan"),)
    assert text_file_cues("Speaker 1: Hello\nthere.\n\n\nSecond paragraph.\n") == (
        IndexedCue(None, None, "Speaker 1", "Hello there."),
        IndexedCue(None, None, None, "Second paragraph."))


def test_a_page_packed_against_its_result_reads_back_and_goes_stale_with_it() -> None:
    said = [f"Word{i * 7919 % 1009}," if i % 9 == 0 else f"budget{i * 104729 % 997}"
            for i in range(400)]
    result = json.dumps({"results": {"words": [w.strip(",").lower() for w in said],
                                     "punctuated": said}}, separators=(",", ":")).encode()
    cues = tuple(IndexedCue(i * 2.5, i * 2.5 + 2.0, "Speaker 1" if i % 2 else None,
                            " ".join(said[i * 8:i * 8 + 8])) for i in range(50))
    blob = pack_page(cues, result)
    assert unpack_page(blob, result) == cues
    assert len(blob) < len(pack_cues(cues)) / 3  # the words are the result's, not copied
    assert unpack_page(blob, result.replace(b"budget", b"BUDGET")) is None  # result rewritten
    assert unpack_page(blob, None) is None  # the job is gone
    assert unpack_page(pack_page(cues, None), None) == cues  # nothing to pack against


def test_pairs_of_next_words_are_told_apart_without_reading_the_page() -> None:
    seq = [f"w{i * 7919 % 1000}" for i in range(1000)]
    bloom = pack_pairs(seq)
    assert len(bloom) <= 1000 * 6.24 / 8 + 8  # under a byte a word
    assert all(may_hold(bloom, [(a, b)]) for a, b in itertools.pairwise(seq))
    apart = [(seq[i], seq[i + 2]) for i in range(998)]
    assert sum(may_hold(bloom, [p]) for p in apart) < 0.1 * len(apart)
    assert pairs_of(parse('"a b c" d "e f"*').terms) == [("a", "b"), ("b", "c")]


def test_a_filter_of_the_words_holds_them_and_rules_out_nearly_all_others() -> None:
    said = [f"word{i}" for i in range(500)]
    bloom = pack_words(said + said[:100])  # each word once, however often said
    assert len(bloom) == 688  # 11 bits a word
    assert all(may_have(bloom, w) for w in said)
    assert sum(may_have(bloom, f"other{i}") for i in range(20_000)) < 0.01 * 20_000


def test_a_page_body_is_the_set_of_its_cues_words_however_they_were_cut() -> None:
    """The body FTS5 deletes a page by must be the one it was inserted with: the words of
    each cue (``words``), whether cut from the cues here or handed in (``page_words``)."""
    cues = [IndexedCue(0.0, 1.0, None, "Café CAFÉ cafe, don't stop"),
            IndexedCue(1.0, 2.0, "1", "Plain ASCII: stop_words and 42 x2"),
            IndexedCue(None, None, None,
                       "\uff26\uff55\uff4c\uff4c width, Ünïcödé and \ufb01 ligature")]
    expected = " ".join(sorted({w for c in cues for w in words(c.text)}))
    assert body_of(cues) == expected
    assert body_of(cues, page_words(cues)) == expected
