"""Completion hooks: tell the rest of the system that a job ended, at least once.

The finisher asks ``Completions.event`` for the event of a job it is about to end and hands
it to the store's ``mark_done``/``mark_failed``, which write it to the outbox in the same
transaction (so a crash never drops one). ``Deliverer`` runs in one thread per daemon: it
takes the oldest due event, runs ``hooks.command`` (environment variables) and/or POSTs it to
``hooks.url`` (JSON), deletes it when both succeeded and otherwise tries again later, with
backoff. An event is sent twice only when a daemon dies during its delivery; its
``event_id`` stays the same, so a receiver can drop the repeat.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from .budget import audio_seconds, cost_usd
from .config import HooksConfig
from .pacing import backoff
from .store import Job, Outbox, OutboxEvent, Plan, StoreUnavailable

log = structlog.get_logger("sttwatch.hooks")

LEASE = 120.0  # seconds an event is held by the daemon delivering it, at least
OUTPUT_LIMIT = 500  # characters of a failed command's output kept as its error
CONNECT_SECONDS = 10.0  # the URL's connect timeout
PASSED_ON = ("PATH", "HOME", "LANG")  # what any command needs to start and print


def lease_for(hooks: HooksConfig) -> float:
    """How long a delivery holds its event: longer than the command and the POST can take
    together (each up to ``hooks.timeout``), so no other daemon delivers it meanwhile."""
    return max(LEASE, 2 * hooks.timeout + CONNECT_SECONDS + 60.0)


def hook_environ(environ: Mapping[str, str], hooks: HooksConfig, key_env: str | None,
                 key: str | None = None) -> dict[str, str]:
    """What a hook command inherits: PATH, HOME, LANG, the STTWATCH_* variables and the names
    ``hooks.env`` lists, never the variable holding the API key (nor any holding its value).
    A hook is someone else's program: it gets what it needs, not the daemon's secrets."""
    wanted = set(PASSED_ON) | set(hooks.env or ())
    return {k: v for k, v in environ.items()
            if (k in wanted or k.startswith("STTWATCH_")) and k != key_env
            and not (key and key in v)}


def _duration(job: Job) -> float | None:
    """The recording's length: from the result when the service gave it, else the file."""
    meta = (job.result or {}).get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("duration"), (int, float)):
        return float(meta["duration"])
    try:
        return round(audio_seconds(Path(job.path))[0], 3)
    except OSError:
        return None


class Completions:
    """Builds the event of each job that ends (and feeds the metrics its task time)."""

    def __init__(self, hooks: HooksConfig, credits_per_usd: float,
                 task_time: Callable[[float], None] | None = None) -> None:
        self.hooks = hooks
        self.credits_per_usd = credits_per_usd
        self._task_time = task_time

    def event(self, job: Job, plan: Plan, state: str, reason: str | None,
              transcripts: Sequence[Path]) -> dict[str, Any] | None:
        if state == "done" and self._task_time is not None and job.submitted_at is not None \
                and not job.defers:
            self._task_time(job.updated_at - job.submitted_at)
        if not self.hooks.enabled:
            return None
        return {"event_id": uuid.uuid4().hex, "source": job.path, "state": state,
                "transcripts": [str(p) for p in transcripts], "reason": reason,
                "backend": plan.backend, "model": plan.model, "duration": _duration(job),
                "cost_usd": cost_usd(job.cost, self.credits_per_usd), "job_id": job.id}


def environment(body: Mapping[str, Any]) -> dict[str, str]:
    """The event as ``STTWATCH_*`` variables (empty string for an unknown value)."""
    def text(value: Any) -> str:
        return "" if value is None else str(value)
    return {"STTWATCH_EVENT_ID": text(body.get("event_id")),
            "STTWATCH_SOURCE": text(body.get("source")),
            "STTWATCH_STATE": text(body.get("state")),
            "STTWATCH_TRANSCRIPTS": "\n".join(body.get("transcripts") or []),
            "STTWATCH_REASON": text(body.get("reason")),
            "STTWATCH_BACKEND": text(body.get("backend")),
            "STTWATCH_MODEL": text(body.get("model")),
            "STTWATCH_DURATION": text(body.get("duration")),
            "STTWATCH_COST_USD": text(body.get("cost_usd"))}


class DeliveryFailed(Exception):
    """The command or the URL did not take the event; it is tried again later."""


class Deliverer:
    def __init__(self, store: Outbox, hooks: HooksConfig, owner: str,
                 clock: Callable[[], float], environ: Mapping[str, str] | None = None,
                 key_env: str | None = None, key: str | None = None) -> None:
        self.store = store
        self.hooks = hooks
        self.owner = owner
        self.clock = clock
        self._environ = hook_environ(os.environ if environ is None else environ, hooks,
                                     key_env, key)
        self._session: Any = None  # a requests.Session, made for the first post
        self.lease = lease_for(hooks)

    def run_once(self) -> float | None:
        """Deliver the oldest due event; None to go on at once, else seconds to wait."""
        event = self.store.claim_event(self.owner, self.clock(), self.lease)
        if event is None:
            return 1.0
        bound = log.bind(event_id=event.id, job_id=event.job_id,
                         path=event.body.get("source"))
        try:
            self.deliver(event)
        except DeliveryFailed as exc:
            delay = backoff(event.attempts + 1, 5.0, 600.0)
            self.store.event_retry(event.id, self.clock() + delay, str(exc), owner=self.owner)
            bound.warning("hook_failed", error=str(exc), attempt=event.attempts + 1,
                          retry_in=round(delay))
            return None
        if self.store.event_delivered(event.id, owner=self.owner):
            bound.info("hook_delivered", attempts=event.attempts + 1)
        else:  # held past its lease and taken over: the other deliverer marks it
            bound.warning("hook_lease_lost", attempts=event.attempts + 1)
        return None

    def deliver(self, event: OutboxEvent) -> None:
        if self.hooks.command:
            self._run(event)
        if self.hooks.url:
            self._post(event)

    def _run(self, event: OutboxEvent) -> None:
        assert self.hooks.command
        try:
            done = subprocess.run(list(self.hooks.command), env={**self._environ,
                                                                 **environment(event.body)},
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.hooks.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DeliveryFailed(f"hook command took over {self.hooks.timeout:g} s") from None
        except OSError as exc:
            raise DeliveryFailed(f"cannot run hook command {self.hooks.command[0]}: "
                                 f"{exc.strerror}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            raise DeliveryFailed(f"hook command exited {done.returncode}"
                                 + (f": {said[-OUTPUT_LIMIT:]}" if said else ""))

    def _post(self, event: OutboxEvent) -> None:
        assert self.hooks.url
        import requests  # only a daemon with hooks.url needs it (an import costs 0.1 s)

        if self._session is None:
            self._session = requests.Session()
        try:
            resp = self._session.post(self.hooks.url, json=dict(event.body),
                                      headers={"Idempotency-Key": event.id},
                                      timeout=(10.0, self.hooks.timeout))
        except requests.RequestException as exc:
            raise DeliveryFailed(f"hook url: {type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise DeliveryFailed(f"hook url answered HTTP {resp.status_code}")

    def loop(self, stop: threading.Event) -> None:
        """One delivery at a time; a store outage waits, like the stages' loops."""
        while not stop.is_set():
            try:
                delay = self.run_once()
            except StoreUnavailable:
                delay = 2.0
            if delay is not None:
                stop.wait(delay)

    def close(self) -> None:
        self._session.close()
