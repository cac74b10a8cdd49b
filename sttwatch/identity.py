"""What a recording is, whatever it is called: the sha256 of its bytes, read once, in blocks.

Computed just before a job would be sent, when the file is about to be read anyway; a
renamed, moved or copied recording then matches an earlier job and takes its paid result.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .sharefile import Opener, plain_open

BLOCK = 1 << 20


def sha256_of(path: Path, opener: Opener = plain_open) -> str:
    """Raises OSError like any read of the file (the caller already handles those);
    ``opener`` gives a file on a watched share whose every block is read with the deadline
    (sharefile.py), so a share that hangs mid-hash raises ``ShareHung`` instead of holding
    the thread."""
    h = hashlib.sha256()
    with opener(path) as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    return h.hexdigest()
