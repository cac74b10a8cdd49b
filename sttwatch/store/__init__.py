"""Where jobs live: one interface (``Store``), an embedded SQLite file and a shared
PostgreSQL database behind it. ``open_store`` is how the composition root gets one."""

from __future__ import annotations

from pathlib import Path

from .base import Store
from .errors import StoreError, StoreLocked, StoreMissing, StoreUnavailable
from .model import CLAIMED, UNFINISHED, Admission, DaemonInfo, Job, Plan, State

__all__ = ["CLAIMED", "UNFINISHED", "Admission", "DaemonInfo", "Job", "Plan", "State",
           "Store", "StoreError", "StoreLocked", "StoreMissing", "StoreUnavailable",
           "open_store"]


def open_store(state_path: Path, state_url: str | None, *, create: bool = True) -> Store:
    """The store a config names. ``create=False`` for the commands that only read or edit
    (``status``, ``retry``, ``forget``, ``check``): they never make one."""
    if state_url:
        from .postgres import PostgresStore
        return PostgresStore(state_url, create=create)
    from .sqlite import SqliteStore
    return SqliteStore(state_path, create=create)
