"""Spend caps: before each paid create, will it pass a cap? After it, what did it cost?

The submitter asks ``Budget.decide`` before ``backend.create`` and tells ``Budget.charged``
after it. The estimate is the file's duration (its container read by PyAV, which the
``[local]`` extra brings; else a WAV header; else the size at 128 kbit/s) times
``api.price_per_minute``; the charge is what the service says it cost (``x-aimlapi-usd-spent``,
or ``x-aimlapi-credits-used`` over ``api.credits_per_usd``), the estimate when it says nothing.
Charges go to the store's per-day ledger, which ``forget`` never touches. Days and months are
UTC. A create that would pass a cap is held: it waits for the cap's reset (``pause``) or is
handed to the local engine (``local``), which also takes over while the account is out of
credits.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from .config import ApiConfig, BudgetConfig
from .errors import AuthError, CreditsExhausted
from .store import Job, Plan, Spend, SpendLedger, durably

log = structlog.get_logger("sttwatch.budget")

SIZE_BYTES_PER_SECOND = 16_000  # 128 kbit/s: a common voice-recorder MP3/M4A rate
USD_HEADER = "x-aimlapi-usd-spent"
CREDITS_HEADER = "x-aimlapi-credits-used"


def _container_seconds(path: Path) -> float | None:
    try:
        import av
    except ImportError:  # the daemon runs without the [local] extra
        return None
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if c.duration is not None and c.duration > 0:
                return float(c.duration) / 1_000_000  # in av.time_base units
            for s in c.streams.audio:
                if s.duration is not None and s.time_base is not None:
                    return float(s.duration * s.time_base)
    except Exception:  # any container PyAV cannot read: the next way is tried
        return None
    return None


def audio_seconds(path: Path) -> tuple[float, str]:
    """The file's duration and how it was found: ``container`` (PyAV), ``wav`` or ``size``."""
    seconds = _container_seconds(path)
    if seconds is not None:
        return seconds, "container"
    try:
        with wave.open(str(path), "rb") as w:
            if w.getframerate() > 0:
                return w.getnframes() / w.getframerate(), "wav"
    except (wave.Error, EOFError, OSError):
        pass
    return path.stat().st_size / SIZE_BYTES_PER_SECOND, "size"


def cost_usd(cost: Mapping[str, str] | None, credits_per_usd: float) -> float | None:
    """What the service's cost headers say a request cost, in USD."""
    if not cost:
        return None
    for name, scale in ((USD_HEADER, 1.0), (CREDITS_HEADER, 1.0 / credits_per_usd)):
        try:
            return float(cost[name]) * scale
        except (KeyError, ValueError):
            continue
    return None


def utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def resets(now: float) -> tuple[float, float]:
    """When today and this month end (UTC)."""
    t = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    day = dt.datetime(t.year, t.month, t.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    month = dt.datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return day.timestamp(), month.timestamp()


@dataclass(frozen=True)
class Spent:
    usd_today: float
    usd_month: float
    audio_hours_today: float
    creates_today: int

    @classmethod
    def read(cls, store: SpendLedger, now: float) -> Spent:
        today = utc_day(now)
        rows = store.spend_by_day(today[:8] + "01")
        usd, secs, n = rows.get(today, (0.0, 0.0, 0))
        return cls(usd, sum(r[0] for r in rows.values()), secs / 3600.0, n)


@dataclass(frozen=True)
class Cap:
    name: str  # the config key: usd_per_day, usd_per_month, audio_hours_per_day
    limit: float
    spent: float
    resets_at: float

    def passed_by(self, more: float) -> bool:
        return self.spent + more > self.limit

    def describe(self) -> str:
        return (f"budget {self.name} {self.limit:g} reached ({self.spent:.4g} spent); "
                f"resets {iso(self.resets_at)}")

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "spent": round(self.spent, 6),
                "resets_at": iso(self.resets_at), "reached": self.spent >= self.limit}


