"""The stages on their own: a fake clock, a real SQLite store, backends that answer at once.

Each loop's ``run_once`` is driven over a simulated minute, the clock moved on by the sleep
it asks for (None: go on at once), counting turns and claims. A loop that spins asks for
no sleep and never gets through the minute; one that waits as it should takes about one turn
a second at most, whatever it waits on (a full backend, a pause, another host's work).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import KEY, wait_for, write_config

from sttwatch import config as configmod
from sttwatch.backends import Backend, Created, Request, Status, TaskState
from sttwatch.budget import Hold
from sttwatch.errors import AuthError, CreditsExhausted
from sttwatch.pipeline import Pipeline
from sttwatch.plan import Planner
from sttwatch.settings import PipelineSettings
from sttwatch.store import Admission, Job, Plan
from sttwatch.store.sqlite import SqliteStore
from sttwatch.throttle import Throttle
from sttwatch.wiring import build

ME = "host-a"
MINUTE = 60.0
# A loop that waits as it should turns at most about once a second over a minute (a full
# backend is looked at again every second); a spinning one would need thousands of turns.
TURNS = 200


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeBackend(Backend):
    """Answers at once; ``refuse`` makes every call a refusal; tasks never finish."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.created: list[int] = []
        self.fetched = 0
        self.refuse: AuthError | None = None

    @property
    def model_name(self) -> str:
        return "m"

    def create(self, request: Request) -> Created:
        if self.refuse is not None:
            raise self.refuse
        self.created.append(request.job_id)
        return Created(f"{self.name}-{request.job_id}")

    def fetch(self, generation_id: str) -> Status:
        self.fetched += 1
        if self.refuse is not None:
            raise self.refuse
        return Status(TaskState.RUNNING)


class FakeLocal(FakeBackend):
    """The local engine's shape: no API options, an English-only model."""

    takes_api_options = False

    @property
    def model_name(self) -> str:
        return "tiny.en"


class CountingStore(SqliteStore):
    claims = 0

    def claim_submit(self, owner: str, now: float, lease: float,
                     backends: Sequence[str]) -> Job | None:
        self.claims += 1
        return super().claim_submit(owner, now, lease, backends)

    def claim_poll(self, owner: str, now: float, lease: float, limit: int,
                   volatile: Any, backends: Sequence[str]) -> list[Job]:
        self.claims += 1
        return super().claim_poll(owner, now, lease, limit, volatile, backends)


class World:
    def __init__(self, tmp_path: Path, kinds: dict[str, FakeBackend],
                 limits: dict[str, int], default: str, **cfg: Any) -> None:
        self.inbox = tmp_path / "inbox"
        self.inbox.mkdir(exist_ok=True)
        self.cfg = configmod.load(write_config(tmp_path, **cfg))
        self.clock = Clock()
        self.store = CountingStore(tmp_path / "state" / "jobs.db")
        self.backends = kinds
        self.planner = Planner(self.cfg, kinds, default)
        settings = PipelineSettings(owner=ME, max_attempts=2, probe_interval=30.0)
        self.pipeline = Pipeline(self.store, kinds, settings, self.planner, self.cfg.output,
                                 limits, self.clock)
        self.n = 0

    def queue(self, plan_kind: str, n: int) -> list[Job]:
        plan = Plan(plan_kind, "m", {}, ("txt",), str(self.inbox))
        offers = []
        for _ in range(n):
            self.n += 1
            path = self.inbox / f"rec{self.n:03}.mp3"
            path.write_bytes(b"audio %d" % self.n)
            offers.append(Admission(str(path), path.stat().st_size, 1, plan,
                                    (f"{path.with_suffix('')}.{{format}}",)))
        return self.store.admit(offers, self.clock())

    def drive(self, step: Callable[[], float | None], seconds: float = MINUTE) -> int:
        """Turns of ``step`` until ``seconds`` of the fake clock have passed."""
        end, turns = self.clock.now + seconds, 0
        while self.clock.now < end and turns < 20 * TURNS:
            delay = step()
            turns += 1
            self.clock.now += 0.0 if delay is None else delay
        return turns

    def states(self) -> dict[str, int]:
        return {k: v for k, v in self.store.counts().items() if v}


@pytest.fixture
def two(tmp_path: Path) -> Iterator[World]:
    """The AI/ML API (at most 2 out) and the local engine, as with a local watch."""
    w = World(tmp_path, {"aimlapi": FakeBackend("aimlapi"),
                         "local": FakeLocal("local")},
              {"aimlapi": 2, "local": 2}, "aimlapi")
    yield w
    w.pipeline.close()
    w.store.close()


