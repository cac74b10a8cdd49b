"""``sttwatch search``: find what was said, across every transcript in the store.

Exit statuses follow grep: 0 hits found, 1 none, 2 a query (or a date) that cannot be read,
or no store to search.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from .. import config as configmod
from ..config import Config
from ..errors import RenderError
from ..exitcodes import ExitCode
from ..store import Store, open_store
from ..store.search import IndexedTranscript, SearchIndex, SearchSpec
from ..transcripts import ANY_LANG, Placement, existing
from ..watcher import accepts
from .entries import FILE_KINDS, cues_of_file, cues_of_result
from .hits import Hit, clock, find_hits, marked, snippet
from .query import QueryError, parse

EPILOG = """exit statuses:
    0  hits were found (or --reindex alone went well)
    1  nothing was found
    2  the query or a date cannot be read, or there is no state to search

query: words (every one must occur), "a phrase", prefix*, speaker:NAME
  sttwatch search -c FILE budget 'march*'
  sttwatch search -c FILE '"second quarter"' --folder ~/meetings --since 2026-01-01
  sttwatch search -c FILE speaker:2 budget --json"""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("search", help="find words, phrases or speakers in every transcript",
                        description=textwrap.fill(
                            "Search every transcript in the state for QUERY and print each "
                            "hit: the recording, the time in it and the cue with the matched "
                            "words [marked], best first.", 79),
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("query", nargs="*", metavar="QUERY",
                    help='words, "a phrase", prefix* or speaker:NAME (all must occur)')
    sp.add_argument("--config", "-c", required=True, type=Path, metavar="FILE",
                    help="the config file (see config.example.yaml)")
    sp.add_argument("--folder", type=Path, metavar="PATH",
                    help="only recordings in this folder (a watch or any folder below one)")
    sp.add_argument("--since", metavar="DATE", help="only recordings made on or after DATE "
                    "(YYYY-MM-DD or YYYY-MM-DDTHH:MM, local time; the file's date)")
    sp.add_argument("--until", metavar="DATE", help="only recordings made before the end of "
                    "DATE (or before DATE when it has a time)")
    sp.add_argument("--limit", type=int, default=20, metavar="N",
                    help="at most N hits (default: 20)")
    sp.add_argument("--json", action="store_true", help="print a JSON array of hits (path, "
                    "start, end, text, speaker, score, job_id)")
    sp.add_argument("--reindex", action="store_true",
                    help="rebuild the index first: every stored result, and the srt, vtt or "
                    "txt beside recordings transcribed before sttwatch saw them")


class DateError(ValueError):
    pass


def when(text: str, *, end: bool) -> float:
    """A date (the whole day for ``end``) or a date and time, in local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DateError(f"cannot read the date {text!r}: write YYYY-MM-DD or "
                        "YYYY-MM-DDTHH:MM") from None
    if end and len(text.strip()) <= 10:
        moment += timedelta(days=1)
    return moment.timestamp()


def cmd_search(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    text = " ".join(args.query)
    try:
        query = parse(text) if text.strip() or not args.reindex else None
        since = when(args.since, end=False) if args.since else None
        until = when(args.until, end=True) if args.until else None
    except (QueryError, DateError) as exc:
        err.write(f"sttwatch search: {exc}\n")
        return ExitCode.CONFIG
    if args.limit < 1:
        err.write("sttwatch search: --limit must be 1 or more\n")
        return ExitCode.CONFIG
    cfg = configmod.load(args.config)
    # A reindex may be the first thing run on a library transcribed before: it makes the
    # state; a search alone never does.
    store = open_store(cfg.state_path, cfg.state_url, create=args.reindex)
    try:
        if not isinstance(store, SearchIndex):
            err.write("sttwatch search: this store has no search index\n")
            return ExitCode.CONFIG
        if args.reindex:
            from_results, from_files = reindex(cfg, store, store)
            (err if query else out).write(
                f"reindexed: {from_results} result(s) from the state, {from_files} "
                "transcript file(s) of recordings transcribed before\n")
        if query is None:
            return ExitCode.OK
        folder = str(args.folder.expanduser().resolve()) if args.folder else None
        spec = SearchSpec(query.terms, query.speakers, folder, since, until, args.limit)
        hits = find_hits(store.search(spec), query, args.limit)
    finally:
        store.close()
    if args.json:
        out.write(json.dumps([h.as_json() for h in hits], ensure_ascii=False, indent=1) + "\n")
    else:
        write_hits(hits, out)
    if not hits:
        err.write(f"sttwatch search: no hits for {text}\n")
        return ExitCode.FAILED
    return ExitCode.OK


def write_hits(hits: Sequence[Hit], out: TextIO) -> None:
    for h in hits:
        who = f"  ({h.speaker})" if h.speaker else ""
        text, marks = snippet(h.text, h.marks)
        out.write(f"{h.path}  {clock(h.start)}{who}\n    {marked(text, marks)}\n")


def reindex(cfg: Config, store: SearchIndex, jobs: Store) -> tuple[int, int]:
    """Everything again from scratch: the stored results, then the transcript files of the
    watched recordings that have none (transcribed before sttwatch saw them)."""
    store.clear_index()
    done: set[str] = set()
    after = 0
    while batch := store.done_with_results(after, 200):
        for job in batch:
            after = job.id
            plan = job.plan
            model = plan.model if plan else ""
            backend = plan.backend if plan else (job.backend or "aimlapi")
            try:
                cues = cues_of_result(job.result or {}, model, backend, job.timeline)
            except RenderError:
                continue
            store.index_transcript(IndexedTranscript(job.path, job.id, model or None,
                                                     job.mtime_ns / 1e9, cues))
            done.add(job.path)
    files = 0
    for watch in cfg.watches:
        for source in _recordings(watch.path, watch.recursive):
            if source in done or not accepts(watch, Path(source)):
                continue
            found = _transcript_file(cfg, Path(source), watch.path)
            if found is None:
                continue
            try:
                cues = cues_of_file(found)
                mtime = os.stat(source).st_mtime
            except OSError:
                continue
            known = jobs.get(source)
            store.index_transcript(IndexedTranscript(source, known.id if known else None,
                                                     None, mtime, cues))
            done.add(source)
            files += 1
    return len(done) - files, files


def _recordings(root: Path, recursive: bool) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        out += [os.path.join(folder, n) for n in names]
    return sorted(out)


def _transcript_file(cfg: Config, source: Path, root: Path) -> Path | None:
    place = Placement(source, root, FILE_KINDS, cfg.output)
    for key in dict.fromkeys(place.keys()):
        for path in place.paths(key, ANY_LANG):
            if found := existing(path):
                return found[0]
    return None