def caps(cfg: BudgetConfig, spent: Spent, now: float) -> list[Cap]:
    day, month = resets(now)
    out = []
    for name, limit, used, at in (("usd_per_day", cfg.usd_per_day, spent.usd_today, day),
                                  ("usd_per_month", cfg.usd_per_month, spent.usd_month, month),
                                  ("audio_hours_per_day", cfg.audio_hours_per_day,
                                   spent.audio_hours_today, day)):
        if limit is not None:
            out.append(Cap(name, limit, used, at))
    return out


def report(cfg: BudgetConfig, store: SpendLedger, now: float) -> dict[str, Any]:
    """``status --json``'s ``budget`` object (and what the metrics show as spend)."""
    spent = Spent.read(store, now)
    return {"on_exhausted": cfg.on_exhausted,
            "caps": {c.name: c.to_json() for c in caps(cfg, spent, now)},
            "spent": {"usd_today": round(spent.usd_today, 6),
                      "usd_month": round(spent.usd_month, 6),
                      "audio_hours_today": round(spent.audio_hours_today, 6),
                      "creates_today": spent.creates_today}}


@dataclass(frozen=True)
class Estimate:
    seconds: float
    usd: float
    how: str  # container | wav | size


@dataclass(frozen=True)
class Go:
    estimate: Estimate
    booked_on: str | None = None  # the UTC day the estimate was charged to before the create


@dataclass(frozen=True)
class Hold:
    """Not sent: wait until ``until`` with the job's plan, or go again at once with ``plan``."""

    reason: str
    until: float
    plan: Plan | None = None


class Meter(Protocol):
    """What the metrics want to know of each create (sttwatch/metrics.py)."""

    def submitted(self, size: int, audio_seconds: float, pickup_seconds: float | None) -> None:
        ...


