"""What a recording is, whatever it is called: the sha256 of its bytes, read once, in blocks.

Computed just before a job would be sent, when the file is about to be read anyway; a
renamed, moved or copied recording then matches an earlier job and takes its paid result.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20


def sha256_of(path: Path) -> str:
    """Raises OSError like any read of the file (the caller already handles those)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    return h.hexdigest()
