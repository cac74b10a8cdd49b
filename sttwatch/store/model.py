"""What the store hands out: frozen jobs, their states, and the plan fixed at admission."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class State(str, Enum):
    SEEN = "seen"
    SUBMITTING = "submitting"
    PENDING = "pending"
    FETCHED = "fetched"
    DONE = "done"
    FAILED = "failed"


UNFINISHED = (State.SEEN, State.SUBMITTING, State.PENDING, State.FETCHED)
# States in which a job belongs to one daemon, under a lease it must keep renewing.
CLAIMED = (State.SUBMITTING, State.PENDING, State.FETCHED)


@dataclass(frozen=True)
class Plan:
    """How a job is transcribed and written, decided once when it is admitted: a reload
    that changes the config changes new jobs only, never one already on its way."""

    backend: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] = ("txt",)
    root: str = ""  # the watched folder the file belongs to (mirrored output trees)
    # Settings of the engine itself that shape the result and are not sent as options (the
    # local engine's task and default language): part of what a result may be reused for.
    engine: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "options": dict(self.options),
                "formats": list(self.formats), "root": self.root,
                **({"engine": dict(self.engine)} if self.engine else {})}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Plan:
        return cls(str(raw["backend"]), str(raw["model"]), dict(raw.get("options") or {}),
                   tuple(raw.get("formats") or ("txt",)), str(raw.get("root") or ""),
                   dict(raw.get("engine") or {}))

    def reuse_key(self) -> str:
        """Everything that shapes the result, in one canonical form: two jobs with the same
        bytes and this key would get the same answer, so one may take the other's. Formats and
        folders are left out: they shape the files, not the result."""
        canon = json.dumps({"backend": self.backend, "model": self.model,
                            "options": dict(self.options), "engine": dict(self.engine)},
                           sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canon.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Admission:
    """A settled file offered to the store. ``keys`` are the output names it may claim,
    preferred first; ``done_note`` records it as already transcribed instead of queueing it,
    holding ``keys[0]`` (the name of the transcripts found), or, when another source holds
    that name, queues it under the next free one."""

    path: str
    size: int
    mtime_ns: int
    plan: Plan
    keys: Sequence[str] = ()
    done_note: str | None = None
    # The bytes' digest, given when the store knows the old version's: the same bytes under
    # a newer mtime (another host's view, a touch) are not a new version.
    sha256: str | None = None
    # Made from a read of the store that found no digest for this path (so it was not
    # hashed): a row that has one by the time the offer lands learned it since (another
    # host finished it meanwhile), and the offer is no evidence of new bytes.
    digest_read: bool = False


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    size: int
    mtime_ns: int
    state: State
    generation_id: str | None
    attempts: int
    polls: int
    submitted_at: float | None
    next_at: float
    error: str | None
    result: dict[str, Any] | None
    cost: dict[str, str] | None
    created_at: float
    updated_at: float
    finished_at: float | None
    backend: str | None
    output_key: str | None
    plan: Plan | None
    owner: str | None
    lease_until: float
    defers: int = 0  # failed transcript writes of this result so far
    sha256: str | None = None  # of the version that was sent (or recognised)
    reused_from: str | None = None  # the source whose paid result this job took
    # (upload start, source start, length) per piece of a trimmed upload; sttwatch/timeline.py
    timeline: tuple[tuple[float, float, float], ...] | None = None
    request_key: str | None = None  # Plan.reuse_key of its plan: what its result answers


@dataclass(frozen=True)
class Spend:
    """A booking in the spend ledger (``day`` UTC 'YYYY-MM-DD'): what a create cost."""

    day: str
    usd: float
    audio_seconds: float
    creates: int


@dataclass(frozen=True)
class Claim:
    """What a claim took, and when the earliest job the claimer could take next is due (read
    in the claim's own transaction: a stage loop's turn is one round trip, not two)."""

    jobs: list[Job]
    next_due: float | None


@dataclass(frozen=True)
class DaemonInfo:
    """One daemon's heartbeat as ``status`` shows it."""

    host_id: str
    pid: int
    hostname: str
    heartbeat: float
    info: Mapping[str, Any]


@dataclass(frozen=True)
class OutboxEvent:
    """A completion event written with the transition that ended its job, waiting to be
    delivered; ``id`` is stable across every attempt, so a receiver can drop repeats."""

    id: str
    job_id: int
    body: Mapping[str, Any]
    created_at: float
    attempts: int
    last_error: str | None
