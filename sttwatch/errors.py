"""The error types, each caught at exactly one place.

- ``ConfigError``: raised while loading; ``cli.main`` prints it and exits before logging starts.
- ``AuthError``: the service refused the key; the pipeline pauses all submitting.
- ``TransientError``: worth retrying later; tenacity retries it per request, then the
  pipeline keeps the job queued.
- ``PermanentError``: retrying cannot help; the pipeline fails that one job with the reason.
- ``ExpiredError``: the backend no longer knows a generation id; the job is submitted again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class SttwatchError(Exception):
    """Base of every error sttwatch raises on purpose."""


class ConfigError(SttwatchError):
    """A config file that cannot be used; lists every problem, each naming its key."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{self.path}: invalid configuration:\n{lines}")


class BackendUnavailable(SttwatchError):
    """The chosen backend cannot run here (an optional extra is missing, no key)."""


class AuthError(SttwatchError):
    """The service refused our credentials (401) or our account (403)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class CreditsExhausted(AuthError):
    """The service accepts the key but the account has no credits left (403 that says so)."""


class TransientError(SttwatchError):
    """A failure that may go away: connection trouble, timeouts, 429, 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 status: int | None = None) -> None:
        self.retry_after = retry_after
        self.status = status
        super().__init__(message)


class RateLimited(TransientError):
    """A 429: the service's own limit is lower than ours, so hold back instead of retrying."""


class OutcomeUnknown(TransientError):
    """A create whose request went out but whose answer never came (read timeout, reset):
    the task may exist. Never retried blindly; the pipeline requeues the job and counts it,
    since a second submission is the only kind of duplicate we accept."""


class PermanentError(SttwatchError):
    """This job cannot succeed as it is (bad file, rejected request, failed task)."""


class ExpiredError(SttwatchError):
    """The backend does not know this generation id (expired on the service, or a local id
    from before a restart)."""
