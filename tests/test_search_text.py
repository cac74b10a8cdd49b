"""The pure parts of search: how a query reads, times and snippets as printed, cues packed
and read back, and the subtitle and text files a reindex reads."""

from __future__ import annotations

import pytest

from sttwatch.search.entries import subtitle_file_cues, text_file_cues
from sttwatch.search.hits import clock, marked, snippet
from sttwatch.search.query import QueryError, parse
from sttwatch.store.search import IndexedCue, Term, words
from sttwatch.store.searchsql import fts5_query, pack_cues, ts_query, unpack_cues


def test_queries_read_as_words_phrases_prefixes_and_speakers() -> None:
    q = parse('Budget "Second  Quarter" afternoo* speaker:"Alice Martin" Café')
    assert q.terms == (Term(("budget",)), Term(("second", "quarter")),
                       Term(("afternoo",), True), Term(("cafe",)))
    assert q.speakers == ("alice", "martin")
    assert parse("can't").terms == (Term(("can", "t")),)  # as the index cuts it
    assert fts5_query(q.terms) == '"budget" AND "second quarter" AND "afternoo" * AND "cafe"'
    assert ts_query(q.terms) == "('budget') & ('second' <-> 'quarter') & ('afternoo':*) & ('cafe')"


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