class Budget:
    def __init__(self, cfg: BudgetConfig, api: ApiConfig, store: SpendLedger,
                 clock: Callable[[], float], paid: frozenset[str],
                 local: Callable[[Plan], Plan] | None = None, meter: Meter | None = None) -> None:
        self.cfg = cfg
        self.api = api
        self.store = store
        self.clock = clock
        self.paid = paid
        self._local = local if cfg.on_exhausted == "local" else None
        self.meter = meter
        self._said: set[tuple[str, float]] = set()
        self._lock = threading.Lock()
        self.held: str | None = None  # the last cap that held a create (transcribe says so)
        # Bound once: the module's lazy logger binds anew at every call, and ``charged``
        # logs (at debug) once a create, where that was a tenth of the submitter's time
        # outside the request itself.
        self._log = log.bind()

    @property
    def capped(self) -> bool:
        return any(v is not None for v in (self.cfg.usd_per_day, self.cfg.usd_per_month,
                                           self.cfg.audio_hours_per_day))

    def estimate(self, path: Path) -> Estimate:
        seconds, how = audio_seconds(path)
        return Estimate(seconds, seconds / 60.0 * self.api.price_per_minute, how)

    def diverts(self, refused: AuthError | None) -> bool:
        """While the account is out of credits, ``on_exhausted: local`` keeps jobs moving."""
        return self._local is not None and isinstance(refused, CreditsExhausted)

    def fallback(self, plan: Plan) -> Plan | None:
        return self._local(plan) if self._local is not None and plan.backend in self.paid \
            else None

    def decide(self, job: Job, plan: Plan, path: Path | None,
               refused: AuthError | None,
               look: Callable[[Callable[[], Estimate]], Estimate] = lambda f: f()) -> Go | Hold:
        """Before the create of ``job`` (whose file exists; ``path`` None for a URL, whose
        length is not known): send it, or hold it and why. Under a cap the estimate is
        charged here, in the one transaction that checks the cap (``Store.charge_within``),
        so daemons on one store stop at the cap together."""
        # Reading the duration costs a container probe: only for a cap or the metrics. It runs
        # through ``look``: the daemon's puts it on the file's mount worker, with the deadline.
        est = Estimate(0.0, 0.0, "not known (a URL)") if path is None else \
            look(lambda: self.estimate(path)) if self.capped or self.meter is not None else \
            Estimate(0.0, 0.0, "not read (no cap, no metrics)")
        if plan.backend not in self.paid:
            return Go(est)
        now = self.clock()
        if self.diverts(refused):
            assert self._local is not None
            return Hold("out of credits", now, self._local(plan))
        if not self.capped:
            return Go(est)
        day = utc_day(now)
        c = self.cfg
        passed = durably(lambda: self.store.charge_within(
            day, day[:8] + "01", est.usd, est.seconds, now, usd_per_day=c.usd_per_day,
            usd_per_month=c.usd_per_month, audio_seconds_per_day=None
            if c.audio_hours_per_day is None else c.audio_hours_per_day * 3600.0))
        if passed is None:
            return Go(est, booked_on=day)
        for cap in caps(c, Spent.read(self.store, now), now):
            if cap.name == passed:
                self._say(cap, job)
                self.held = cap.describe()
                return Hold(cap.describe(), cap.resets_at, self.fallback(plan))
        raise AssertionError(f"unknown cap {passed}")

    def release(self, go: Go) -> None:
        """The create was refused before any task was made: give back what was booked."""
        if go.booked_on is not None:
            est = go.estimate
            durably(lambda: self.store.adjust_spend(go.booked_on or "", -est.usd,
                                                    -est.seconds, -1, self.clock()))

    def _say(self, cap: Cap, job: Job) -> None:
        """Once per cap and period, not once per held job."""
        with self._lock:
            first = (cap.name, cap.resets_at) not in self._said
            self._said.add((cap.name, cap.resets_at))
        if first:
            log.warning("budget_exhausted", cap=cap.name, limit=cap.limit,
                        spent=round(cap.spent, 6), resets_at=iso(cap.resets_at),
                        job_id=job.id, path=job.path,
                        action="to the local engine" if self._local is not None else
                        "paused; jobs stay queued until the reset")

    def books_into(self, store: object) -> bool:
        """Whether the ledger is ``store`` (the daemon's), so a booking can share a job's
        transaction; ``transcribe`` runs its jobs in a store of its own."""
        return self.store is store

    def spend_of(self, plan: Plan, est: Estimate, cost: Mapping[str, str] | None,
                 booked_on: str | None = None) -> Spend | None:
        """What an accepted create books (the service's word over our estimate; for an
        estimate booked before the create, on ``booked_on``, only the difference); None:
        nothing. The submitter hands it to ``set_pending``, one transaction for both."""
        if plan.backend not in self.paid:
            return None
        said = cost_usd(cost, self.api.credits_per_usd)
        usd = est.usd if said is None else said
        if booked_on is not None:
            return Spend(booked_on, usd - est.usd, 0.0, 0) if usd != est.usd else None
        if not usd and not est.seconds:
            return None
        return Spend(utc_day(self.clock()), usd, est.seconds, 1)

    def charged(self, job: Job, plan: Plan, est: Estimate,
                cost: Mapping[str, str] | None, booked_on: str | None = None, *,
                booked: Spend | None = None) -> float:
        """A create was accepted: count it, and book what it cost unless ``booked`` says
        it is booked already (with the job's ``set_pending``)."""
        now = self.clock()
        if self.meter is not None:
            pickup = now - job.created_at if job.attempts <= 1 else None
            self.meter.submitted(job.size, est.seconds, pickup)
        if plan.backend not in self.paid:
            return 0.0
        spend = booked or self.spend_of(plan, est, cost, booked_on)
        if spend is None:
            return 0.0 if booked_on is None else est.usd  # nothing to book: no transaction
        usd = spend.usd + (est.usd if booked_on is not None else 0.0)
        if booked is None:
            durably(lambda: self.store.adjust_spend(spend.day, spend.usd, spend.audio_seconds,
                                                    spend.creates, now))
        self._log.debug("charged", job_id=job.id, usd=usd, estimated_usd=round(est.usd, 6),
                        audio_seconds=round(est.seconds, 2), duration_from=est.how)
        return usd


def local_plan(model: str, language: str | None,
               engine: Mapping[str, Any] | None = None) -> Callable[[Plan], Plan]:
    """The plan a paid job gets when the budget sends it to the local engine: its formats and
    folder stay, the service's options are dropped (a language asked for is kept)."""
    def switch(plan: Plan) -> Plan:
        lang = plan.options.get("language") or language
        return Plan("local", model, {"language": lang} if lang else {}, plan.formats,
                    plan.root, dict(engine or {}))
    return switch
