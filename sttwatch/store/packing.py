"""How a done result is kept in its row: compact, and decoded to exactly the dict that came in.

A paid result is kept for renames, copies and ``retry --render``, so it must come back exactly;
but a 1,000-word answer is ~95 KB of JSON, most of it the same five keys a thousand times and
times in steps of a millisecond. Before compressing, the JSON is rewritten losslessly:

* a list of dicts that all have the same keys (in the same order) becomes its columns;
* a list of floats that are all whole multiples of 10^-k becomes integer steps of 10^-k;
* a transcript equal to its words' ``punctuated_word`` joined by spaces is left out (rebuilt).

The rewrite is then decoded again and compared with the input (it keeps key order and types
by construction; ``-0.0`` and non-finite floats are not rewritten); anything it cannot carry
exactly (an unusual shape, a marker key in the data) is kept in the plain compressed form
instead. On the rewritten form zlib comes within 10% of LZMA at a seventh of its CPU, so zlib
it is. Older forms stay readable: ``z:`` (zlib, base64) and plain JSON, so rows written before
are converted only when they are next written (a rename, a copy, a retry).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import zlib
from collections.abc import Mapping
from typing import Any

COMPACT = "c1:"
ZLIB = "z:"
MARK = "\x00"  # the key of a rewritten node; a result using it is kept plain
_SCALES = (10, 100, 1000, 10_000, 100_000, 1_000_000)
_SCALARS = {str, int, float, bool, type(None)}


class _Join:
    """Stands for a transcript to rebuild from its sibling words."""


_JOIN = _Join()


def pack(result: Mapping[str, Any]) -> tuple[str, Any]:
    """The row's text and a decoded copy of it (equal to ``result``, sharing nothing with it):
    what a transition returns without decoding the row it just wrote."""
    try:
        packed = _dumps(_encode(result))
        copy = _decode(json.loads(packed))
        if copy == result:  # the rewrite keeps key order and types by construction
            text = base64.b64encode(zlib.compress(packed.encode(), 9)).decode("ascii")
            return COMPACT + text, copy
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):
        pass  # a shape the rewrite does not carry: the plain form below keeps it whole
    raw = _dumps(result)
    return ZLIB + base64.b64encode(zlib.compress(raw.encode(), 9)).decode("ascii"), json.loads(raw)


def unpack_result(text: str) -> Any:
    if text.startswith(COMPACT):
        return _decode(json.loads(zlib.decompress(base64.b64decode(text[len(COMPACT):]))))
    if text.startswith(ZLIB):
        return json.loads(zlib.decompress(base64.b64decode(text[len(ZLIB):])))
    return json.loads(text)  # a plain result from an older state file


def stored_json(text: str) -> bytes:
    """The JSON a stored result decompresses to, without parsing it: the search index
    compresses a page's words against these bytes (sttwatch/store/searchpack.py)."""
    if text.startswith(COMPACT):
        return zlib.decompress(base64.b64decode(text[len(COMPACT):]))
    if text.startswith(ZLIB):
        return zlib.decompress(base64.b64decode(text[len(ZLIB):]))
    return text.encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _encode(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {k: _encode(v) for k, v in value.items()}
        if _joined(value):
            out["transcript"] = {MARK: "j"}
        return out
    if isinstance(value, list):
        if len(value) >= 2 and all(isinstance(x, dict) for x in value):
            keys = list(value[0])
            if all(list(x) == keys for x in value):
                return {MARK: "c", "k": keys, "v": [_encode([x[k] for x in value]) for k in keys]}
        kinds = {type(x) for x in value}
        if kinds == {float} and len(value) >= 2:
            steps = _steps(value)
            if steps is not None:
                return steps
        if kinds <= _SCALARS:
            return value
        return [_encode(x) for x in value]
    return value


def _joined(d: Mapping[str, Any]) -> bool:
    words, text = d.get("words"), d.get("transcript")
    return (isinstance(text, str) and isinstance(words, list) and bool(words)
            and all(isinstance(w, dict) and isinstance(w.get("punctuated_word"), str)
                    for w in words)
            and text == " ".join(w["punctuated_word"] for w in words))


def _steps(values: list[float]) -> dict[str, Any] | None:
    if not all(map(math.isfinite, values)):
        return None
    if 0.0 in values and any(x == 0 and math.copysign(1.0, x) < 0 for x in values):
        return None  # -0.0 would come back as 0.0
    head = values[:16]
    for scale in _SCALES:
        if [round(x * scale) / scale for x in head] != head:
            continue  # most scales fail on the first few values: skip the whole list
        ints = [round(x * scale) for x in values]
        if [n / scale for n in ints] == values:
            return {MARK: "d", "s": scale,
                    "v": [ints[0]] + [b - a for a, b in itertools.pairwise(ints)]}
    return None


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get(MARK)
        if kind == "c":
            columns = [_decode(c) for c in value["v"]]
            return [dict(zip(value["k"], row, strict=True)) for row in zip(*columns, strict=True)]
        if kind == "d":
            scale, total, out = value["s"], 0, []
            for step in value["v"]:
                total += step
                out.append(total / scale)
            return out
        if kind == "j":
            return _JOIN
        d = {k: _decode(v) for k, v in value.items()}
        if d.get("transcript") is _JOIN:
            d["transcript"] = " ".join(w["punctuated_word"] for w in d["words"])
        return d
    if isinstance(value, list):
        if {type(x) for x in value} <= _SCALARS:
            return value
        return [_decode(x) for x in value]
    return value
