"""Filesystem calls on watched shares, each mount's on its own thread, with a deadline.

A hung share (a hard NFS mount whose server is gone, a stopped FUSE daemon) blocks every call
on it, and the kernel will not interrupt the thread that made it. So such calls are not made
by the main loop or a stage's thread directly: they go to the worker of the mount they are
on, and the caller waits ``deadline`` seconds at most. A handoff costs about 0.1 ms of CPU,
so calls on a filesystem known to be local (mounts.py) skip it: the watcher (watcher.py)
makes those on the calling thread. Past that the mount is *stuck*: the
caller gets ``ShareHung`` (an ``OSError``, ETIMEDOUT, which the stages treat as a share that
is away), and every further call for that mount is refused at once until the stuck call
returns. So one thread per mount at most is ever stuck, however long the hang.

Workers are daemon threads that nothing joins: a stuck one never keeps the process from
exiting.
"""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from .offline import ShareUnreachable

log = structlog.get_logger("sttwatch.fsgate")

DEADLINE = 5.0  # seconds a call on a watched folder may take before its mount counts as hung
T = TypeVar("T")


class ShareHung(ShareUnreachable):
    """The mount did not answer within the deadline (or is still stuck on a call that did
    not)."""


@dataclass
class _Call:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class _Worker:
    def __init__(self, key: str) -> None:
        self.key = key
        self.calls: queue.Queue[_Call] = queue.Queue()
        self.stuck = False  # a call went past its deadline and has not returned yet
        self.lock = threading.Lock()
        thread = threading.Thread(target=self._run, name=f"fs {key}", daemon=True)
        thread.start()
        self.ident = thread.ident

    def _run(self) -> None:
        while True:
            call = self.calls.get()
            try:
                call.result = call.fn()
            except BaseException as exc:  # handed to the caller, who raises it
                call.error = exc
            call.done.set()
            with self.lock:
                if self.stuck and self.calls.empty():
                    self.stuck = False
                    log.info("share_answers_again", mount=self.key)


class FsGate:
    """One worker per mount (by mount point); ``call`` runs a function there."""

    def __init__(self, deadline: float = DEADLINE) -> None:
        self.deadline = deadline
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def _worker(self, key: str) -> _Worker:
        with self._lock:
            w = self._workers.get(key)
            if w is None:
                w = self._workers[key] = _Worker(key)
            return w

    def stuck(self, key: str) -> bool:
        w = self._workers.get(key)
        return w is not None and w.stuck

    def call(self, key: str, fn: Callable[[], T], what: str = "",
             deadline: float | None = None) -> T:
        """``fn()`` on the worker of mount ``key``; raises what it raised, or ``ShareHung``."""
        w = self._worker(key)
        if threading.get_ident() == w.ident:  # already on that mount's worker: run it here
            return fn()
        with w.lock:
            if w.stuck:
                raise ShareHung(errno.ETIMEDOUT, f"the share at {key} does not answer "
                                "(a call is still stuck on it)", what or key)
            call = _Call(fn)
            w.calls.put(call)
        if not call.done.wait(self.deadline if deadline is None else deadline):
            with w.lock:
                first = not w.stuck
                w.stuck = True
            if first:
                log.warning("share_hung", mount=key, path=what or key,
                            deadline_seconds=self.deadline)
            raise ShareHung(errno.ETIMEDOUT, f"the share at {key} did not answer within "
                            f"{self.deadline:g} s", what or key)
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]

    def post(self, key: str, fn: Callable[[], object]) -> None:
        """``fn()`` on the worker of mount ``key``, not waited for, queued even while the
        mount is stuck: a file's close, which must not block the caller and must still happen
        once the share answers (a refused close would leak the descriptor)."""
        w = self._worker(key)
        if threading.get_ident() == w.ident:
            fn()
            return
        with w.lock:
            w.calls.put(_Call(fn))
