"""Reading loosely-typed JSON payloads: a wrong shape yields None or nothing, never an
exception, so one malformed field costs only that field and never the whole transcript."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def get(obj: Any, *path: str | int) -> Any:
    """Walk a payload, yielding None instead of raising on any wrong shape."""
    for key in path:
        if type(obj) is dict and type(key) is str:  # what JSON gives, told without the ABCs
            if key not in obj:
                return None
        elif isinstance(key, int):
            if not isinstance(obj, Sequence) or isinstance(obj, str) or len(obj) <= key:
                return None
        elif not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def number(value: Any) -> float | None:
    """Timings come from JSON, so booleans, strings, NaN and infinities must not pass."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def text(item: Any, *keys: str) -> str | None:
    """The first non-blank string among ``keys``, inner whitespace collapsed to one space."""
    for key in keys:
        value = get(item, key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return None
