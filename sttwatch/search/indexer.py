"""Keeping the index as transcripts are written: the finisher's one call."""

from __future__ import annotations

import structlog

from ..store import Job, Plan
from ..store.search import SearchIndex
from .entries import document_of_job

log = structlog.get_logger("sttwatch.search")


def index_result(store: object, job: Job, plan: Plan) -> None:
    """Index a job whose transcripts were just written, replacing its earlier entries.
    Called before the job is marked done, so a crash in between indexes it again on the
    retried finish. A failure here is logged and never fails the job: the transcript files
    are what was asked for, and ``sttwatch search --reindex`` repairs the index."""
    if not isinstance(store, SearchIndex) or job.result is None:
        return
    try:
        store.index_transcript(document_of_job(job, plan))
    except Exception as exc:  # the index must never cost a transcript
        log.warning("index_failed", job_id=job.id, path=job.path,
                    error=f"{type(exc).__name__}: {exc}")
