"""Errors of the store, each caught at one place: ``cli.main`` for those that stop a command
(exit 2), the stage loops for ``StoreUnavailable`` (wait, say so, go on)."""

from __future__ import annotations

from ..errors import SttwatchError


class StoreError(SttwatchError):
    """The store cannot be used as it is; the message names it and the way out."""


class StoreMissing(StoreError):
    """A command that only reads or edits found no store (the daemon never ran here)."""


class StoreLocked(StoreError):
    """Another daemon holds this SQLite state file."""


class StoreUnavailable(SttwatchError):
    """The store did not answer (a PostgreSQL restart, a full disk under the state file):
    worth waiting for; nothing was changed."""
