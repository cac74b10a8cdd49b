"""How a page of cues is kept in the search index without keeping the transcript twice.

A page that comes from a job's stored result keeps its cue times, speakers and word counts,
and its words compressed with zlib against that result (a preset dictionary: the stretch of
the result's decompressed JSON that holds the page's words). The words are in the result
already, in the same order, so they compress to a few bytes a cue; reading them back needs
the result's row, decompressed but not parsed (about 0.1 ms for 1,000 words, against 13 ms
to lay its cues out again from the result). The dictionary's offset and CRC are kept with
the page: a result rewritten since (a retry) no longer matches, and the page reads as
``None`` (stale) until ``sttwatch search --reindex`` or the job's next finish indexes it
again.

A page with no stored result behind it (the srt, vtt or txt of a recording transcribed
before sttwatch saw it) keeps its cues whole, compressed on their own: they are nowhere
else in the state.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import zlib
from collections.abc import Sequence

from .search import IndexedCue

PLAIN = b"P"  # the cues, compressed on their own
BY_RESULT = b"R"  # times and counts, the words compressed against the job's stored result
WINDOW = 32_000  # zlib reaches 32 KiB back: the dictionary plus what precedes in the page
_HEAD = struct.Struct(">cII")  # form of the words (json list or spaced), offset, CRC


def _times(cues: Sequence[IndexedCue]) -> list[str]:
    """``gap<TAB>length`` a cue: milliseconds from the previous cue's end, and its length:
    short numbers that repeat, which compress far better than absolute times."""
    out, prev = [], 0
    for c in cues:
        if c.start is None or c.end is None:
            out.append("\t")
            continue
        a, b = round(c.start * 1000), round(c.end * 1000)
        out.append(f"{a - prev}\t{b - a}")
        prev = b
    return out


def _read_times(fields: Sequence[tuple[str, str]]) -> list[tuple[float | None, float | None]]:
    out: list[tuple[float | None, float | None]] = []
    prev = 0
    for gap, length in fields:
        if not gap:
            out.append((None, None))
            continue
        a = prev + int(gap)
        prev = a + int(length)
        out.append((a / 1000, prev / 1000))
    return out


def _speaker(c: IndexedCue) -> str:
    return " ".join((c.speaker or "").split())


def pack_cues(cues: Sequence[IndexedCue]) -> bytes:
    """One line a cue, ``gap<TAB>length<TAB>speaker<TAB>text``, compressed."""
    lines = [f"{t}\t{_speaker(c)}\t{' '.join(c.text.split())}"
             for t, c in zip(_times(cues), cues, strict=True)]
    return zlib.compress("\n".join(lines).encode(), 9)


def unpack_cues(blob: bytes) -> tuple[IndexedCue, ...]:
    rows = [line.split("\t", 3) for line in zlib.decompress(bytes(blob)).decode().split("\n")]
    times = _read_times([(r[0], r[1]) for r in rows])
    return tuple(IndexedCue(s, e, r[2] or None, r[3]) for (s, e), r in zip(times, rows,
                                                                          strict=True))


def pack_page(cues: Sequence[IndexedCue], result_json: bytes | None) -> bytes:
    """The smallest of: the cues alone, or their words against ``result_json`` (the
    decompressed stored result of the job they were read from) as a JSON list (how a
    result lists its words) or spaced (how it gives a segment's text)."""
    best = PLAIN + pack_cues(cues)
    if not result_json:
        return best
    tokens = [t for c in cues for t in c.text.split()]
    layout = "\n".join(f"{t}\t{_speaker(c)}\t{len(c.text.split())}"
                       for t, c in zip(_times(cues), cues, strict=True))
    for form, text, head in (
            (b"j", json.dumps(tokens, separators=(",", ":")),
             json.dumps(tokens[:4], separators=(",", ":"))[1:-1]),
            (b"s", " ".join(tokens), " ".join(tokens[:4]))):
        at = max(0, result_json.find(head.encode())) if tokens else 0
        zdict = result_json[at:at + WINDOW]
        # the words first: each then lies WINDOW bytes back from its copy in the dictionary
        z = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
        blob = (BY_RESULT + _HEAD.pack(form, at, zlib.crc32(zdict)) +
                z.compress(f"{text}\n{layout}".encode()) + z.flush())
        if len(blob) < len(best):
            best = blob
    return best


def unpack_page(blob: bytes, result_json: bytes | None) -> tuple[IndexedCue, ...] | None:
    """The page's cues; None when its words were packed against a result that is no longer
    the job's (or the job is gone)."""
    blob = bytes(blob)
    kind = blob[:1]
    if kind == PLAIN:
        return unpack_cues(blob[1:])
    if kind != BY_RESULT:
        return unpack_cues(blob)  # a page of schema 4, read by the migration to 5
    if result_json is None:
        return None
    form, at, crc = _HEAD.unpack_from(blob, 1)
    zdict = result_json[at:at + WINDOW]
    if zlib.crc32(zdict) != crc:
        return None
    z = zlib.decompressobj(15, zdict)
    text, _, layout = (z.decompress(blob[1 + _HEAD.size:]) + z.flush()).decode().partition("\n")
    tokens: list[str] = json.loads(text) if form == b"j" else (text.split(" ") if text else [])
    rows = [line.split("\t") for line in layout.split("\n")]
    times = _read_times([(r[0], r[1]) for r in rows])
    out, at_token = [], 0
    for (start, end), (_g, _l, speaker, count) in zip(times, rows, strict=True):
        n = int(count)
        out.append(IndexedCue(start, end, speaker or None,
                              " ".join(tokens[at_token:at_token + n])))
        at_token += n
    return tuple(out)


PAIR_BITS = 6.24  # bits a pair: 5% false positives with 4 hashes (m/n = -ln p / ln(2)^2)
PG_PAIR_BITS = 5.6  # 7%: PostgreSQL's room goes to its filter of the words as well
_PAIR_HASHES = 4
WORD_BITS = 11.0  # bits a word: 0.5% false positives with 8 hashes
_WORD_HASHES = 8


def _probes(item: str, k: int) -> list[int]:
    """Where ``item`` sets its ``k`` bits in a filter of ``m`` bits: each number ``% m``.
    The numbers, not the bits, so that PostgreSQL can take them ``% m`` row by row."""
    digest = hashlib.blake2b(item.encode(), digest_size=8).digest()
    h1, h2 = int.from_bytes(digest[:4], "big"), int.from_bytes(digest[4:], "big") | 1
    return [h1 + i * h2 for i in range(k)]


def _bloom(items: set[str], bits_each: float, k: int) -> bytes:
    m = max(64, -(-int(len(items) * bits_each) // 8) * 8)
    bits = bytearray(m // 8)
    for item in items:
        for p in _probes(item, k):
            bit = p % m
            bits[bit >> 3] |= 1 << (bit & 7)  # as PostgreSQL's get_bit on a bytea counts
    return bytes(bits)


def _has(bloom: bytes, item: str, k: int) -> bool:
    m = len(bloom) * 8
    return not m or all(bloom[p % m >> 3] >> (p % m & 7) & 1 for p in _probes(item, k))


def pair_probes(a: str, b: str) -> list[int]:
    return _probes(f"{a} {b}", _PAIR_HASHES)


def word_probes(word: str) -> list[int]:
    return _probes(word, _WORD_HASHES)


def pack_pairs(seq: Sequence[str], bits: float = PAIR_BITS) -> bytes:
    """A Bloom filter of the page's pairs of next words: a phrase whose pairs are not all in
    it is not in the page, told without reading the page (most candidate pages of a phrase
    of common words hold both words, but apart). 5% of the pages without a pair pass (7% at
    ``PG_PAIR_BITS``); its size says how many bits, so either reads back the same."""
    return _bloom({f"{a} {b}" for a, b in itertools.pairwise(seq)}, bits, _PAIR_HASHES)


def may_hold(bloom: bytes, pairs: Sequence[tuple[str, str]]) -> bool:
    """False: some pair of next words is not in the page. True: it may be."""
    return all(_has(bloom, f"{a} {b}", _PAIR_HASHES) for a, b in pairs)


def pack_words(seq: Sequence[str]) -> bytes:
    """A Bloom filter of the page's words (PostgreSQL's index: docs/search.md says why): a
    page without a word fails it, but for 0.5% of such pages, which reading them rules out."""
    return _bloom(set(seq), WORD_BITS, _WORD_HASHES)


def may_have(bloom: bytes, word: str) -> bool:
    return _has(bloom, word, _WORD_HASHES)
