"""Where jobs live: one interface (``Store``), an embedded SQLite file and a shared
PostgreSQL database behind it. ``open_store`` is how the composition root gets one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .base import Store
from .errors import StoreError, StoreLocked, StoreMissing, StoreUnavailable
from .model import (
    CLAIMED,
    UNFINISHED,
    Admission,
    Claim,
    DaemonInfo,
    Job,
    OutboxEvent,
    Plan,
    Spend,
    State,
)
from .roles import DaemonRegistry, JobStore, Outbox, SpendLedger

__all__ = ["CLAIMED", "UNFINISHED", "Admission", "Claim", "DaemonInfo", "DaemonRegistry", "Job",
           "JobStore", "Outbox", "OutboxEvent", "Plan", "Spend", "SpendLedger", "State", "Store",
           "StoreError", "StoreLocked", "StoreMissing", "StoreUnavailable", "durably",
           "open_store"]

T = TypeVar("T")


def durably(call: Callable[[], T], stop: threading.Event | None = None,
            pause: float = 1.0, give_up_after: float = 600.0) -> T:
    """Run one transition until the store takes it. For the steps after a paid create: the
    generation id is held in memory meanwhile, so a store that restarts costs a wait, not a
    second payment (a daemon that dies meanwhile submits once more, the accepted duplicate)."""
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            return call()
        except StoreUnavailable:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise
            time.sleep(pause)


def open_store(state_path: Path, state_url: str | None, *, create: bool = True) -> Store:
    """The store a config names. ``create=False`` for the commands that only read or edit
    (``status``, ``retry``, ``forget``, ``check``): they never make one."""
    if state_url:
        from .postgres import PostgresStore
        return PostgresStore(state_url, create=create)
    from .sqlite import SqliteStore
    return SqliteStore(state_path, create=create)
