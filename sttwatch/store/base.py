"""The one storage interface every stage talks to; SQLite and PostgreSQL implement it.

Its verbs are the job's state transitions (the huey way: one ``BaseStorage``, several
backends, one contract test suite in tests/test_store.py run against each). A job moves
``seen -> submitting -> pending -> fetched -> done | failed``; while it is submitting, pending
or fetched it belongs to one daemon (``owner``) under a lease that daemon renews. Every
transition that a daemon makes on a job it claimed is fenced by that ownership: a daemon that
lost its lease (stalled, partitioned, presumed dead) changes nothing, because another has taken
the job over. Transitions return False (or None) when the fence or the job's state refused them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..timeline import Timeline
from .keys import WatchKeys
from .model import Admission, Claim, DaemonInfo, Job, OutboxEvent, Plan, Spend, State
from .search import Indexing


class Store(ABC):
    """A store of jobs. Thread-safe: stages call it from several threads."""

    location: str  # what messages and ``status`` show: a file path or a URL without password

    # --- discovery ---------------------------------------------------------------------------
    @abstractmethod
    def get(self, path: str) -> Job | None: ...

    @abstractmethod
    def versions(self, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of the known ones among ``paths``: lets admission skip unchanged
        files with one query per batch."""

    @abstractmethod
    def unknown(self, listings: Sequence[Sequence[tuple[str, int, int]]]
                ) -> list[tuple[str, int, int]]:
        """The (path, size, mtime_ns) of a scan's listings (one folder's files each) the
        store does not hold at that size and mtime: new and changed files, and those whose
        name cannot be stored (not UTF-8; admission says so). One read per thousand listed
        files, however many folders; a whole folder may be read where that costs no more
        than looking each path up."""

    @abstractmethod
    def admit(self, batch: Sequence[Admission], now: float, owner: str | None = None
              ) -> list[Job]:
        """Record settled files in one transaction. A new path, or a new version of a known
        one, becomes a ``seen`` job with its plan and the first output name of its ``keys``
        no other row holds (names are unique: a file whose names are all held is left for
        a later scan); returns those. Versions move forward only: a newer mtime, or the same
        with another size; an older one, the same bytes (``Admission.sha256`` equal to the
        row's: only the version is updated, the result kept) or a row another daemon than
        ``owner`` holds under a live lease are never reset. Unchanged files are left alone."""

    @abstractmethod
    def key_by_watch(self, keys: WatchKeys, *, migrate: bool = False) -> int:
        """From now on, key jobs by watch name and the path within it (``WatchKeys``), so
        hosts mounting one share at different paths share its rows. ``migrate``: rows kept by
        absolute path under these folders are re-keyed (returns how many)."""

    @abstractmethod
    def output_holder(self, key: str) -> str | None:
        """The source whose transcripts go by this name, if any job claimed it."""

    @abstractmethod
    def output_holders(self, keys: Sequence[str]) -> dict[str, str]:
        """The holding source of each of ``keys`` that a row holds: one read per batch."""

    @abstractmethod
    def known_sha256(self, paths: Sequence[str]) -> dict[str, str]:
        """The digest of the version each known path's row was sent (or recognised) with."""

    # --- the lease -----------------------------------------------------------------------------
    @abstractmethod
    def recover(self, owner: str, now: float, lease: float, volatile: Iterable[str],
                default_backend: str | None = None) -> dict[str, int]:
        """At start-up, take back this daemon's own rows (never another's): a job caught inside
        its create goes back to ``seen`` (the one duplicate we accept); a pending id of a
        backend whose ids die with the process (``volatile``) is queued again without counting
        an attempt; other pending ids are polled at once; fetched results are written. Queued
        jobs from before plans were stored get ``default_backend``."""

    @abstractmethod
    def reap(self, owner: str, now: float, volatile: Iterable[str]) -> dict[str, int]:
        """Take over what daemons whose lease ran out left in the middle: their creates go
        back to the queue, their volatile ids are queued again. Their durable pending ids and
        fetched results need no reset: ``claim_poll`` and ``claim_finish`` take them."""

    @abstractmethod
    def renew(self, owner: str, now: float, lease: float) -> int:
        """Extend the lease of every job this daemon holds."""

    # --- submitting ----------------------------------------------------------------------------
    @abstractmethod
    def claim_submit(self, owner: str, now: float, lease: float,
                     backends: Sequence[str]) -> Job | None:
        """Move one due ``seen`` job of one of ``backends`` to ``submitting`` and count the
        attempt. Committed before the create call, so a crash inside it is visible later."""

    @abstractmethod
    def set_pending(self, job: Job, generation_id: str, now: float, first_poll_at: float,
                    cost: Mapping[str, str] | None, sha256: str | None = None,
                    timeline: Timeline | None = None, spend: Spend | None = None
                    ) -> Job | None:
        """Commit the id the moment the create call returns, with the map of a trimmed
        upload's times onto the recording's (sttwatch/timeline.py), and what the create
        cost in the spend ledger in the same transaction (booked even when the job moved on
        meanwhile: the task was paid for)."""

    @abstractmethod
    def find_result(self, sha256: str, backend: str, exclude: int) -> Job | None:
        """A done job of ``backend`` whose source had exactly these bytes, with its result:
        a renamed, moved or copied recording is not paid for twice."""

    @abstractmethod
    def find_result_for(self, sha256: str, request_key: str, exclude: int) -> Job | None:
        """A done job whose source had exactly these bytes and whose plan had this
        ``Plan.reuse_key`` (backend, model, options as sent, engine settings): its result is
        what a create of this job would return."""

    @abstractmethod
    def adopt(self, job: Job, donor: Job, sha256: str, now: float) -> Job | None:
        """A claimed job takes ``donor``'s result instead of a create (its attempt is not
        counted) and goes on to be written like any fetched result."""

    @abstractmethod
    def reused(self) -> int:
        """How many jobs were answered from an earlier result."""

    @abstractmethod
    def requeue(self, job: Job, now: float, not_before: float, reason: str, *,
                refund_attempt: bool = False) -> bool:
        """Put a submitting or pending job back in the queue (outage, expired id, deadline)."""

    @abstractmethod
    def in_flight(self, owner: str) -> dict[str, int]:
        """This daemon's submitting and pending jobs, by backend: its in-flight limit is
        counted here, not in memory."""

    # --- polling -------------------------------------------------------------------------------
    @abstractmethod
    def claim_poll(self, owner: str, now: float, lease: float, limit: int,
                   volatile: Iterable[str], backends: Sequence[str]) -> list[Job]:
        """Due pending jobs of ``backends`` this daemon owns, or whose owner's lease ran out
        (except volatile ids, which only their owner can ask about). Their ``next_at``
        moves a lease ahead while the fetch runs, so no loop takes them twice."""

    @abstractmethod
    def claim_poll_due(self, owner: str, now: float, lease: float, limit: int,
                       volatile: Iterable[str], backends: Sequence[str]) -> Claim:
        """``claim_poll``, and then ``next_due(PENDING, backends, owner)`` in the same
        transaction."""

    @abstractmethod
    def by_generation_id(self, owner: str, generation_id: str) -> Job | None: ...

    @abstractmethod
    def schedule_poll(self, job: Job, next_at: float, now: float) -> bool: ...

    @abstractmethod
    def set_fetched(self, job: Job, result: Mapping[str, Any], now: float,
                    service_seconds: float) -> Job | None:
        """Store the finished result before any transcript is written."""

    @abstractmethod
    def recent_service_seconds(self, n: int = 32) -> list[float]: ...

    # --- finishing -----------------------------------------------------------------------------
    @abstractmethod
    def claim_finish(self, owner: str, now: float, lease: float, limit: int) -> list[Job]:
        """Due fetched jobs this daemon owns or whose owner's lease ran out."""

    @abstractmethod
    def claim_finish_due(self, owner: str, now: float, lease: float, limit: int) -> Claim:
        """``claim_finish``, and then ``next_due(FETCHED, None, owner)`` in the same
        transaction."""

    @abstractmethod
    def defer(self, job: Job, until: float, reason: str, now: float) -> bool:
        """A write that failed for a reason that may pass: keep the billed result, try later
        (the retry time lives in the row, where any daemon sees it)."""

    @abstractmethod
    def mark_done(self, job: Job, now: float, note: str | None = None,
                  event: Mapping[str, Any] | None = None,
                  index: Indexing | None = None) -> bool:
        """``event`` (with its ``event_id``) goes into the outbox in the same transaction, and
        ``index`` into the search index (a store without one ignores it)."""

    @abstractmethod
    def mark_failed(self, job: Job, reason: str, now: float,
                    event: Mapping[str, Any] | None = None) -> bool: ...

    # --- the completion hooks' outbox -----------------------------------------------------------
    @abstractmethod
    def claim_event(self, owner: str, now: float, lease: float) -> OutboxEvent | None:
        """The oldest due event, held for ``lease`` seconds: if its deliverer dies, another
        delivers it after that, or its own host at once when it starts again (the only way
        one is sent twice). One deliverer per host: an event this owner holds is stale."""

    @abstractmethod
    def event_delivered(self, event_id: str, owner: str | None = None) -> bool:
        """Delete a delivered event; with ``owner``, only while that deliverer still holds
        it (so an event is marked delivered once, by the one that held it)."""

    @abstractmethod
    def event_retry(self, event_id: str, next_at: float, error: str,
                    owner: str | None = None) -> bool: ...

    @abstractmethod
    def outbox(self) -> dict[str, Any]:
        """Undelivered events: count, oldest ``created_at``, the oldest one's last error."""

    # --- the budget's ledger ------------------------------------------------------------------
    @abstractmethod
    def add_spend(self, day: str, usd: float, audio_seconds: float, now: float) -> None:
        """Add one create's cost to its UTC day ('YYYY-MM-DD'); ``forget`` never touches it."""

    @abstractmethod
    def charge_within(self, day: str, month_start: str, usd: float, audio_seconds: float,
                      now: float, *, usd_per_day: float | None = None,
                      usd_per_month: float | None = None,
                      audio_seconds_per_day: float | None = None) -> str | None:
        """Book one create's estimate on ``day`` unless it would pass a cap; returns the cap
        it would pass (and books nothing). Check and charge are one transaction, serialised
        across daemons, so several hosts stop at a cap together instead of each passing it
        by one create."""

    @abstractmethod
    def adjust_spend(self, day: str, usd: float, audio_seconds: float, creates: int,
                     now: float) -> None:
        """Correct a booked estimate (the service's word on the cost, or a create that was
        never made: negative amounts)."""

    @abstractmethod
    def spend_by_day(self, since: str) -> dict[str, tuple[float, float, int]]:
        """(usd, audio seconds, creates) per day from ``since`` on."""

    @abstractmethod
    def switch_backend(self, job: Job, plan: Plan, now: float) -> bool:
        """A job this daemon is about to submit goes back to the queue with another plan
        (the budget's fallback to the local engine); the attempt is not counted."""

    @abstractmethod
    def add_done(self, path: str, size: int, mtime_ns: int, now: float, note: str) -> None:
        """Record a file whose transcript is already up to date, so it is never submitted."""

    # --- operators -----------------------------------------------------------------------------
    @abstractmethod
    def retry(self, now: float, paths: Iterable[str] | None = None, *,
              keep_plan: bool = False) -> int:
        """Queue failed jobs (or these paths, when no daemon has them on their way) again;
        without ``keep_plan`` they are planned again with the running daemon's config."""

    @abstractmethod
    def rerender(self, now: float, paths: Iterable[str] | None = None) -> int:
        """Failed jobs that still hold their paid result go back to ``fetched``: their
        transcripts are written again with no new create."""

    @abstractmethod
    def forget(self, paths: Iterable[str]) -> int: ...

    @abstractmethod
    def counts(self, states: Sequence[State] | None = None) -> dict[str, int]:
        """Jobs per state (every state a key). ``states``: only those counted (the rest 0),
        through the state index: an unfinished few in a library of done ones cost a few
        rows, not the whole table."""

    @abstractmethod
    def stranded(self, backends: Sequence[str], limit: int = 100) -> list[Job]:
        """Queued jobs no backend of ``backends`` can take as planned: planned for another
        kind, or without a plan (legacy rows, ``retry``)."""

    @abstractmethod
    def replan(self, job: Job, plan: Plan, now: float) -> bool:
        """A queued job gets ``plan`` (and its backend); False if it moved meanwhile."""

    @abstractmethod
    def waiting_for_backend(self, backends: Sequence[str],
                            states: Sequence[State] = (State.SEEN, State.PENDING)
                            ) -> dict[str, int]:
        """Queued or pending jobs per planned backend not among ``backends``: what waits
        for a backend this config does not build."""

    @abstractmethod
    def next_due(self, state: State, backends: Sequence[str] | None = None,
                 owner: str | None = None) -> float | None:
        """When the earliest job in ``state`` is due, among those planned for ``backends``
        (None: any). With ``owner``, another daemon's row counts from when its lease ends:
        the time ``owner`` could claim it."""

    @abstractmethod
    def failed(self, limit: int = 20) -> list[Job]: ...

    def noted(self, limit: int = 20) -> list[Job]:
        """Jobs done with a note (not sent: already subtitled, no speech), newest first."""
        return []

    @abstractmethod
    def oldest_unfinished(self) -> Job | None: ...

    @abstractmethod
    def spend(self) -> dict[str, float]: ...

    # --- daemons -------------------------------------------------------------------------------
    @abstractmethod
    def heartbeat(self, host_id: str, pid: int, hostname: str, now: float,
                  info: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def register(self, host_id: str, pid: int, hostname: str, now: float,
                 stale_after: float) -> DaemonInfo | None:
        """Take ``host_id`` for this process in one step: None when taken (free, stale for
        ``stale_after`` seconds, or already this process's), else the live daemon holding it.
        Two daemons started together with one host id cannot both pass."""

    @abstractmethod
    def leave(self, host_id: str) -> None: ...

    @abstractmethod
    def daemons(self) -> list[DaemonInfo]: ...

    @abstractmethod
    def close(self) -> None: ...
