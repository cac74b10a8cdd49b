"""``sttwatch transcribe``: the provider's example turned into a command, on the daemon's
own stages.

The inputs become jobs in a temporary store and go through the very submitter, poller and
finisher the daemon runs (one backend, its throttle, the poll schedule, the same retries and
deadlines); only the last step differs: results are printed in input order instead of written
beside the sources. Nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .backends import Backend, backend_class
from .budget import Budget
from .config import Config
from .errors import CreditsExhausted
from .exitcodes import ExitCode
from .outputs import get_format
from .pipeline import Pipeline
from .plan import Planner, is_url
from .store import Admission, Job, Plan, State, open_store
from .store.sqlite import SqliteStore
from .transcripts import header
from .wiring import build_backend, pipeline_settings


def _progress(err: TextIO) -> tuple[Callable[[str, float], None], Callable[[], None]]:
    """A one-line progress display on a TTY; silent otherwise."""
    tty = err.isatty()

    def show(_gen: str, fraction: float) -> None:
        if tty:
            err.write(f"\r{fraction:4.0%}")
            err.flush()

    def done() -> None:
        if tty:
            err.write("\r     \r")
            err.flush()

    return show, done


def _problem(item: str) -> str | None:
    if is_url(item):
        return None
    path = Path(item)
    if path.is_dir():
        return (f"is a folder; name the recordings in it (e.g. {item.rstrip('/')}/*.mp3), "
                "or watch it with 'sttwatch run'")
    if not path.is_file():
        return "no such file"
    return None


def transcribe_all(cfg: Config, kind: str, key: str | None, inputs: Sequence[str], fmt: str,
                   out: TextIO, err: TextIO, clock: Callable[[], float] = time.time) -> int:
    # One file at a time here: a single worker with every core beats idle extra workers.
    # No error sidecars beside other people's files: the reasons are printed.
    cfg = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, workers=1),
                              output=dataclasses.replace(cfg.output, error_files=False))
    code = ExitCode.OK
    wanted: list[tuple[str, str]] = []  # (input as given, the job's path)
    for item in inputs:
        problem = _problem(item)
        if problem is not None:
            err.write(f"sttwatch: {item}: {problem}\n")
            code = ExitCode.FAILED
        else:
            wanted.append((item, item if is_url(item) else str(Path(item).resolve())))
    if not wanted:
        return code
    backend = build_backend(cfg, kind, key)
    # A paid backend spends from the same budget as the daemon: its caps hold here too, and
    # what is spent goes into the store's ledger.
    ledger = open_store(cfg.state_path, cfg.state_url) if backend_class(kind).needs_key() \
        else None
    try:
        budget = None if ledger is None else Budget(cfg.budget, cfg.api, ledger, clock,
                                                    frozenset({kind}))
        with tempfile.TemporaryDirectory(prefix="sttwatch-transcribe-") as tmp:
            store = SqliteStore(Path(tmp) / "jobs.db")
            try:
                got = _run(cfg, kind, backend, store, wanted, fmt, out, err, clock, budget)
            finally:
                store.close()
    finally:
        backend.close()
        if ledger is not None:
            ledger.close()
    return got if got != ExitCode.OK else code


def _run(cfg: Config, kind: str, backend: Backend, store: SqliteStore,
         wanted: Sequence[tuple[str, str]], fmt: str, out: TextIO, err: TextIO,
         clock: Callable[[], float], budget: Budget | None = None) -> int:
    planner = Planner(cfg, {kind: backend}, kind)
    writer = get_format(fmt)
    finished: dict[str, str] = {}
    lock = threading.Lock()
    changed = threading.Event()

    def sink(job: Job, plan: Plan) -> None:
        assert job.result is not None
        hdr: dict[str, Any] = {**header(job, plan.backend, plan.model, clock()),
                               "source": job.path}
        text = writer.render(job.result, hdr)
        with lock:
            finished[job.path] = text
        changed.set()

    pipeline = Pipeline(store, {kind: backend}, pipeline_settings(cfg, "transcribe"), planner,
                        cfg.output, {kind: backend.in_flight_limit(cfg)}, clock, sink=sink)
    pipeline.submitter.budget = budget
    show, hide = _progress(err)
    backend.set_progress(show)
    now = clock()
    store.admit([Admission(path, 0 if is_url(path) else Path(path).stat().st_size,
                           0 if is_url(path) else Path(path).stat().st_mtime_ns,
                           planner.plan_for(Path.cwd() if is_url(path) else Path(path)))
                 for _item, path in wanted], now)
    stop = threading.Event()
    threads = pipeline.start(stop)
    code = ExitCode.OK
    printed = 0
    try:
        while printed < len(wanted):
            changed.wait(0.2)
            changed.clear()
            refused = pipeline.refused()
            if refused is not None:
                hide()
                credits = isinstance(refused, CreditsExhausted)
                what = "account (out of credits)" if credits else "API key"
                err.write(f"sttwatch: the service refused the {what}: {refused}\n")
                return ExitCode.CREDITS if credits else ExitCode.AUTH
            if budget is not None and budget.held is not None:
                hide()  # waiting for the cap's reset is the daemon's way, not a command's
                err.write(f"sttwatch: not sent: {budget.held}\n")
                return ExitCode.FAILED
            if pipeline.unreachable_for(clock()) > cfg.daemon.once_timeout:
                hide()
                err.write(f"sttwatch: the service did not answer for "
                          f"{cfg.daemon.once_timeout:.0f} s (daemon.once_timeout)\n")
                return ExitCode.UNREACHABLE
            while printed < len(wanted):  # in input order, each as soon as it can be
                item, path = wanted[printed]
                job = store.get(path)
                with lock:
                    text = finished.get(path)
                if text is not None:
                    hide()
                    if len(wanted) > 1 and fmt == "txt":
                        out.write(f"== {item}\n")
                    out.write(text)
                    out.flush()
                elif job is not None and job.state is State.FAILED:
                    hide()
                    err.write(f"sttwatch: {item}: {job.error}\n")
                    code = ExitCode.FAILED
                elif job is None:  # gone: the file vanished before it was sent
                    err.write(f"sttwatch: {item}: no such file\n")
                    code = ExitCode.FAILED
                else:
                    break
                printed += 1
    finally:
        stop.set()
        pipeline.wake_all()
        for t in threads:
            t.join(timeout=20)
        pipeline.poller.close()
    return code
