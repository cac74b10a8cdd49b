"""Where transcripts go and how a stored result becomes files there.

The one place that knows the naming rule, so the writer and the scanner (which skips sources
whose transcripts are already up to date) can never disagree about it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .outputs import get_format, write_atomic
from .store import Job


def output_paths(source: Path, formats: Sequence[str]) -> list[Path]:
    """``dir/name.ext`` gives ``dir/name.txt`` (and ``.json``, ``.srt``, ``.vtt``)."""
    return [source.with_name(f"{source.stem}.{kind}") for kind in formats]


def up_to_date(source: Path, formats: Sequence[str], source_mtime_ns: int) -> bool:
    """Every transcript exists and is newer than the source: nothing to do for this file."""
    try:
        return all(p.stat().st_mtime_ns >= source_mtime_ns
                   for p in output_paths(source, formats))
    except OSError:
        return False


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def header(job: Job, backend: str, model: str, now: float) -> dict[str, Any]:
    """Our part of the json output: enough to tell which file and which run made it."""
    source = Path(job.path)
    return {"source": str(source), "size": job.size, "sha256": _sha256(source),
            "backend": backend, "model": model, "generation_id": job.generation_id,
            "created": _iso(job.submitted_at), "finished": _iso(now), "cost": job.cost}


def write_transcripts(job: Job, result: Mapping[str, Any], formats: Sequence[str],
                      job_header: Mapping[str, Any]) -> list[Path]:
    """Render every format first, then write each atomically: a render error leaves no file."""
    source = Path(job.path)
    rendered = [(path, get_format(kind).render(result, job_header))
                for path, kind in zip(output_paths(source, formats), formats, strict=True)]
    for path, text in rendered:
        write_atomic(path, text)
    return [p for p, _ in rendered]
