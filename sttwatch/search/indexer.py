"""Keeping the index as transcripts are written: the finisher's one call."""

from __future__ import annotations

import structlog

from ..cues import Layout
from ..store import Job, Plan
from ..store.search import Indexing, SearchIndex
from .entries import document_of_job

log = structlog.get_logger("sttwatch.search")


def index_result(store: object, job: Job, plan: Plan,
                 layout: Layout | None = None) -> Indexing | None:
    """The entries of a job whose transcripts were just written, for the store to write in
    the transaction that marks it done (``mark_done(..., index=...)``): a crash before that
    commit leaves neither, and the retried finish indexes it. A failure here is logged and
    never fails the job: the transcript files are what was asked for, and
    ``sttwatch search --reindex`` repairs the index. ``layout``: the result as the
    transcripts were written from it, so it is read and cut into cues once a finish."""
    if not isinstance(store, SearchIndex) or job.result is None:
        return None

    def failed(error: str) -> None:
        log.warning("index_failed", job_id=job.id, path=job.path, error=error)

    try:
        return Indexing(document_of_job(job, plan, layout), failed)
    except Exception as exc:  # the index must never cost a transcript
        failed(f"{type(exc).__name__}: {exc}")
        return None