def test_the_submitter_sleeps_while_the_one_backend_with_work_is_full(two: World) -> None:
    two.queue("aimlapi", 6)
    turns = two.drive(two.pipeline.submitter.run_once)
    assert len(two.backends["aimlapi"].created) == 2  # the in-flight limit holds
    assert two.clock.now >= 1_000_000.0 + MINUTE and turns <= TURNS, turns
    assert two.store.claims <= TURNS
    assert two.states() == {"seen": 4, "pending": 2}


def test_nothing_queued_costs_one_turn_per_idle_wait(two: World) -> None:
    turns = two.drive(two.pipeline.submitter.run_once)
    assert turns <= MINUTE / 5.0 + 1


def test_a_paused_backend_waits_for_its_probe_and_the_other_runs(two: World) -> None:
    api = two.backends["aimlapi"]
    api.refuse = AuthError(401, "bad key")
    two.pipeline.throttles["aimlapi"].refuse(api.refuse)
    two.queue("aimlapi", 3)
    two.queue("local", 1)
    turns = two.drive(two.pipeline.submitter.run_once)
    assert two.backends["local"].created  # not held back by the other's pause
    assert turns <= TURNS, turns
    # One probe create every probe interval, no more.
    assert two.clock.now - 1_000_000.0 >= MINUTE


def test_the_poller_sleeps_through_an_auth_pause(two: World) -> None:
    two.queue("aimlapi", 2)
    for _ in range(2):
        two.pipeline.submitter.run_once()
    assert two.states() == {"pending": 2}
    api = two.backends["aimlapi"]
    api.refuse = AuthError(401, "bad key")
    two.pipeline.throttles["aimlapi"].refuse(api.refuse)
    two.store.claims = 0
    turns = two.drive(two.pipeline.poller.run_once)
    assert turns <= TURNS, turns  # was 50 a second: the paused jobs counted as due
    assert two.store.claims <= 2 * TURNS


def test_jobs_of_another_host_do_not_keep_the_poller_awake(two: World) -> None:
    two.queue("aimlapi", 2)
    other = two.store.claim_submit("host-b", two.clock(), 600.0, ["aimlapi"])
    assert other is not None
    assert two.store.set_pending(other, "gen-b", two.clock(), two.clock(), None)
    turns = two.drive(two.pipeline.poller.run_once)
    assert turns <= TURNS, turns


def test_jobs_for_a_backend_this_run_lacks_wait_without_spinning_then_are_planned_again(
        tmp_path: Path) -> None:
    w = World(tmp_path, {"aimlapi": FakeBackend("aimlapi")}, {"aimlapi": 2}, "aimlapi")
    try:
        w.queue("local", 3)
        turns = w.drive(w.pipeline.submitter.run_once)
        assert turns <= TURNS and w.states() == {"seen": 3}
        # A live peer that builds the local engine takes them: they stay as planned.
        assert w.pipeline.outcomes.replan_stranded({"local"}) == 0
        # No one builds it: today's plan for their folder.
        assert w.pipeline.outcomes.replan_stranded() == 3
        w.drive(w.pipeline.submitter.run_once, 5.0)
        assert len(w.backends["aimlapi"].created) == 2
        assert {j.backend for j in (w.store.get(str(w.inbox / f"rec{i:03}.mp3"))
                                    for i in (1, 2, 3)) if j is not None} == {"aimlapi"}
    finally:
        w.pipeline.close()
        w.store.close()


class Diverting:
    """The budget's answer while the account is empty: every job to the local engine."""

    def __init__(self, local: Plan) -> None:
        self.local = local

    def diverts(self, refused: AuthError | None) -> bool:
        return isinstance(refused, CreditsExhausted)

    def decide(self, job: Job, plan: Plan, path: Path,
               refused: AuthError | None, look: object = None) -> Hold | None:
        return None if refused is None else Hold("out of credits", 0.0, self.local)

    def fallback(self, plan: Plan) -> Plan:
        return self.local


def test_out_of_credits_sends_every_queued_job_local_at_once_and_keeps_the_probe(
        two: World) -> None:
    local = Plan("local", "tiny.en", {}, ("txt",), str(two.inbox))
    two.pipeline.submitter.budget = Diverting(local)  # type: ignore[assignment]
    throttle = two.pipeline.throttles["aimlapi"]
    two.backends["aimlapi"].refuse = CreditsExhausted(403, "no credits")
    throttle.refuse(two.backends["aimlapi"].refuse)
    probe_at = throttle.opens_at(two.clock())
    two.queue("aimlapi", 4)
    two.drive(two.pipeline.submitter.run_once, 5.0)  # far less than one probe interval
    assert len(two.backends["local"].created) == 2 and two.states() == {"seen": 2,
                                                                       "pending": 2}
    assert {j.backend for j in (two.store.get(str(two.inbox / f"rec{i:03}.mp3"))
                                for i in range(1, 5)) if j is not None} == {"local"}
    assert throttle.opens_at(two.clock()) == probe_at  # the probe slot is still the service's
    assert two.backends["aimlapi"].created == []


