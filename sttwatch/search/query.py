"""The query language: words (all must occur), ``"a phrase"``, ``prefix*`` and
``speaker:NAME`` (or ``speaker:"Full Name"``). Nothing else is an operator, so a query
typed as plain words never fails; what cannot be read raises ``QueryError``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..store.search import Term, words

_TOKEN = re.compile(r'(speaker:)?(?:"([^"]*)"(\*?)|([^\s"]+?)(\*?)(?=[\s"]|$))|(")',
                    re.IGNORECASE)


class QueryError(ValueError):
    """A query that cannot be read; the message says what is wrong with it."""


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...]
    speakers: tuple[str, ...] = ()


def parse(text: str) -> Query:
    terms: list[Term] = []
    speakers: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if text[pos:m.start()].strip():
            raise QueryError(f"cannot read {text[pos:m.start()].strip()!r} in the query")
        pos = m.end()
        speaker, phrase, phrase_star, word, word_star, lone_quote = m.groups()
        if lone_quote:
            raise QueryError('a quote is not closed: write "a phrase" with a quote at each end')
        raw, star = (phrase, phrase_star) if phrase is not None else (word, word_star)
        shown = m.group(0)
        if "*" in raw:
            raise QueryError(f"{shown!r}: '*' goes once, at the end of a word (prefix*)")
        found = words(raw)
        if not found:
            raise QueryError(f"{shown!r} has no letters or digits to search for")
        if speaker:
            if star:
                raise QueryError(f"{shown!r}: speaker: takes a name, not a prefix*")
            speakers += found
            continue
        if star and not re.search(r"[^\W_]$", raw):
            raise QueryError(f"{shown!r}: a prefix* needs a letter or digit before the '*'")
        terms.append(Term(tuple(found), bool(star)))
    if text[pos:].strip():
        raise QueryError(f"cannot read {text[pos:].strip()!r} in the query")
    if not terms and not speakers:
        raise QueryError("the query is empty: give words, \"a phrase\", prefix* or "
                         "speaker:NAME")
    return Query(tuple(terms), tuple(speakers))
