"""The backend protocol the pipeline drives, and the registry of backend kinds.

A backend only knows how to start a task and how to ask about it; the pipeline never knows
which one it drives. A new kind is a new module whose class passes ``kind=`` when subclassing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BackendUnavailable

if TYPE_CHECKING:
    from ..config import Config
    from ..sharefile import Opener
    from .media import MediaProbe

# Modules holding the registered kinds; imported on first lookup so an optional kind's
# dependencies are never imported by the ones that do not need them.
_MODULES = {"aimlapi": "sttwatch.backends.aimlapi", "local": "sttwatch.backends.local"}


@dataclass(frozen=True)
class Request:
    """What to transcribe: a local file or a URL, with the model and extra create fields."""

    job_id: int
    model: str
    path: Path | None = None
    url: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # How to read ``path`` (sharefile.py): on a watched share, a block at a time on its
    # mount's worker with the deadline; None: opened directly.
    opener: Opener | None = None
    # The container's streams of the job's version of ``path``, probed once for the screen,
    # this create and the finish (media.Probes); None: the backend probes it itself.
    media: MediaProbe | None = None


@dataclass(frozen=True)
class Created:
    """A task the backend started. ``timeline`` is set when the upload was not the whole
    recording (``api.trim_silence``): the map of the upload's clock onto the recording's,
    ``(start in the upload, start in the source, length)`` per kept piece (sttwatch/timeline.py);
    it is stored with the job so it outlives a restart before the result arrives."""

    generation_id: str
    cost: dict[str, str] | None = None
    timeline: tuple[tuple[float, float, float], ...] | None = None


class TaskState(Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Status:
    state: TaskState
    result: dict[str, Any] | None = None
    error: str | None = None
    raw_status: str | None = None
    known_status: bool = True
    # Failed because the recording's share was away or hung (offline.unreachable), not
    # because of the file: the job waits for its folder instead of failing.
    away: bool = False


@dataclass(frozen=True)
class Finding:
    """One line of ``sttwatch check``: what was seen, and the fix when it is a problem."""

    ok: bool
    text: str
    fix: str = ""


class Backend:
    """Base of every backend kind. Subclasses set ``kind`` by ``class X(Backend, kind=...)``."""

    kind: ClassVar[str] = ""
    # Whether a generation id outlives this process; the local engine's ids do not.
    durable_ids: ClassVar[bool] = True
    # Whether ``api.options`` (the service's create fields) apply to this kind.
    takes_api_options: ClassVar[bool] = True
    registry: ClassVar[dict[str, type[Backend]]] = {}

    @classmethod
    def from_config(cls, cfg: Config, key: str | None) -> Backend:
        """Build from the config's own section; raises BackendUnavailable with the way out."""
        raise NotImplementedError

    @classmethod
    def preflight(cls, cfg: Config, key: str | None) -> list[Finding]:
        """What ``sttwatch check`` can tell about this kind without doing any work (the
        service's answer to a probe, an installed engine); nothing is billed."""
        return []

    @classmethod
    def needs_key(cls) -> bool:
        """Whether this kind cannot run without the API key."""
        return False

    def in_flight_limit(self, cfg: Config) -> int:
        """How many of this backend's jobs one daemon keeps out at once."""
        return cfg.api.max_in_flight

    def __init_subclass__(cls, kind: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind = kind
            Backend.registry[kind] = cls

    @property
    def model_name(self) -> str:
        raise NotImplementedError

    def shaping(self) -> Mapping[str, Any]:
        """Its own settings that shape a result and are not sent as options (``Plan.engine``):
        a result is reused only for a request with the same."""
        return {}

    def create(self, request: Request) -> Created:
        """Start a task. Raises AuthError, TransientError (incl. RateLimited), PermanentError."""
        raise NotImplementedError

    def fetch(self, generation_id: str) -> Status:
        """Ask about a task. Raises ExpiredError for an id the backend no longer knows."""
        raise NotImplementedError

    def set_listener(self, listener: Callable[[str], None]) -> None:
        """Called with a generation id when that task may have finished, so the poller can
        fetch it at once. Remote backends cannot know this and keep the default no-op."""

    def set_progress(self, progress: Callable[[str, float], None]) -> None:
        """Called with a generation id and the fraction done, where the backend can tell
        (the local engine can; the service does not say)."""

    def close(self) -> None:
        """Release sessions, threads and models."""


def kinds() -> tuple[str, ...]:
    return tuple(_MODULES)


def backend_class(kind: str) -> type[Backend]:
    """The class registered for ``kind``; unknown kinds list the known ones."""
    if kind not in _MODULES:
        raise BackendUnavailable(f"unknown backend {kind!r} (known: {', '.join(_MODULES)})")
    importlib.import_module(_MODULES[kind])
    return Backend.registry[kind]