def test_a_result_reaches_the_finisher_through_the_store(two: World) -> None:
    two.queue("aimlapi", 1)
    two.pipeline.submitter.run_once()
    two.clock.now += 30.0
    (claimed,) = two.store.claim_poll(ME, two.clock(), 60.0, 1, [], ["aimlapi"])
    result = {"results": {"channels": [{"alternatives": [{"transcript": "hello"}]}]}}
    assert two.store.set_fetched(claimed, result, two.clock(), 1.0) is not None
    assert two.pipeline.finisher.run_once() > 0
    assert two.states() == {"done": 1}
    assert (two.inbox / "rec001.txt").read_text().strip().endswith("hello")
    assert two.pipeline.outcomes.ended == 1


def test_retry_or_fail_counts_attempts_and_fails_with_the_reason(two: World) -> None:
    two.queue("aimlapi", 1)
    out = two.pipeline.outcomes
    for _ in range(2):
        job = two.store.claim_submit(ME, two.clock(), 60.0, ["aimlapi"])
        assert job is not None
        out.retry_or_fail(job, "no answer")
    assert two.states() == {"failed": 1}
    (failed,) = two.store.failed()
    assert failed.error == "no answer (after 2 attempts)"
    assert out.failed_this_run == 1


def test_a_language_the_english_only_model_cannot_do_fails_with_the_reason(
        tmp_path: Path) -> None:
    w = World(tmp_path, {"local": FakeLocal("local")}, {"local": 2}, "local",
              backend="local", watch=[{"path": "./inbox", "options": {"language": "fr"}}])
    try:
        ((folder, reason),) = w.planner.conflicts()
        assert folder == str(w.inbox) and "'fr'" in reason and "tiny.en" in reason
        plan = w.planner.plan_for(w.inbox / "a.mp3")
        path = w.inbox / "a.mp3"
        path.write_bytes(b"audio")
        w.store.admit([Admission(str(path), 5, 1, plan, (f"{w.inbox}/a.{{format}}",))],
                      w.clock())
        w.drive(w.pipeline.submitter.run_once, 1.0)
        (failed,) = w.store.failed()
        assert "only knows English" in (failed.error or "")
        assert w.backends["local"].created == []
    finally:
        w.pipeline.close()
        w.store.close()


def test_a_fetch_does_not_end_an_out_of_credits_pause_but_a_create_does() -> None:
    clock = Clock()
    throttle = Throttle("aimlapi", 2, clock, 30.0)
    throttle.refuse(CreditsExhausted(403, "no credits"))
    clock.now += 1.0
    throttle.accepted(sent_at=clock.now, create=False)  # the account still answers GETs
    assert throttle.paused
    throttle.accepted(sent_at=clock.now)  # a create went through: it can pay again
    assert not throttle.paused
    throttle.refuse(AuthError(401, "bad key"))
    clock.now += 1.0
    throttle.accepted(sent_at=clock.now, create=False)  # a fetch answered: the key works
    assert not throttle.paused


def test_leases_are_renewed_while_the_main_loop_is_busy(tmp_path: Path) -> None:
    """The keeper thread renews this daemon's leases and writes its heartbeat whatever the
    main loop does (here: nothing at all, as in a scan of a large share)."""
    cfg = configmod.load(write_config(tmp_path, daemon={"lease_seconds": 5}))
    daemon = build(cfg, key=KEY, environ={})
    store = daemon.store
    try:
        path = tmp_path / "inbox" / "held.mp3"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"audio")
        plan = Plan("aimlapi", "m", {}, ("txt",), str(path.parent))
        store.admit([Admission(str(path), 5, 1, plan, (f"{path.with_suffix('')}.{{format}}",))],
                    time.time())
        job = store.claim_submit(daemon.owner, time.time(), 5.0, ["aimlapi"])
        assert job is not None
        daemon._start_keeper()
        wait_for(lambda: (store.get(str(path)) or job).lease_until > job.lease_until + 2.0,
                 timeout=20)
        assert [d.host_id for d in store.daemons()] == [daemon.owner]
    finally:
        daemon._keeper_stop.set()
        if daemon._keeper is not None:
            daemon._keeper.join(10)
        daemon.pipeline.close()
        store.close()
